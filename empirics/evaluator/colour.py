"""Colour families (Fig. 2 step 1, App. C HSV boxes): tolerances, soft membership, background whitening, an
element's ink colour and level, and the chroma restoration of the relaxed pass."""

from __future__ import annotations

import cv2
import numpy as np
from scipy.special import expit

from empirics.data.tasks import DARK, HSVRange
from empirics.evaluator.morphology import dilate, erode, masked_median

# (tolerance, ramp width) per HSV channel, OpenCV units: the box is widened by the tolerance and the
# membership is 0.5 at its widened edge. The dark family's saturation ceiling gets its own tolerance
# ("sat_dark"). The relaxed set is a second pass for images with a missing element: blur and JPEG
# chroma subsampling can halve the saturation of a 2 px wide element while keeping its hue.
FAMILY_TOLERANCE = {"hue": (8.0, 2.0), "sat": (30.0, 6.0), "val": (30.0, 6.0), "sat_dark": (20.0, 6.0)}
RELAXED_TOLERANCE = {"hue": (10.0, 2.0), "sat": (65.0, 5.0), "val": (60.0, 6.0), "sat_dark": (5.0, 5.0)}

# Task A shape fallback (``task_a_by_shape``): the parts' colours are only checked loosely, since
# JPEG at 32 px spreads chroma over 16 px blocks and a 2 px pole keeps little more than its hue.
SHAPE_TOLERANCE = {"hue": (12.0, 2.0), "sat": (80.0, 5.0), "val": (60.0, 6.0), "sat_dark": (205.0, 5.0)}
BACKGROUND_MIN = 0.6         # a background (median colour) darker than this in any channel is not paper
BACKGROUND_WHITE = 0.96      # a background at least this bright in every channel counts as white as it is
PURE_INK_ANGLE = 0.02      # thin elements: a pixel next to another element whose ink is this close to the
                            # element's own colour direction (sin of the angle) holds no other ink
PURE_FRACTION = 0.97        # thin elements: luma level = median of pixels with >= 97 % of the peak luma ink
RESTORE_WINDOW = 3          # window of the chroma restoration in the relaxed second pass
EXACT_MIX = 1e-5            # mean squared off-span ink (per pixel) of a mix of the element colours and white
LUMA = np.array([0.299, 0.587, 0.114], np.float32)
THIN_COVERAGES = np.linspace(0.1, 1.0, 19)


def membership(h, s, v, family: HSVRange, tol: dict) -> np.ndarray:
    """Soft membership in an App. C HSV box (OpenCV units), 0.5 on the box widened by ``tol``."""
    tol_h, tau_h = tol["hue"]
    tol_s, tau_s = tol["sat"]
    tol_v, tau_v = tol["val"]
    s_lo, s_hi = family.sat
    v_lo, v_hi = family.val
    tol_s_hi, tau_s_hi = tol["sat_dark"] if family is DARK else (tol_s, tau_s)
    if family is DARK:
        # App. C's dark tones include black. Below the box's value floor HSV saturation is meaningless (a
        # near-black pixel with a faint tint reads S = 255), so there the pixel is dark whatever its
        # saturation: a colour that dark is black (App. C's poles and suns have V >= 100).
        below = v < v_lo
        s = np.where(below, np.minimum(s, s_hi), s)
        v = np.where(below, v_lo, v)
    m = expit(np.minimum((s - (s_lo - tol_s)) / tau_s, ((s_hi + tol_s_hi) - s) / tau_s_hi))
    m *= expit(np.minimum(v - (v_lo - tol_v), (v_hi + tol_v) - v) / tau_v)
    h_lo, h_hi = family.hue
    if h_hi - h_lo < 170:
        centre, half = (h_lo + h_hi) / 2, (h_hi - h_lo) / 2
        dist = np.abs(np.mod(h - centre + 90.0, 180.0) - 90.0)
        m *= expit((half + tol_h - dist) / tau_h)
    return m


def span_residual(ink: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Squared distance of each pixel's ink from the span of the element inks ``colours`` (n, 3, K)."""
    n = ink.shape[0]
    D = np.where(np.isfinite(colours), colours, 1.0)
    Q = np.linalg.qr(D)[0].astype(np.float32)                                        # (n, 3, K)
    flat = ink.reshape(n, -1, 3)
    along = np.matmul(flat, Q)                                                        # (n, P, K)
    rest = (flat * flat).sum(-1) - (along * along).sum(-1)
    return np.maximum(rest, 0).reshape(ink.shape[:3])


def restore_chroma(ink: np.ndarray, window: int) -> np.ndarray:
    """Colours with each pixel's ink magnitude but the ink *direction* summed over a window.

    Blur and JPEG chroma subsampling spread a thin element's chroma over its neighbours while its
    luma stays put, so its pixels look grey; the window sum of the ink (zero on white) keeps the
    element's true direction, because those filters preserve sums.
    """
    n, S, _, _ = ink.shape
    pad = window // 2 + 1
    stacked = np.zeros((n, S + pad, S, 3), np.float32)
    stacked[:, :S] = ink
    summed = cv2.boxFilter(stacked.reshape(n * (S + pad), S, 3), -1, (window, window), normalize=False,
                           borderType=cv2.BORDER_CONSTANT).reshape(n, S + pad, S, 3)[:, :S]
    norm = np.linalg.norm(summed, axis=-1, keepdims=True)
    direction = np.where(norm > 1e-6, summed / np.maximum(norm, 1e-6), 0.0)
    return np.clip(1.0 - np.linalg.norm(ink, axis=-1, keepdims=True) * direction, 0.0, 1.0).astype(np.float32)


def element_colour(ink: np.ndarray, hard: np.ndarray, near_others: np.ndarray, radius: int,
                    both: bool = False):
    """Ink vector (white - colour, 0..1 per channel) of one element per image, (n, 3); NaN if absent.

    Direction: the ink summed over the element's neighbourhood (minus the surroundings of other
    elements); blur and JPEG chroma subsampling move chroma to neighbouring pixels but keep such
    sums, so the direction stays exact where a single pixel's colour would be washed out.
    Magnitude: the median luma ink of the element's interior pixels (all 8 neighbours in its mask,
    so fully covered), or for elements too thin for an interior of its pixels with >= 97 % of its
    peak luma ink (luma is kept at full resolution by JPEG). Pixels next to another element are left
    out (a pixel mixing two elements can hold more ink). With ``both``, also returns the colour
    whose magnitude is the same statistic of the ink projected on the direction (all channels: the
    better estimate for an undistorted image, e.g. a pale yellow has little luma ink).
    """
    own = dilate(hard, radius) & ~near_others
    total = np.einsum("nyx,nyxc->nc", own.astype(np.float32), ink, dtype=np.float64)
    norm = np.linalg.norm(total, axis=1, keepdims=True)
    direction = total / np.maximum(norm, 1e-12)
    cand = hard & ~near_others
    cand = np.where(cand.any((1, 2))[:, None, None], cand, hard)
    luma = ink @ LUMA
    interior = cand & erode(hard)
    has = interior.any((1, 2))
    # A thin element's fully covered pixels may all touch another element (a short shadow strip
    # under a pole's foot): those whose ink has the element's own colour (no second ink in them)
    # may give its level too.
    along = np.einsum("nyxc,nc->nyx", ink, direction.astype(np.float32))
    off = np.linalg.norm(ink - along[..., None] * direction[:, None, None, :].astype(np.float32), axis=-1)
    pure = hard & near_others & (off <= PURE_INK_ANGLE * np.maximum(along, 1e-6))
    thin_cand = cand | (pure & ~has[:, None, None])

    def level_of(values):
        level = np.zeros(len(values))
        if has.any():
            level[has] = masked_median(values[has], interior[has], level[has])
        thin = ~has
        if thin.any():
            v, c = values[thin], thin_cand[thin]
            peak = np.where(c, v, 0).max((1, 2))
            level[thin] = masked_median(v, c & (v >= PURE_FRACTION * peak[:, None, None]), peak)
        return level

    absent = ~(hard.any((1, 2)) & (norm[:, 0] > 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        colour = direction * (level_of(luma) / (direction @ LUMA.astype(np.float64)))[:, None]
    colour[absent] = np.nan
    if not both:
        return colour
    projected = np.einsum("nyxc,nc->nyx", ink, direction.astype(np.float32))
    full = direction * level_of(projected)[:, None]
    full[absent] = np.nan
    return colour, full


def colour_fits(ink: np.ndarray, family: HSVRange, thin: bool, tol: dict | None = None) -> bool:
    """Whether an element's ink vector (white - colour) is a colour of ``family`` (``tol``, by default
    ``SHAPE_TOLERANCE``).

    A thin element (no pixel of it is covered whole) shows its colour mixed with white at an
    unknown coverage a <= 1, i.e. ink / a for the true ink: it fits if some a in (max ink, 1] puts
    the colour in the family.
    """
    scales = THIN_COVERAGES[THIN_COVERAGES >= ink.max()] if thin else np.ones(1)
    if scales.size == 0:
        scales = np.ones(1)
    c = np.clip(1.0 - ink[None, :] / scales[:, None], 0.0, 1.0).astype(np.float32)[:, None, :]
    hsv = cv2.cvtColor(c, cv2.COLOR_RGB2HSV)[:, 0]
    return bool((membership(hsv[:, 0] * 0.5, hsv[:, 1] * 255, hsv[:, 2] * 255, family,
                             SHAPE_TOLERANCE if tol is None else tol)
                 >= 0.5).any())


def whiten_background(rgb: np.ndarray) -> np.ndarray:
    """Divide each image by its background colour, so that off-white paper reads as white.

    The background is the per-channel median of the image's pixels (the elements of every task
    cover well under half of the image). Generated samples often have a grey or tinted background
    (e.g. RGB 225 instead of 255); the evaluator's ink (white - colour) and its colour families assume
    white paper. A background within ``BACKGROUND_WHITE`` of white in every channel is left untouched
    (rendered images, and JPEG-compressed ones, are unchanged), and a median darker than
    ``BACKGROUND_MIN`` is not paper and is left too (the image will be Invalid).
    """
    n = rgb.shape[0]
    with np.errstate(invalid="ignore"):
        bg = np.median(rgb.reshape(n, -1, 3), axis=1)
    fix = np.all(bg >= BACKGROUND_MIN, axis=1) & np.any(bg < BACKGROUND_WHITE, axis=1)
    if fix.any():
        rgb = rgb.copy()
        rgb[fix] = np.minimum(rgb[fix] / bg[fix][:, None, None, :].astype(rgb.dtype), 1.0)
    return rgb


def strongest_colour(values: np.ndarray, mask: np.ndarray, strength: np.ndarray, share: float) -> np.ndarray:
    """An element's colour per image, (n, 3): the median of ``values`` (n, S, S, 3) over its pixels (``mask``,
    (n, S, S)) whose ``strength`` (ink, or distance from the background) is at least ``share`` x the
    strongest of them; NaN where the mask is empty or holds no ink.

    The one reading of an element's colour behind App. D.2's colour vector (``memorization.element_colours``),
    the colour marginals (``marginals.element_hsv``) and the style controls (``controls.measure_style``);
    each of them chooses its own mask and strength (see their docstrings for why they differ).
    """
    n = len(values)
    strongest = np.where(mask, strength, 0.0).reshape(n, -1).max(1)
    out = np.full((n, 3), np.nan)
    for i in np.flatnonzero(strongest > 0):
        out[i] = np.median(values[i][mask[i] & (strength[i] >= share * strongest[i])], axis=0)
    return out

