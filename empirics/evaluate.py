"""Rule evaluator: the feature-extraction pipeline of Fig. 2 (Section 3.2), made sub-pixel and robust.

``evaluate(images, task) -> Evaluation`` measures every image at its own resolution:

1. Colour-family masks (Fig. 2 step 1). Each pixel gets a soft membership in each of the task's
   App. C HSV families (OpenCV units): a product of logistic ramps on hue (circular), saturation and
   value, with the boxes widened by tolerances (``FAMILY_TOLERANCE``) to absorb the small colour
   shifts of generated samples. Pixels whose best membership is >= 0.5 are labelled.
2. Element count (step 2): 8-connected components per family, specks below ``2 (S/32)^2`` pixels
   ignored (as a last resort, after the retries below, a missing element takes a speck that touches
   another element of its group: a shadow showing one pixel beside its pole's foot); a component
   that is only the anti-aliased rim of another element (its colour is that element's colour mixed
   with white and it touches it, e.g. the edge of a dark pole read as "shadow") is merged into it.
   Any other count than one per element makes the image Invalid with a reason ("missing sun",
   "2 poles", ...); so do a blank image, non-finite pixels, an unexpected coloured object, an
   element cut by the border whose extent is needed, or impossible geometry.
3. Keypoints and features (step 3), sub-pixel. Each element's ink (white - colour) has the
   direction of the ink summed over its neighbourhood (blur and JPEG chroma subsampling move chroma
   to neighbouring pixels but keep such sums) and the level of its interior (fully covered) pixels.
   Its coverage (0..1 per pixel, soft) is, where the pixels are exact mixes of the element colours
   and white (rendered or only blurred images), the least-squares unmixing of the pixel's ink into
   the colours of its group (touching elements jointly); otherwise (JPEG, colour noise) the pixel's
   luma ink over the element's luma level (JPEG keeps luma at full resolution), shared between
   touching elements by their colours (or by the nearest colour mask when the two inks are nearly
   parallel). Coverage is linear in the pixel values, so areas, centroids and row/column sums are
   unchanged by blur, and scale errors cancel in ratios. Rectangles: the extent across the long
   axis is the plateau of the coverage profile along it, the other extent is area / that (a Task B
   bar thinner than ``THIN_BAR``: from the shape of its blurred profile, ``empirics.box_profile``; an
   unblurred one over two partial rows, whose thickness is not in its pixels, is Invalid); circles:
   centre = centroid, radius = sqrt(area / pi) (Task C, blurred edges: with the level refined by a
   fit of amp * Phi((r - rho) / s)); a circle cut by the image border (a far sun) is fitted from its
   visible part (Levenberg-Marquardt on centre, radius and edge width), so it is measured
   correctly. Features are divided by the image size (Section 3.2).

Generated samples are blurrier than the training images: images that fail for a reason a washed-out
colour can cause (a missing element, an extra component, an unrecognised colour) are measured again
with wider tolerances on colours whose direction is summed over a 3 x 3 window
(``RELAXED_TOLERANCE``), and, for Task A, by shape (``_task_a_by_shape``: the pole is what rises
above the shadow band; each part's colour, from ink sums over the part, must still be in its family).
Geometric verdicts (an element cut by the border, a sun below the pole top) are not retried.

Differences from the paper: Fig. 2 thresholds hard HSV masks and reads keypoints from contours at
integer pixels; App. D.2 upsamples 32 px images to 128 px for that reason. We measure at native
resolution with the sub-pixel estimators above instead, which is more accurate (median feature error
< 0.01 px on rendered images, benchmarks/evaluator.py) and does not depend on an interpolation.

Features are geometric statements, measured from each object's own pixels, so that they mean the
same whichever program drew the image (lengths divided by the image size):

* A: l1 = horizontal distance from the sun's centre to the pole's axis; h1 = height of the sun's
  centre above the pole's top; h2 = height of the pole above the point where it meets the ground
  (its foot, read on the pole's half on the sun's side, which no shadow strip covers, whether the
  strip lies beside the pole on the ground, under the ground line or across it, over or under the
  pole); l2 = horizontal distance from the pole's axis to the shadow's far end.
* B: l = distance of a rectangle's left edge from the image's left edge, h = its height; left and
  right are the rectangles with the smaller and the larger centre x.
* C: r_small / r_large = radius of the yellowish / blue-green circle (colour, not size, names them);
  a circle cut by the border is fitted to its visible arc.
* D: side_top / side_bottom = side of the square with the smaller / larger centre y; a square that
  reaches the border is measured by its extent along the border (uncut), and only one cut at a
  corner, whose size is lost, is Invalid.
"""

from __future__ import annotations

import enum
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields

import cv2
import numpy as np
from scipy.special import expit, ndtr

from empirics._checks import check_int
from empirics.box_profile import fit_boxes, kernel_width, thin_extent
from empirics.metrics import coarse_rule, feature_errors, fine_ratio, summarize
from empirics.tasks import BLUE_GREEN, DARK, SPECS, YELLOWISH, HSVRange, Shape, Task, TaskSpec, fine_xy

__all__ = ["Evaluation", "evaluate", "FAMILY_TOLERANCE", "as_float_rgb", "Problem", "Reason", "Form", "EXPECTED_FORM",
           "ShapeStats", "shape_statistics"]


class Problem(enum.Enum):
    """Why an image is Invalid: the message template and whether the relaxed second pass may resolve it.

    Retryable problems are those a colour washed out by blur or compression can cause; the others
    (an element cut by the border, a sun below the pole top, a blank image) are measurements and stand.
    """

    BLANK = ("blank image (no elements)", False)
    NON_FINITE = ("non-finite pixel values", False)
    MISSING = ("missing {element}", True)
    TOO_MANY = ("{count} {element}", True)
    FIT_FAILED = ("{element} fit failed", True)
    CUT_BY_BORDER = ("{element} cut by the image border", False)
    UNEXPECTED_COLOUR = ("unexpected colour (unrecognised object)", True)
    POLE_NOT_ABOVE_SHADOW = ("pole not above the shadow", True)
    SHADOW_NOT_A_STRIP = ("shadow is not a strip on the ground", True)
    SHADOW_NOT_AT_FOOT = ("shadow not at the foot of the pole", True)
    DEGENERATE = ("degenerate measurement", True)
    SUN_NOT_ABOVE_POLE = ("sun not above the pole top", False)
    NOT_ONE_OBJECT = ("pole and shadow not one object", True)
    COLOUR_OUT_OF_RANGE = ("{element} colour outside the {family} range", True)
    TOO_THIN = ("{element} too thin to measure (its thickness is not in its pixels)", False)
    WRONG_SHAPE = ("{element}: {found} where a {expected} is expected", False)

    def __init__(self, template: str, retryable: bool):
        self.template = template
        self.retryable = retryable


@dataclass(frozen=True)
class Reason:
    """One Invalid reason of one image: a ``Problem`` and the element (and count) it is about; for
    ``Problem.WRONG_SHAPE`` also the shape ``found`` and the one ``expected`` (``Form`` values)."""

    problem: Problem
    element: str = ""
    count: int = 0
    family: str = ""
    found: str = ""
    expected: str = ""

    @property
    def message(self) -> str:
        return self.problem.template.format(element=self.element, count=self.count, family=self.family,
                                            found=self.found, expected=self.expected)

    @property
    def retryable(self) -> bool:
        return self.problem.retryable


# (tolerance, ramp width) per HSV channel, OpenCV units: the box is widened by the tolerance and the
# membership is 0.5 at its widened edge. The dark family's saturation ceiling gets its own tolerance
# ("sat_dark"). The relaxed set is a second pass for images with a missing element: blur and JPEG
# chroma subsampling can halve the saturation of a 2 px wide element while keeping its hue.
FAMILY_TOLERANCE = {"hue": (8.0, 2.0), "sat": (30.0, 6.0), "val": (30.0, 6.0), "sat_dark": (20.0, 6.0)}
RELAXED_TOLERANCE = {"hue": (10.0, 2.0), "sat": (65.0, 5.0), "val": (60.0, 6.0), "sat_dark": (5.0, 5.0)}
# Task A shape fallback (``_task_a_by_shape``): the parts' colours are only checked loosely, since
# JPEG at 32 px spreads chroma over 16 px blocks and a 2 px pole keeps little more than its hue.
SHAPE_TOLERANCE = {"hue": (12.0, 2.0), "sat": (80.0, 5.0), "val": (60.0, 6.0), "sat_dark": (205.0, 5.0)}
BLANK_INK = 0.1             # an image whose strongest pixel has less ink (sum over RGB, 0..3) is blank
REGION_INK = 0.15           # pixels with more ink than this (sum over RGB) form the ink blobs
BACKGROUND_MIN = 0.6         # a background (median colour) darker than this in any channel is not paper
BACKGROUND_WHITE = 0.96      # a background at least this bright in every channel counts as white as it is
STRONG_INK = 0.6            # unlabelled pixels with this much ink far from every element: unexpected object
BORDER_COVERAGE = 0.5       # an element whose coverage on a border pixel exceeds this is cut by the border
PURE_INK_ANGLE = 0.02      # thin elements: a pixel next to another element whose ink is this close to the
                            # element's own colour direction (sin of the angle) holds no other ink
PURE_FRACTION = 0.97        # thin elements: luma level = median of pixels with >= 97 % of the peak luma ink
RESTORE_WINDOW = 3          # window of the chroma restoration in the relaxed second pass
POLE_RIM = 0.02             # Task A by shape: a column holds the pole's rim if its ink is >= this x the pole's peak
LAST_RESORT = frozenset({Problem.MISSING, Problem.UNEXPECTED_COLOUR})   # reasons the adoption pass may undo
THIN_BAR = 2.5              # px: Task B bars thinner than this are measured by the shape of their profile
SHARP_KERNEL = 0.15         # px: a downscaling kernel this narrow (box(1) * box(a), empirics.box_profile) is unblurred
TWO_ROWS = 0.02             # a thin profile's pixel with less than this x its peak holds none of the bar
MAX_SHADOW_THICKNESS = 0.2  # Task A: a "shadow" thicker than this fraction of the image is not a strip
SHARP_EDGE = 0.45           # disc edge width (px, erf scale) up to which an image counts as unblurred
BLURRED_RIM = 1.4           # Task C: partial pixels per perimeter px above which a disc edge is blurred
EXACT_MIX = 1e-5            # mean squared off-span ink (per pixel) of a mix of the element colours and white
MERGE_RESIDUAL = 0.15       # a rim component is merged if its colour is explained to within 15 %


def as_float_rgb(images, value_range=None) -> tuple[np.ndarray, np.ndarray]:
    """Images as float32 [N, S, S, 3] in [0, 1] and a bool[N] of images with non-finite pixels.

    Accepts uint8 (0..255), uint16 (0..65535) and float arrays, NHWC or NCHW (channels-first when
    the second axis has 3 entries and the last has not), a single H x W x 3 image, and torch tensors.
    Grayscale (single-channel) and RGBA arrays are refused by name: the rules are read from colours.
    Floats: ``value_range=None`` reads the batch as [-1, 1] if any finite value is < -0.02, else as
    [0, 1]; pass ``value_range=(lo, hi)`` to map lo -> 0 and hi -> 1 explicitly. Values slightly out
    of range (generated samples) are clipped; non-finite pixels are set to white and flagged.
    """
    if hasattr(images, "detach"):
        images = images.detach().cpu().numpy()
    arr = np.asarray(images)
    if arr.dtype == object or arr.dtype.kind not in "uif" or arr.dtype == np.bool_:
        raise ValueError(f"images must be a numeric array (uint8, uint16 or float), got dtype {arr.dtype}")
    shape = tuple(arr.shape)
    allowed = "expected RGB images (N, S, S, 3) or (N, 3, S, S), or one (S, S, 3) image"
    if arr.ndim == 3 and arr.shape[-1] == 3:
        arr = arr[None]
    if arr.ndim == 4 and arr.shape[-1] != 3 and arr.shape[1] == 3:
        arr = arr.transpose(0, 2, 3, 1)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        # Channel count as the layout suggests: (S, S) one grey image, (N, S, S) grey images,
        # (S, S, C) one image with C <= 4, (N, S, S, C) / (N, C, S, S) a batch (C the shorter axis).
        if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] > 4):
            channels = 1
        elif arr.ndim == 3:
            channels = arr.shape[-1]
        elif arr.ndim == 4:
            channels = min(arr.shape[1], arr.shape[-1])
        else:
            channels = None
        what = {1: ": single-channel (grayscale) images, but the rules are read from colours",
                2: ": 2 channels (grayscale with alpha?), but the rules are read from colours",
                4: ": 4 channels (RGBA?); drop or composite the alpha channel"}.get(channels, "")
        if channels is not None and not what:
            what = f": {channels} channels, not 3"
        raise ValueError(f"images have shape {shape}{what}; {allowed}")
    if arr.shape[0] == 0:
        raise ValueError(f"images is empty: shape {shape}, N = 0; give at least one image")
    if arr.shape[1] != arr.shape[2] or arr.shape[1] < 16:
        raise ValueError(f"images must be square and at least 16 x 16 px, "
                         f"got {arr.shape[1]} x {arr.shape[2]}")
    bad = np.zeros(arr.shape[0], bool)
    if value_range is not None:
        try:
            lo, hi = (float(v) for v in value_range)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"value_range must be None or (lo, hi), got {value_range!r}") from exc
        if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
            raise ValueError(f"value_range must be finite with hi > lo, got {value_range!r}")
    elif arr.dtype == np.uint8:
        lo, hi = 0.0, 255.0
    elif arr.dtype.kind in "ui":
        if arr.dtype == np.uint16:
            lo, hi = 0.0, 65535.0
        elif arr.min() >= 0 and arr.max() <= 255:
            lo, hi = 0.0, 255.0
        else:
            raise ValueError(f"integer images must be uint8/uint16 or within 0..255, got {arr.dtype} "
                             f"with range [{arr.min()}, {arr.max()}]; pass value_range=(lo, hi)")
    else:
        finite = np.isfinite(arr)
        bad = ~finite.reshape(arr.shape[0], -1).all(1)
        vals = arr[finite]
        if vals.size == 0:
            lo, hi = 0.0, 1.0
        else:
            vmin, vmax = float(vals.min()), float(vals.max())
            if vmin < -1.5 or vmax > 1.5:
                raise ValueError(f"float images must be in [0, 1] or [-1, 1], got values in "
                                 f"[{vmin:.3g}, {vmax:.3g}]; "
                                 "pass value_range=(lo, hi) for another range")
            lo, hi = (-1.0, 1.0) if vmin < -0.02 else (0.0, 1.0)
    out = (arr.astype(np.float32) - np.float32(lo)) / np.float32(hi - lo)
    if arr.dtype.kind == "f":
        out[~np.isfinite(out)] = 1.0
    np.clip(out, 0.0, 1.0, out=out)
    return np.ascontiguousarray(out), bad


def _membership(h, s, v, family: HSVRange, tol: dict) -> np.ndarray:
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


def _stack(mask: np.ndarray, pad: int) -> np.ndarray:
    """(n, S, S) -> ((S + pad) n, S) uint8 with ``pad`` zero rows after each image."""
    n, s, _ = mask.shape
    out = np.zeros((n, s + pad, s), np.uint8)
    out[:, :s] = mask
    return out.reshape(n * (s + pad), s)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    n, s, _ = mask.shape
    k = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    return cv2.dilate(_stack(mask, radius), k).reshape(n, s + radius, s)[:, :s].astype(bool)


def _erode(mask: np.ndarray) -> np.ndarray:
    """Pixels whose 8 neighbours are all in ``mask`` (n, S, S); the image border counts as outside."""
    n, s, _ = mask.shape
    return cv2.erode(_stack(mask, 1), np.ones((3, 3), np.uint8),
                     borderType=cv2.BORDER_CONSTANT, borderValue=0).reshape(n, s + 1, s)[:, :s].astype(bool)


def _plateau(profile: np.ndarray) -> np.ndarray:
    """Plateau of (n, S) box-like profiles: median inside the >= half-max run minus one index each side."""
    n, s = profile.shape
    mx = profile.max(1)
    above = profile >= 0.5 * mx[:, None]
    i0 = np.argmax(above, 1)
    i1 = s - 1 - np.argmax(above[:, ::-1], 1)
    idx = np.arange(s)[None, :]
    inner = (idx > i0[:, None]) & (idx < i1[:, None])
    return _masked_median(profile, inner, mx)


@dataclass
class _Element:
    """Measurements of one element per image, in pixels."""

    mass: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    dx: np.ndarray           # x-extent (rectangles) / diameter (discs)
    dy: np.ndarray
    r: np.ndarray
    touches: np.ndarray      # bool (n, 4): left, right, top, bottom
    fit_failed: np.ndarray
    rows: np.ndarray         # (n, S) coverage summed over x, per row
    cov: np.ndarray          # (n, S, S) coverage


def _disc_fit(cov, weight, xs, ys, p0, iters: int = 40, scale: float = 1.0):
    """Levenberg-Marquardt fit of an edge-blurred disc amp * Phi((r - rho) / s) to coverage windows.

    cov, weight: (m, W, W); xs, ys: (m, W) pixel-centre coordinates of the window columns / rows;
    p0: (m, 4) initial (cx, cy, r, s) with amp = 1 fixed, or (m, 5) with a free amp. Returns the
    parameters and bool[m] convergence. The edge width s is kept in [0.15, 3] px x ``scale`` (S / 32 for an
    image of S px: an edge as soft as a 32 px render's, enlarged, is ``scale`` times wider in pixels).
    """
    m, k = p0.shape
    p = p0.astype(np.float64).copy()
    lam = np.full(m, 1e-2)
    X, Y = xs[:, None, :], ys[:, :, None]
    eye = np.eye(k)

    def amp(q):
        return q[:, 4, None, None] if k == 5 else 1.0

    def residuals(q):
        dxx, dyy = X - q[:, 0, None, None], Y - q[:, 1, None, None]
        rho = np.sqrt(dxx * dxx + dyy * dyy) + 1e-9
        z = (q[:, 2, None, None] - rho) / q[:, 3, None, None]
        return weight * (amp(q) * ndtr(z) - cov), dxx, dyy, rho, z

    res, dxx, dyy, rho, z = residuals(p)
    cost = np.einsum("nij,nij->n", res, res)
    for _ in range(iters):
        phi = weight * amp(p) * np.exp(-0.5 * z * z) / (math.sqrt(2 * math.pi) * p[:, 3, None, None])
        cols = [phi * dxx / rho, phi * dyy / rho, phi, -phi * z] + ([weight * ndtr(z)] if k == 5 else [])
        Jt = np.stack(cols, axis=1).reshape(m, k, -1)                       # (m, k, P)
        g = np.matmul(Jt, res.reshape(m, -1, 1))[..., 0]
        H = np.matmul(Jt, Jt.transpose(0, 2, 1))
        diag = np.einsum("nkk->nk", H) + 1e-12
        damped = H + lam[:, None, None] * np.einsum("nk,kl->nkl", diag, eye)
        # Degenerate windows (no coverage, overflowing damping) get no step instead of an exception.
        bad = ~(np.isfinite(damped).all((1, 2)) & np.isfinite(g).all(1))
        if bad.any():
            damped[bad], g[bad] = eye, 0.0
        try:
            step = -np.linalg.solve(damped, g[..., None])[..., 0]
        except np.linalg.LinAlgError:
            step = -np.matmul(np.linalg.pinv(damped), g[..., None])[..., 0]
        q = p + step
        q[:, 2] = np.maximum(q[:, 2], 0.3)
        q[:, 3] = np.clip(q[:, 3], 0.15 * scale, 3.0 * scale)
        if k == 5:
            q[:, 4] = np.clip(q[:, 4], 0.5, 2.0)
        res_q, dxx_q, dyy_q, rho_q, z_q = residuals(q)
        cost_q = np.einsum("nij,nij->n", res_q, res_q)
        better = cost_q < cost
        p = np.where(better[:, None], q, p)
        cost = np.where(better, cost_q, cost)
        lam = np.where(better, lam * 0.3, lam * 10.0)
        b = better[:, None, None]
        res, dxx, dyy, rho, z = (np.where(b, a1, a0) for a1, a0 in
                                 ((res_q, res), (dxx_q, dxx), (dyy_q, dyy), (rho_q, rho), (z_q, z)))
        if np.all(np.abs(step).max(1) < 1e-5):
            break
    npix = np.maximum(weight.reshape(m, -1).sum(1), 1.0)
    converged = np.isfinite(p).all(1) & (np.sqrt(cost / npix) < 0.2)
    return p, converged


def _measure(cov: np.ndarray, shape: str, region: np.ndarray, radius: int,
             refine_level: bool = False) -> _Element:
    """Sub-pixel measurements of one element from its coverage map (n, S, S)."""
    n, S, _ = cov.shape
    pos = np.arange(S) + 0.5
    cols = cov.sum(1, dtype=np.float64)     # (n, S) over x
    rows = cov.sum(2, dtype=np.float64)     # (n, S) over y
    mass = cols.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cx = cols @ pos / mass
        cy = rows @ pos / mass
        var_x = cols @ pos**2 / mass - cx**2
        var_y = rows @ pos**2 / mass - cy**2
    touches = np.stack([cov[:, :, 0].max(1), cov[:, :, -1].max(1), cov[:, 0, :].max(1), cov[:, -1, :].max(1)],
                       axis=1) > BORDER_COVERAGE
    fit_failed = np.zeros(n, bool)
    if shape in (Shape.RECT, Shape.SQUARE):
        tall = var_y >= var_x
        with np.errstate(divide="ignore", invalid="ignore"):
            dx = np.where(tall, _plateau(rows), mass / _plateau(cols))
            dy = np.where(tall, mass / dx, _plateau(cols))
        r = np.full(n, np.nan)
    else:
        r = np.sqrt(np.maximum(mass, 0) / np.pi)
        cut = touches.any(1) & (mass > 0)
        whole = ~cut & (mass > 0)
        if refine_level:
            # The area gives the radius only as well as the element's ink level is known (JPEG
            # leaves the level of a small, low-luma disc uncertain by a few %): fit the level. A
            # sharp edge (partial pixels about one perimeter) needs no fit (_disc_level trusts the
            # fit only for blurred edges).
            partial = ((cov > 0.05) & (cov < 0.95)).sum((1, 2))
            soft = whole & (partial > BLURRED_RIM * 2 * np.pi * np.maximum(r, 0.5))
            if soft.any():
                level, ok = _disc_level(cov[soft], region[soft], cx[soft], cy[soft], r[soft])
                r = r.copy()
                r[soft] = np.where(ok, np.sqrt(np.maximum(mass[soft], 0) / (np.pi * level)), r[soft])
        if cut.any():
            fcx, fcy, fr, ok = _fit_cut_discs(cov[cut], region[cut], touches[cut], cx[cut], cy[cut], radius)
            cx, cy, r = cx.copy(), cy.copy(), r.copy()
            cx[cut], cy[cut], r[cut] = fcx, fcy, fr
            fit_failed[np.flatnonzero(cut)[~ok]] = True
        dx = dy = 2 * r
    return _Element(mass, cx, cy, dx, dy, r, touches, fit_failed, rows, cov)


def _disc_level(cov, region, cx, cy, r0, iters: int = 8):
    """Level (amplitude) of whole discs by a fit of amp * Phi((r - |p - c|) / s) on a window.

    Levenberg-Marquardt over (cx, cy, r, s, amp) started from the moments; returns (amp, converged).
    """
    m, S, _ = cov.shape
    W = int(min(S, 2 * math.ceil(np.nanmax(r0) + 3)))
    oy = np.clip(np.round(cy - W / 2).astype(int), 0, S - W)
    ox = np.clip(np.round(cx - W / 2).astype(int), 0, S - W)
    ar = np.arange(W)
    n_idx = np.arange(m)[:, None, None]
    ri, ci = (oy[:, None] + ar)[:, :, None], (ox[:, None] + ar)[:, None, :]
    p0 = np.stack([cx, cy, r0, np.full(m, 0.45), np.ones(m)], axis=1)
    p, ok = _disc_fit(cov[n_idx, ri, ci].astype(np.float64), region[n_idx, ri, ci].astype(np.float64),
                      ox[:, None] + ar + 0.5, oy[:, None] + ar + 0.5, p0, iters)
    # Sharp edges (box-filtered rendering: s ~ 0.4 px) have fully covered interior pixels whose luma
    # gives the level exactly; trust the fitted amplitude only as far as the edges are blurred.
    trust = np.clip((p[:, 3] - SHARP_EDGE) / 0.15, 0.0, 1.0)
    return 1.0 + trust * (p[:, 4] - 1.0), ok


def _fit_cut_discs(cov, region, touches, cx, cy, radius):
    """Fit discs cut by the image border from their visible part (cropped windows)."""
    m, S, _ = cov.shape
    ys_any, xs_any = region.any(2), region.any(1)
    y0 = np.argmax(ys_any, 1)
    y1 = S - np.argmax(ys_any[:, ::-1], 1)
    x0 = np.argmax(xs_any, 1)
    x1 = S - np.argmax(xs_any[:, ::-1], 1)
    W = int(min(S, max((y1 - y0).max(), (x1 - x0).max())))
    oy = np.clip(y0, 0, S - W)
    ox = np.clip(x0, 0, S - W)
    ar = np.arange(W)
    ri, ci = (oy[:, None] + ar)[:, :, None], (ox[:, None] + ar)[:, None, :]
    n_idx = np.arange(m)[:, None, None]
    win = cov[n_idx, ri, ci].astype(np.float64)
    wt = region[n_idx, ri, ci].astype(np.float64)
    xs, ys = ox[:, None] + ar + 0.5, oy[:, None] + ar + 0.5
    # Initial guess: visible extents give the diameter along an uncut axis.
    mass = win.sum((1, 2))
    hard = win > 0.5
    wx = hard.any(1).sum(1).astype(float)
    wy = hard.any(2).sum(1).astype(float)
    r0 = np.maximum(np.maximum(wx, wy) / 2, np.sqrt(np.maximum(mass, 1) / np.pi))
    left, right, top, bottom = touches.T
    vis_x0 = np.where(hard.any(1), xs[:, :], np.inf).min(1) - 0.5
    vis_x1 = np.where(hard.any(1), xs[:, :], -np.inf).max(1) + 0.5
    vis_y0 = np.where(hard.any(2), ys[:, :], np.inf).min(1) - 0.5
    vis_y1 = np.where(hard.any(2), ys[:, :], -np.inf).max(1) + 0.5
    cx0 = np.where(left & ~right, vis_x1 - r0, np.where(right & ~left, vis_x0 + r0, cx))
    cy0 = np.where(top & ~bottom, vis_y1 - r0, np.where(bottom & ~top, vis_y0 + r0, cy))
    scale = max(1.0, S / 32)
    p0 = np.stack([cx0, cy0, r0, np.full(m, 0.45 * scale)], axis=1)
    p0 = np.where(np.isfinite(p0), p0, np.stack([cx, cy, r0, np.full(m, 0.45 * scale)], axis=1))
    p, ok = _disc_fit(win, wt, xs, ys, p0, scale=scale)
    return p[:, 0], p[:, 1], p[:, 2], ok


# ---- Shape check (every element has the shape its task names) --------------------------------------
#
# Two models are fitted to each element's coverage (a window around it, read at 32 px scale): an
# edge-blurred disc amp * Phi((r - |p - c|) / s) (``_disc_fit``) and the best separable map a(y) b(x)
# (rank 1, SVD), which is every axis-aligned rectangle however blurred (box filtering and Gaussian blur
# are separable). R_disc and R_sep are the fractions of the coverage's energy (sum of squares) each
# leaves unexplained, and ``separable_gain`` L = log10(R_disc / R_sep): a disc has L < 0, a rectangle
# L > 0. Ratios of extents tell squares from bars. Not in the paper (Fig. 2 only counts colour blobs),
# so that an image of the wrong task, or a model drawing the wrong shapes, is Invalid.
# Thresholds from ``benchmarks/shape_check.py`` (seed 11: 1000 renders per task, exact, blurred
# (sigma 0.5) and blurred + JPEG 75 (``degrade``); 300 per preset and downscaler of
# ``empirics.render_reference``), images valid apart from their shapes, extremes over each source:
#
#   discs (A sun, C circles)   L <= -1.22 exact, -0.43 blurred, +1.01 JPEG, -0.72 reference;
#                              R_disc <= 0.0026 exact / blurred / reference; JPEG: A sun <= 0.028, C large
#                              <= 0.08, C small <= 0.126 here and up to 0.25 on other seeds (heavy tail:
#                              JPEG shares the small yellowish circle's chroma with its blue-green neighbour)
#   rectangles (B, D)          L >= +3.36 exact, +2.67 blurred, +0.40 JPEG, +1.76 reference
#   D squares, height / width  0.85 - 1.20 (JPEG; exact 0.998 - 1.0, reference 0.985 - 1.01)
#   B taller bar               >= 1.60 exact, 1.44 JPEG, 1.73 reference
#   A pole, h2 / width         >= 3.20 exact, 2.68 JPEG, 2.54 reference
#   wrong task (exact)         D squares as C discs L >= 3.65; C discs as B/D rectangles L <= 0.23 (small),
#                              <= -0.29 (large); A's pole with its shadow as C's large disc R_disc >= 0.23
#
# JPEG's axis-aligned 8 x 8 blocks make a small disc blocky (separable-looking) but never make a
# rectangle round, so the disc side gets a wide margin (a rectangle must explain it 100 x better) and
# the rectangle side the parameter-free bound L >= 0 (a disc must not explain it better). A disc cut
# by the border is judged on its visible part (both models are fitted to the pixels in the frame).
SHAPE_SCALE = 32            # px: the shape statistics are computed on coverage area-averaged to this scale
SHAPE_PAD = 2               # px (at 32 px scale): margin of the window around an element's coverage
SEPARABLE_GAIN_DISC = 2.0   # a disc is Invalid if a rectangle explains its coverage 10^2 x better (L > 2)
SEPARABLE_GAIN_RECT = 0.0   # a rectangle / square is Invalid if a disc explains it better (L < 0)
DISC_RESIDUAL = 0.2         # a disc is Invalid if the disc model leaves > 20 % of its energy unexplained ...
DISC_RESIDUAL_C_SMALL = 0.5 # ... Task C's small circle > 50 % (JPEG splits its chroma with the large one's)
SQUARE_ASPECT = 1.4         # Task D: a square's side ratio (extents, ``_measure``) within [1/1.4, 1.4]
BAR_ASPECT = 1.3            # Task B: the taller bar is at least 1.3 x as tall as wide
POLE_ASPECT = 1.8           # Task A: the pole (h2 / width) is at least 1.8 x as tall as wide
NAMED_SQUARE = 1.25         # a separable shape with both moment ratios within this factor is named a square


class Form(str, enum.Enum):
    """Shapes named in ``Problem.WRONG_SHAPE`` reasons ("yellowish circle: square where a circle is expected")."""

    CIRCLE = "circle"
    SQUARE = "square"
    BAR = "bar"
    VERTICAL_STRIP = "vertical strip"
    HORIZONTAL_BAR = "horizontal bar"
    IRREGULAR = "irregular shape"


# The shape each element must have; Task A's shadow is judged by its own geometric checks (a strip on
# the ground at the pole's foot, ``SHADOW_NOT_A_STRIP``), since the pole may hide part of it.
EXPECTED_FORM: dict[Task, dict[str, Form]] = {
    Task.A: {"sun": Form.CIRCLE, "pole": Form.VERTICAL_STRIP},
    Task.B: {"left": Form.BAR, "right": Form.BAR},
    Task.C: {"small": Form.CIRCLE, "large": Form.CIRCLE},
    Task.D: {"top": Form.SQUARE, "bottom": Form.SQUARE},
}


@dataclass(frozen=True)
class ShapeStats:
    """Shape statistics of one element over a batch of images (section "Shape check" above).

    ``separable_gain``: L = log10(R_disc / R_sep); ``disc_residual``: R_disc; ``radius``: sqrt(area / pi)
    in px at 32 px scale; ``elongation``: sqrt(var_y / var_x) of the coverage (> 1: taller than wide);
    ``aspect``: the height / width ratio the check reads for rectangles (Tasks B, D: the extents of
    ``_measure``; Task A's pole: h2 / pole width), NaN for discs. NaN where an element has no coverage.
    """

    separable_gain: np.ndarray
    disc_residual: np.ndarray
    radius: np.ndarray
    elongation: np.ndarray
    aspect: np.ndarray

    def take(self, index) -> ShapeStats:
        return ShapeStats(*(getattr(self, f.name)[index] for f in fields(self)))


def _shape_window(cov: np.ndarray, pad: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(m, W, W) windows of (m, s, s) coverage around each element's support (> 10 % of its peak), with
    their pixel-centre coordinates (m, W) along x and y."""
    m, s, _ = cov.shape
    on = cov > 0.1 * np.maximum(cov.max((1, 2)), 1e-9)[:, None, None]
    ys, xs = on.any(2), on.any(1)
    y0, y1 = np.argmax(ys, 1), s - np.argmax(ys[:, ::-1], 1)
    x0, x1 = np.argmax(xs, 1), s - np.argmax(xs[:, ::-1], 1)
    W = int(min(s, max((y1 - y0).max(), (x1 - x0).max()) + 2 * pad))
    oy = np.clip(np.round((y0 + y1 - W) / 2).astype(int), 0, s - W)
    ox = np.clip(np.round((x0 + x1 - W) / 2).astype(int), 0, s - W)
    ar = np.arange(W)
    win = cov[np.arange(m)[:, None, None], (oy[:, None] + ar)[:, :, None], (ox[:, None] + ar)[:, None, :]]
    return win.astype(np.float64), ox[:, None] + ar + 0.5, oy[:, None] + ar + 0.5


def _shape_stats(cov: np.ndarray, aspect: np.ndarray, iters: int = 20) -> ShapeStats:
    """``ShapeStats`` of elements from their coverage (m, S, S), area-averaged to ``SHAPE_SCALE`` px."""
    m, S, _ = cov.shape
    nan = np.full(m, np.nan)
    if m == 0:
        return ShapeStats(nan, nan, nan, nan, nan)
    b = max(1, S // SHAPE_SCALE)
    s = S // b
    cov = np.clip(np.nan_to_num(cov[:, :s * b, :s * b]), 0.0, None)
    if b > 1:
        cov = cov.reshape(m, s, b, s, b).mean((2, 4))
    win, xs, ys = _shape_window(cov, SHAPE_PAD)
    energy = (win * win).sum((1, 2))
    mass = win.sum((1, 2))
    has = (energy > 1e-9) & (mass > 1e-9)
    energy, mass = np.where(has, energy, 1.0), np.where(has, mass, 1.0)
    r_sep = np.maximum(energy - np.linalg.svd(win, compute_uv=False)[:, 0] ** 2, 0.0) / energy
    cx = (win.sum(1) * xs).sum(1) / mass
    cy = (win.sum(2) * ys).sum(1) / mass
    var_x = (win.sum(1) * (xs - cx[:, None]) ** 2).sum(1) / mass
    var_y = (win.sum(2) * (ys - cy[:, None]) ** 2).sum(1) / mass
    scale = s / SHAPE_SCALE
    p0 = np.stack([cx, cy, np.sqrt(mass / np.pi), np.full(m, 0.45 * max(scale, 1.0)), np.ones(m)], axis=1)
    p, _ = _disc_fit(win, np.ones_like(win), xs, ys, p0, iters, scale=max(scale, 1.0))
    rho = np.hypot(xs[:, None, :] - p[:, 0, None, None], ys[:, :, None] - p[:, 1, None, None])
    model = p[:, 4, None, None] * ndtr((p[:, 2, None, None] - rho) / p[:, 3, None, None])
    r_disc = ((win - model) ** 2).sum((1, 2)) / energy
    eps = 1e-6              # relative energy: the floor of both residuals (exact renders reach ~1e-6)
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = np.log10((r_disc + eps) / (r_sep + eps))
        elong = np.sqrt(var_y / var_x)
    return ShapeStats(np.where(has, gain, np.nan), np.where(has, r_disc, np.nan),
                      np.where(has, np.sqrt(mass / np.pi) / scale, np.nan), np.where(has, elong, np.nan), aspect)


def _shape_table(spec: TaskSpec, e: list[_Element], features: dict[str, np.ndarray],
                 idx: np.ndarray) -> dict[str, ShapeStats]:
    """``ShapeStats`` of the judged elements (``EXPECTED_FORM``) of images ``idx``, by element name."""
    table = {}
    expected = EXPECTED_FORM[spec.task]
    with np.errstate(invalid="ignore", divide="ignore"):
        for f, element in enumerate(spec.elements):
            form = expected.get(element.name)
            if form is Form.VERTICAL_STRIP:
                ratio = features["h2"][idx] / features["pole_width"][idx]
                nan = np.full(idx.size, np.nan)
                table[element.name] = ShapeStats(nan, nan, nan, nan, ratio)
            elif form is not None:
                aspect = np.full(idx.size, np.nan) if form is Form.CIRCLE else e[f].dy[idx] / e[f].dx[idx]
                table[element.name] = _shape_stats(e[f].cov[idx], aspect)
    return table


def _named(gain: float, ratio: float) -> Form:
    """What an element looks like: a circle if a disc explains it better (``gain`` < 0), else, by its
    height / width ``ratio``, a square, a (vertical) bar or a horizontal bar."""
    if not gain > 0:
        return Form.CIRCLE
    if 1 / NAMED_SQUARE <= ratio <= NAMED_SQUARE:
        return Form.SQUARE
    return Form.BAR if ratio > 1 else Form.HORIZONTAL_BAR


def _shape_verdicts(spec: TaskSpec, table: dict[str, ShapeStats], touches: dict[str, np.ndarray],
                    ) -> list[list[Reason]]:
    """``Problem.WRONG_SHAPE`` reasons per image from a ``_shape_table`` (thresholds: section comment);
    ``touches``: per element, bool (m,) whether it reaches the image border (a square's ratio is then
    not its shape)."""
    m = len(next(iter(table.values())).aspect)
    bad: list[list[Reason]] = [[] for _ in range(m)]
    expected = EXPECTED_FORM[spec.task]
    label = {el.name: el.label for el in spec.elements}

    def add(j, name, found: Form):
        bad[j].append(Reason(Problem.WRONG_SHAPE, label[name], found=found.value, expected=expected[name].value))

    with np.errstate(invalid="ignore"):
        for name, st in table.items():
            form = expected[name]
            if form is Form.CIRCLE:
                limit = np.full(m, DISC_RESIDUAL_C_SMALL if (spec.task, name) == (Task.C, "small") else DISC_RESIDUAL)
                for j in range(m):
                    if st.separable_gain[j] > SEPARABLE_GAIN_DISC:
                        add(j, name, _named(st.separable_gain[j], st.elongation[j]))
                    elif st.disc_residual[j] > limit[j]:
                        add(j, name, Form.IRREGULAR)
            elif form is Form.VERTICAL_STRIP:
                for j in np.flatnonzero(~(st.aspect >= POLE_ASPECT)):
                    add(j, name, _named(1.0, st.aspect[j]))
            else:
                for j in np.flatnonzero(st.separable_gain < SEPARABLE_GAIN_RECT):
                    add(j, name, Form.CIRCLE)
            if form is Form.SQUARE:
                off = ~touches[name] & ~(np.abs(np.log(st.aspect)) <= math.log(SQUARE_ASPECT))
                for j in np.flatnonzero(off & (st.separable_gain >= SEPARABLE_GAIN_RECT)):
                    add(j, name, _named(1.0, st.aspect[j]))
        if spec.task is Task.B:
            names = [el.name for el in spec.elements]
            ratios = np.stack([table[k].aspect for k in names])
            taller = np.argmax(np.nan_to_num(ratios, nan=-1.0), axis=0)
            best = ratios[taller, np.arange(m)]
            for j in np.flatnonzero(~(best >= BAR_ASPECT)):
                add(j, names[taller[j]], _named(1.0, best[j]))
    return bad


def _shape_reasons(spec: TaskSpec, e: list[_Element], features: dict[str, np.ndarray],
                   todo: np.ndarray) -> list[list[Reason]]:
    """``Problem.WRONG_SHAPE`` reasons (n images) for the images ``todo`` (bool[n]) whose elements do not
    have the shape their task names (``EXPECTED_FORM``); the others get none."""
    bad: list[list[Reason]] = [[] for _ in range(len(todo))]
    idx = np.flatnonzero(todo)
    if idx.size:
        touches = {el.name: e[f].touches[idx].any(1) for f, el in enumerate(spec.elements)}
        for j, reasons in zip(idx, _shape_verdicts(spec, _shape_table(spec, e, features, idx), touches)):
            bad[j] = reasons
    return bad


@dataclass
class Evaluation:
    """Per-image measurements of a batch (``evaluate``); features are divided by the image size."""

    task: Task
    size: np.ndarray
    valid: np.ndarray
    reason: np.ndarray
    features: dict[str, np.ndarray]
    x: np.ndarray
    y: np.ndarray
    coarse_ok: np.ndarray

    def __len__(self) -> int:
        return len(self.valid)

    @property
    def ratio(self) -> np.ndarray:
        """Fine ratio y / x (NaN where invalid)."""
        return np.where(self.valid, fine_ratio(self.x, self.y), np.nan)

    def summary(self, trim=(2.5, 97.5), n_boot: int = 1000, seed: int = 0,
                conform_rtol: float = 0.01) -> dict:
        """Coarse violations, trimmed fit, R^2, Error (eq. (4)), conforming fraction, bootstrap CIs."""
        return summarize(self.task, self.x, self.y, self.valid, self.coarse_ok, self.reason, trim=trim,
                         n_boot=n_boot, seed=seed, conform_rtol=conform_rtol)

    def ground_truth_errors(self, truth: dict[str, np.ndarray]) -> dict:
        """Pixel errors of the rule's features (``TaskSpec.rule_features``) against a generator's
        ground truth (``TaskBatch.params``), over the valid images (``metrics.feature_errors``)."""
        return feature_errors(self.features, truth, SPECS[self.task].rule_features, self.size, self.valid)

    def rows(self) -> list[dict]:
        """One dict per image: valid, reason, features (normalised), ratio, coarse_ok."""
        ratio = self.ratio
        out = []
        for i in range(len(self)):
            feats = {k: (float(v[i]) if np.isfinite(v[i]) else None) for k, v in self.features.items()}
            out.append({"valid": bool(self.valid[i]), "reason": str(self.reason[i]), "features": feats,
                        "x": float(self.x[i]) if self.valid[i] else None,
                        "y": float(self.y[i]) if self.valid[i] else None,
                        "ratio": float(ratio[i]) if self.valid[i] and np.isfinite(ratio[i]) else None,
                        "coarse_ok": bool(self.coarse_ok[i]) if self.valid[i] else None,
                        "size": int(self.size[i])})
        return out

    @staticmethod
    def concatenate(parts: list[Evaluation]) -> Evaluation:
        if not parts:
            raise ValueError("parts must contain at least one Evaluation")
        task = parts[0].task
        if any(p.task is not task for p in parts):
            raise ValueError("all parts must be of the same task")
        cat = np.concatenate
        return Evaluation(task, cat([p.size for p in parts]), cat([p.valid for p in parts]),
                          cat([p.reason for p in parts]),
                          {k: cat([p.features[k] for p in parts]) for k in parts[0].features},
                          cat([p.x for p in parts]), cat([p.y for p in parts]),
                          cat([p.coarse_ok for p in parts]))

    def take(self, index) -> Evaluation:
        return Evaluation(self.task, self.size[index], self.valid[index], self.reason[index],
                          {k: v[index] for k, v in self.features.items()}, self.x[index], self.y[index],
                          self.coarse_ok[index])


@dataclass
class _ColourMask:
    """One element's colour mask in every image of a chunk (step 2 of the module docstring)."""

    comp_image: np.ndarray   # image index of each connected component
    comp_area: np.ndarray    # its area (px)
    comp_label: np.ndarray   # its label in ``labels``
    labels: np.ndarray       # (n, S, S) component label of each pixel
    primary: np.ndarray      # (n,) label of the largest component of >= min_px pixels (0: none; -1: a pale
                             # blob outside the colour labels, ``_adopt_pale_blob``)
    count: np.ndarray        # (n,) number of such components (rims merged into other elements excluded)
    hard: np.ndarray         # (n, S, S) the primary component's pixels (plus the rims merged into it)
    colour: np.ndarray       # (n, 3) ink colour, luma level (``_element_colour``); NaN if absent
    colour_full: np.ndarray  # (n, 3) ink colour, level of the ink projected on its direction


@dataclass
class _Chunk:
    """A chunk of images passing through the pipeline ``_label`` -> ``_cover`` -> ``_assign`` -> ``_measure_chunk``."""

    rgb: np.ndarray
    spec: TaskSpec
    reasons: list[list[Reason]]
    masks: list[_ColourMask] = field(default_factory=list)
    labelled: np.ndarray | None = None      # (n, S, S) pixels of some colour family
    blank: np.ndarray | None = None         # (n,) images without ink
    coverage: list[np.ndarray] = field(default_factory=list)   # per element, (n, S, S)
    regions: list[np.ndarray] = field(default_factory=list)    # per group, (n, S, S)
    exact: list[np.ndarray] = field(default_factory=list)      # per group, (n,): pixels are exact colour mixes
    elements: list[_Element] = field(default_factory=list)    # per element, its measurements (``_measure_chunk``)

    def __post_init__(self):
        self.ink = 1.0 - self.rgb
        self.inkmag = self.ink.sum(-1)

    @property
    def n(self) -> int:
        return self.rgb.shape[0]

    @property
    def S(self) -> int:
        return self.rgb.shape[1]

    @property
    def min_px(self) -> int:
        return max(2, round(2 * (self.S / 32) ** 2))

    @property
    def radius(self) -> int:
        return 2 + self.S // 64

    @property
    def groups(self) -> list[int]:
        return sorted({e.group for e in self.spec.elements})

    def members(self, group: int) -> list[int]:
        return [f for f, e in enumerate(self.spec.elements) if e.group == group]


def _merge_rims(chunk: _Chunk, i: int) -> None:
    """Merge extra components of image i that are anti-aliased rims of another element."""
    masks, ink = chunk.masks, chunk.ink
    for f, mask in enumerate(masks):
        if mask.count[i] <= 1:
            continue
        extra = mask.comp_label[(mask.comp_image == i) & (mask.comp_area >= chunk.min_px)
                                & (mask.comp_label != mask.primary[i])]
        for c in extra:
            pix = mask.labels[i] == c
            near = cv2.dilate(pix.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            inks = ink[i][pix]
            for g, other in enumerate(masks):
                if g == f or other.primary[i] == 0 or not (near & other.hard[i]).any():
                    continue
                d = other.colour[i]
                a = inks @ d / (d @ d)
                off = np.linalg.norm(inks - a[:, None] * d[None, :], axis=1)
                resid = off / (np.linalg.norm(inks, axis=1) + 1e-6)
                if np.median(resid) <= MERGE_RESIDUAL and 0.02 < np.median(a) <= 1.1:
                    mask.count[i] -= 1
                    other.hard[i] |= pix
                    break


def _adopt_small_parts(chunk: _Chunk, i: int, labelled: np.ndarray, best: np.ndarray) -> None:
    """A strip (rectangle) of image i with no component of ``min_px`` pixels takes its largest smaller
    one if that touches another element of its group (a shadow that shows one pixel beside its pole's
    foot): specks are ignored only where they stand alone."""
    masks, elements = chunk.masks, chunk.spec.elements
    for f, mask in enumerate(masks):
        if mask.count[i] != 0 or elements[f].shape is not Shape.RECT:
            continue                    # a speck is no disc or square of the task's sizes
        mates = [g for g, e in enumerate(elements)
                 if g != f and e.group == elements[f].group and masks[g].primary[i] != 0]
        if not mates:
            continue
        near = _dilate(np.any([masks[g].hard[i] for g in mates], axis=0)[None], 1)[0]
        own = (mask.comp_image == i) & (mask.comp_area < chunk.min_px)
        touching = [(a, c) for a, c in zip(mask.comp_area[own], mask.comp_label[own])
                    if (near & (mask.labels[i] == c)).any()]
        if not touching:
            continue
        label = max(touching)[1]
        mask.primary[i], mask.count[i] = label, 1
        mask.hard[i] = mask.labels[i] == label
        others = _dilate((labelled[i] & (best[i] != f))[None], 1)
        col, col_full = _element_colour(chunk.ink[i:i + 1], mask.hard[i:i + 1], others, chunk.radius, both=True)
        mask.colour[i], mask.colour_full[i] = col[0], col_full[0]


def _adopt_pale_blob(chunk: _Chunk, i: int, labelled: np.ndarray) -> None:
    """A missing element of image i takes the one unlabelled ink blob whose colour, mixed with white,
    is a colour of its family (a bar thinner than a pixel of a dark, weakly saturated blue-green shows
    only pixels half white, whose saturation is below the family's floor).

    The blob's ink is its summed direction at its peak magnitude; it fits if some coverage a in
    (peak, 1] makes 1 - ink / a a colour of the element's family (``_colour_fits``, with
    ``FAMILY_TOLERANCE``) and of no other family of the task. Only one blob and one missing element
    that it fits are accepted; anything else stays Invalid."""
    masks, elements, ink = chunk.masks, chunk.spec.elements, chunk.ink[i]
    missing = [f for f, m in enumerate(masks) if m.count[i] == 0]
    if not missing:
        return
    pale = (chunk.inkmag[i] >= REGION_INK) & ~_dilate(labelled[i:i + 1], 1)[0]
    num, lab, stats, _ = cv2.connectedComponentsWithStats(pale.astype(np.uint8), connectivity=8)
    blobs = [j for j in range(1, num) if stats[j, cv2.CC_STAT_AREA] >= chunk.min_px
             and chunk.inkmag[i][lab == j].max() >= STRONG_INK]
    if len(blobs) != 1:
        return
    pix = lab == blobs[0]
    total = ink[pix].sum(0, dtype=np.float64)
    direction = total / max(np.linalg.norm(total), 1e-12)
    peak = direction * float((ink[pix] @ direction).max())
    fits = [f for f, e in enumerate(elements) if _colour_fits(peak, e.family, thin=True, tol=FAMILY_TOLERANCE)]
    if len(fits) != 1 or fits[0] not in missing:
        return
    f = fits[0]
    masks[f].primary[i], masks[f].count[i] = -1, 1
    masks[f].hard[i] = pix
    others = _dilate((labelled[i] & ~pix)[None], 1)
    col, col_full = _element_colour(chunk.ink[i:i + 1], pix[None], others, chunk.radius, both=True)
    masks[f].colour[i], masks[f].colour_full[i] = col[0], col_full[0]
    labelled[i] |= pix


MIN_COLOUR_ANGLE_SIN = 0.35  # touching elements are unmixed jointly if their inks differ by > ~20 degrees


def _distance_to(mask: np.ndarray, pad: int) -> np.ndarray:
    """Euclidean distance (px) of every pixel to ``mask`` (n, S, S), exact up to ``pad`` px."""
    n, S, _ = mask.shape
    inv = np.ones((n, S + pad, S), np.uint8)
    inv[:, :S][mask] = 0
    dist = cv2.distanceTransform(inv.reshape(n * (S + pad), S), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return dist.reshape(n, S + pad, S)[:, :S]


def _shares(ink: np.ndarray, colours: list, hards: list, radius: int) -> np.ndarray:
    """Share (2, n, S, S) of each pixel's ink that belongs to each of two touching elements.

    Joint least squares of the pixel's ink on both element inks (clipped at 0, weighted by their
    luma) when the inks are well apart; otherwise (nearly collinear inks, e.g. a desaturated blue
    pole next to a grey shadow) the pixel goes wholly to the element whose colour mask is nearest.
    """
    n, S = ink.shape[:2]
    D = np.stack([np.where(np.isfinite(c), c, 1.0) for c in colours], axis=2)      # (n, 3, 2)
    d0, d1 = D[:, :, 0], D[:, :, 1]
    sin = np.linalg.norm(np.cross(d0, d1), axis=1) / (np.linalg.norm(d0, axis=1) * np.linalg.norm(d1, axis=1))
    G = np.einsum("nck,ncl->nkl", D, D)
    G += 1e-9 * np.eye(2)[None] * np.trace(G, axis1=1, axis2=2)[:, None, None]
    P = np.linalg.solve(G, D.transpose(0, 2, 1))                                     # (n, 2, 3)
    luma = D.transpose(0, 2, 1) @ LUMA.astype(np.float64)                            # (n, 2)
    W = (P * luma[:, :, None]).astype(np.float32)
    parts = np.clip(np.matmul(W, ink.reshape(n, -1, 3).transpose(0, 2, 1)), 0, None)  # (n, 2, S*S)
    tot = parts.sum(1, keepdims=True)
    share = np.where(tot > 1e-4, parts / np.maximum(tot, 1e-4), np.float32(0.5)).reshape(n, 2, S, S)
    split = ~(sin >= MIN_COLOUR_ANGLE_SIN)
    if split.any():
        # Nearly collinear inks are still unmixed jointly when the pixels lie in their span (clean
        # or only blurred images); when they do not (JPEG), the ill-conditioned split is replaced.
        near = _dilate(hards[0][split] | hards[1][split], 1)
        flat = ink[split]
        rest = _span_residual(flat, D[split])
        off_span = np.where(near, rest, 0).sum((1, 2)) / np.maximum(near.sum((1, 2)), 1)
        split[np.flatnonzero(split)[off_span <= EXACT_MIX]] = False
    if split.any():
        d_0 = _distance_to(hards[0][split], radius + 1)
        d_1 = _distance_to(hards[1][split], radius + 1)
        near0 = (d_0 < d_1) | ((d_0 == d_1) & (share[split, 0] >= 0.5))
        share[split, 0] = near0
        share[split, 1] = ~near0
    return share.transpose(1, 0, 2, 3)


def _span_residual(ink: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Squared distance of each pixel's ink from the span of the element inks ``colours`` (n, 3, K)."""
    n = ink.shape[0]
    D = np.where(np.isfinite(colours), colours, 1.0)
    Q = np.linalg.qr(D)[0].astype(np.float32)                                        # (n, 3, K)
    flat = ink.reshape(n, -1, 3)
    along = np.matmul(flat, Q)                                                        # (n, P, K)
    rest = (flat * flat).sum(-1) - (along * along).sum(-1)
    return np.maximum(rest, 0).reshape(ink.shape[:3])


def _restore_chroma(ink: np.ndarray, window: int) -> np.ndarray:
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


LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _masked_median(values: np.ndarray, mask: np.ndarray, empty: np.ndarray) -> np.ndarray:
    """Median of ``values`` over ``mask`` per image (n, ...), ``empty`` where the mask is empty."""
    n = len(values)
    v = np.sort(np.where(mask, values, np.inf).reshape(n, -1), axis=1)
    k = mask.reshape(n, -1).sum(1)
    lo = np.take_along_axis(v, np.maximum((k - 1) // 2, 0)[:, None], 1)[:, 0]
    hi = np.take_along_axis(v, np.maximum(k // 2, 0)[:, None], 1)[:, 0]
    return np.where(k > 0, 0.5 * (lo + hi), empty)


def _element_colour(ink: np.ndarray, hard: np.ndarray, near_others: np.ndarray, radius: int,
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
    own = _dilate(hard, radius) & ~near_others
    total = np.einsum("nyx,nyxc->nc", own.astype(np.float32), ink, dtype=np.float64)
    norm = np.linalg.norm(total, axis=1, keepdims=True)
    direction = total / np.maximum(norm, 1e-12)
    cand = hard & ~near_others
    cand = np.where(cand.any((1, 2))[:, None, None], cand, hard)
    luma = ink @ LUMA
    interior = cand & _erode(hard)
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
            level[has] = _masked_median(values[has], interior[has], level[has])
        thin = ~has
        if thin.any():
            v, c = values[thin], thin_cand[thin]
            peak = np.where(c, v, 0).max((1, 2))
            level[thin] = _masked_median(v, c & (v >= PURE_FRACTION * peak[:, None, None]), peak)
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


def _label(chunk: _Chunk, tol: dict, restore: int = 0, adopt: bool = False) -> None:
    """Steps 1-2: colour-family labels, one mask per element, rims merged, counts checked (with
    ``adopt``, a missing element may take a speck that touches its group, ``_adopt_small_parts``)."""
    n, S, elements = chunk.n, chunk.S, chunk.spec.elements
    seen = _restore_chroma(chunk.ink, restore) if restore else chunk.rgb
    hsv = cv2.cvtColor(seen.reshape(n * S, S, 3), cv2.COLOR_RGB2HSV).reshape(n, S, S, 3)
    h, s, v = hsv[..., 0] * 0.5, hsv[..., 1] * 255.0, hsv[..., 2] * 255.0
    memb = np.stack([_membership(h, s, v, e.family, tol) for e in elements])
    best = memb.argmax(0)
    labelled = memb.max(0) >= 0.5
    for f in range(len(elements)):
        mask = labelled & (best == f)
        num, lab, stats, _ = cv2.connectedComponentsWithStats(_stack(mask, 1), connectivity=8,
                                                              ltype=cv2.CV_32S)
        lab = lab.reshape(n, S + 1, S)[:, :S]
        area = stats[1:, cv2.CC_STAT_AREA]
        img = stats[1:, cv2.CC_STAT_TOP] // (S + 1)
        ids = np.arange(1, num)
        keep = area >= chunk.min_px
        cnt = np.bincount(img[keep], minlength=n)
        prim = np.zeros(n, np.int64)
        if keep.any():
            order = np.lexsort((-area[keep], img[keep]))
            first = np.unique(img[keep][order], return_index=True)
            prim[first[0]] = ids[keep][order][first[1]]
        hard = (lab == prim[:, None, None]) & (prim[:, None, None] > 0)
        col, col_full = _element_colour(chunk.ink, hard, _dilate(labelled & (best != f), 1), chunk.radius,
                                        both=True)
        chunk.masks.append(_ColourMask(img, area, ids, lab, prim, cnt, hard, col, col_full))
    for i in np.flatnonzero(np.any([m.count > 1 for m in chunk.masks], axis=0)):
        _merge_rims(chunk, i)
    if adopt:
        for i in np.flatnonzero(np.any([m.count == 0 for m in chunk.masks], axis=0)):
            _adopt_small_parts(chunk, i, labelled, best)
            _adopt_pale_blob(chunk, i, labelled)
    chunk.labelled = labelled
    chunk.blank = chunk.inkmag.reshape(n, -1).max(1) < BLANK_INK
    for i in np.flatnonzero(chunk.blank):
        chunk.reasons[i].append(Reason(Problem.BLANK))
    for mask, e in zip(chunk.masks, elements):
        for i in np.flatnonzero(~chunk.blank & (mask.count == 0)):
            chunk.reasons[i].append(Reason(Problem.MISSING, e.label))
        for i in np.flatnonzero(mask.count > 1):
            chunk.reasons[i].append(Reason(Problem.TOO_MANY, e.plural, int(mask.count[i])))


def _cover(chunk: _Chunk) -> None:
    """Step 3a: each group's region and each element's coverage (linear unmixing within its group)."""
    n, S, radius, ink, masks = chunk.n, chunk.S, chunk.radius, chunk.ink, chunk.masks
    luma_ink = ink @ LUMA
    chunk.coverage = [None] * len(masks)
    # An element's region is the whole ink blob holding its colour mask (so parts whose colour was
    # washed out still count), widened by the blur radius.
    _, blobs = cv2.connectedComponents(_stack(chunk.inkmag >= REGION_INK, 1), connectivity=8, ltype=cv2.CV_32S)
    blobs = blobs.reshape(n, S + 1, S)[:, :S]
    for g in chunk.groups:
        members = chunk.members(g)
        core = np.any([masks[f].hard for f in members], axis=0)
        ids = np.where(core, blobs, 0).max((1, 2))
        blob = (blobs == ids[:, None, None]) & (ids[:, None, None] > 0)
        chunk.regions.append(_dilate(core, radius) | _dilate(blob, 1))
        # Where the pixels are exact mixes of the element colours and white (rendered images), the
        # coverage is the least-squares unmixing of all three channels (best signal). Otherwise
        # (blur, JPEG) it is the pixel's luma ink (full resolution even in JPEG) over the element's
        # luma level, shared between touching elements by their colours.
        D = np.stack([np.where(np.isfinite(masks[f].colour), masks[f].colour, 1.0) for f in members], axis=2)
        D_full = np.stack([np.where(np.isfinite(masks[f].colour_full), masks[f].colour_full, 1.0)
                           for f in members], 2)
        near = _dilate(core, 1)
        off_span = np.where(near, _span_residual(ink, D), 0).sum((1, 2)) / np.maximum(near.sum((1, 2)), 1)
        exact = off_span <= EXACT_MIX
        chunk.exact.append(exact)
        G = np.einsum("nck,ncl->nkl", D_full, D_full) + 1e-12 * np.eye(len(members))[None]
        P = np.linalg.solve(G, D_full.transpose(0, 2, 1)).astype(np.float32)          # (n, K, 3)
        unmixed = np.matmul(P, ink.reshape(n, -1, 3).transpose(0, 2, 1)).reshape(n, len(members), S, S)
        levels = D.transpose(0, 2, 1) @ LUMA.astype(np.float64)                      # (n, K)
        share = _shares(ink, [masks[f].colour for f in members], [masks[f].hard for f in members], radius) \
            if len(members) == 2 else [None]
        for j, f in enumerate(members):
            by_luma = luma_ink / np.float32(levels[:, j])[:, None, None]
            if share[j] is not None:
                by_luma = by_luma * share[j]
            chunk.coverage[f] = np.where(exact[:, None, None], unmixed[:, j], by_luma)


def _assign(chunk: _Chunk) -> None:
    """Step 3b: a pixel in two groups' regions goes to the group whose colours explain it best; ink
    far from every element is an unexpected object."""
    groups, regions, ink = chunk.groups, chunk.regions, chunk.ink
    final = [r.copy() for r in regions]
    overlap = np.sum(regions, axis=0) > 1
    clash = np.flatnonzero(overlap.any((1, 2)))
    if clash.size:
        resid = np.stack([_span_residual(ink[clash], np.stack([chunk.masks[f].colour[clash]
                                                               for f in chunk.members(g)], 2))
                          for g in groups])
        resid = np.where(np.stack([r[clash] for r in regions]), resid, np.inf)
        owner = np.argmin(resid, axis=0)
        for j in range(len(groups)):
            final[j][clash] = regions[j][clash] & (owner == j)
    any_region = np.any(regions, axis=0)
    chunk.regions = final
    for f, e in enumerate(chunk.spec.elements):
        chunk.coverage[f] = np.where(final[groups.index(e.group)], chunk.coverage[f], np.float32(0))
    stray = (chunk.inkmag >= STRONG_INK) & ~chunk.labelled & ~any_region
    n_stray = stray.sum((1, 2))
    for i in np.flatnonzero(~chunk.blank & (n_stray >= chunk.min_px)):
        chunk.reasons[i].append(Reason(Problem.UNEXPECTED_COLOUR))


def _measure_chunk(chunk: _Chunk) -> dict[str, np.ndarray]:
    """Step 3c: each element's geometry, then the task's features; geometric verdicts for images
    that have no other reason."""
    spec = chunk.spec
    elems = [_measure(chunk.coverage[f], e.shape, chunk.regions[chunk.groups.index(e.group)], chunk.radius,
                      spec.task is Task.C)
             for f, e in enumerate(spec.elements)]
    exact = [chunk.exact[chunk.groups.index(e.group)] for e in spec.elements]
    chunk.elements = elems
    feats, geo_bad = _features(spec, elems, chunk.S, chunk.ink @ LUMA, exact)
    # The shape check judges images that pass every other check, so that a geometric verdict a
    # washed-out colour can cause still sends an image to the relaxed second pass.
    todo = np.array([not rs and not g for rs, g in zip(chunk.reasons, geo_bad)], bool)
    shape_bad = _shape_reasons(spec, elems, feats, todo)
    for i in range(chunk.n):
        if not chunk.reasons[i]:
            chunk.reasons[i].extend(geo_bad[i] or shape_bad[i])
    return feats


def _evaluate_chunk(rgb: np.ndarray, task: Task, tol: dict, restore: int = 0,
                    adopt: bool = False) -> tuple[dict, list[list[Reason]]]:
    """Features (normalised) and Invalid reasons of a chunk of images: label, cover, assign, measure."""
    chunk = _Chunk(rgb, SPECS[task], [[] for _ in range(rgb.shape[0])])
    _label(chunk, tol, restore, adopt)
    _cover(chunk)
    _assign(chunk)
    return _measure_chunk(chunk), chunk.reasons


def _edge_integral(profile: np.ndarray, start: np.ndarray, stop: float = 0.5) -> np.ndarray:
    """Length of the run of a (n, S) coverage profile from row ``start`` on: the sum of the profile,
    clipped to [0, 1], up to one row past the first row below ``stop`` (the edge, and a blurred edge's
    tail); the rows further on hold only noise, which a longer sum would gather. An enlarged image
    (nearest-neighbour) repeats a partial end pixel over many rows: pass a lower ``stop`` to keep them."""
    n, S = profile.shape
    idx = np.arange(S)[None, :]
    p = np.clip(np.nan_to_num(profile), 0.0, 1.0)
    low = (p < stop) & (idx >= start[:, None])
    end = np.where(low.any(1), np.argmax(low, 1), S - 1) + 1
    return np.where((idx >= start[:, None]) & (idx <= end[:, None]), p, 0.0).sum(1)


def _pole_geometry(pole: _Element, shadow: _Element, own: np.ndarray) -> dict[str, np.ndarray]:
    """Task A: the pole's centre, width, top and foot, each from the pole's own pixels.

    Centre x and width (row-sum plateau) come from the pole's rows above the shadow band, where it
    is alone, and its top from the edge integral top = y_c - sum_{y < y_c} rows(y) / width, exact for
    box-filtered edges and unchanged by symmetric blur. The foot (where the pole meets the ground)
    is the same edge integral downwards, foot = y_c + sum_{y >= y_c} rows'(y) / width', over the
    pole's half away from the shadow (columns beyond its axis on the sun's side): whichever way a
    shadow strip is drawn (beside the pole on the ground, under the ground line, straddling it, over
    or under the pole), it starts at the pole's axis at most, so that half shows the foot. There the
    rows are those of ``own`` (n, S, S): the pole's coverage where the pixels are exact colour mixes
    (it leaves out a strip's blurred ink), else the pixels' luma ink (nothing but the pole is in that
    half, and luma, unlike the split of a pixel between touching elements, survives JPEG's chroma
    subsampling).
    """
    n, S = pole.rows.shape
    band = shadow.rows >= 0.25 * shadow.rows.max(1, keepdims=True)
    b0 = np.where(band.any(1), np.argmax(band, 1), S)
    with np.errstate(invalid="ignore"):
        yc = np.minimum(b0 - 1, np.floor(np.nan_to_num(pole.cy, nan=0.0))).astype(int)
    yc = np.clip(yc, 1, S)
    upper = np.arange(S)[None, :] < yc[:, None]
    cols = np.einsum("ny,nyx->nx", upper.astype(np.float32), pole.cov, dtype=np.float64)
    pos = np.arange(S) + 0.5
    with np.errstate(divide="ignore", invalid="ignore"):
        x = cols @ pos / cols.sum(1)
        width = _plateau(np.where(upper, pole.rows, 0.0))
        top = yc - np.where(upper, pole.rows, 0.0).sum(1) / width
        away = np.where(np.nan_to_num(shadow.cx) >= x, -1.0, 1.0)          # the sun's side of the pole
        offset = (pos[None, :] - x[:, None]) * away[:, None]
        far = (offset > 0) & (offset <= width[:, None] / 2 + 1.0)           # (n, S) columns
        far_rows = np.einsum("nyx,nx->ny", own, far.astype(np.float32), dtype=np.float64)
        # the width from the pole's own rows (a sun beside it may share those columns higher up)
        along = upper & (np.arange(S)[None, :] >= np.ceil(np.nan_to_num(top, nan=0.0))[:, None])
        far_width = _plateau(np.where(along, far_rows, 0.0))
        foot = yc + _edge_integral(np.where(upper, 0.0, far_rows) / far_width[:, None], yc)
    return {"pole_x": x, "pole_width": width, "pole_top": top, "ground_y": foot, "_above": yc - top,
            "_kernel": _pole_kernel(far_rows, top, foot, far_width),
            "_kernel_shown": np.maximum(_edge_phase(top / _bin_factor(S)), _edge_phase(foot / _bin_factor(S)))
            >= KERNEL_PHASE}


def _bin_factor(S: int) -> int:
    """Columns summed into one by ``_bin``: an image larger than 32 px is read at 32 px scale for the
    kernel and short-strip fits (their grids are in px of a 32 px image; binning is area averaging, so a
    nearest-neighbour enlargement bins back to its source exactly)."""
    return max(1, S // 32)


def _bin(profile: np.ndarray, b: int) -> np.ndarray:
    """(n, S) profiles summed over runs of ``b`` pixels -> (n, S // b)."""
    n, S = profile.shape
    return profile[:, :S // b * b].reshape(n, S // b, b).sum(2) if b > 1 else profile


KERNEL_PHASE = 0.2          # px: an edge this far from a pixel centre shows the kernel (``box_profile.kernel_width``)


def _edge_phase(edge: np.ndarray) -> np.ndarray:
    """Distance (px) of an edge from the nearest pixel centre: 0 (it reads 1/2 whatever the kernel) to 1/2."""
    with np.errstate(invalid="ignore"):
        return np.abs(np.mod(np.nan_to_num(edge, nan=0.5), 1.0) - 0.5)


def _pole_kernel(far_rows: np.ndarray, top: np.ndarray, foot: np.ndarray, level: np.ndarray) -> np.ndarray:
    """Task A: the image's downscaling kernel width a (px, ``empirics.box_profile``; NaN if unknown) from
    the two ends of the pole's half on the sun's side, a box [top, foot] whose ends and level the edge
    integrals of ``_pole_geometry`` give exactly for any symmetric kernel: only the shape of its blurred
    ends is left to a (``box_profile.kernel_width``). The shadow strip has the same kernel."""
    b = _bin_factor(far_rows.shape[1])
    far_rows, top, foot, level = _bin(far_rows, b), top / b, foot / b, level * b
    n, S = far_rows.shape
    a = np.full(n, np.nan)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(top) & np.isfinite(foot) & np.isfinite(level) & (level > 0) & (foot - top >= 2)
    if ok.any():
        idx = np.arange(S)[None, :]
        near = (idx >= np.floor(top[ok])[:, None] - 2) & (idx <= np.ceil(foot[ok])[:, None] + 1)
        a[ok] = kernel_width(np.where(near, np.nan_to_num(far_rows[ok]), 0.0), top[ok], foot[ok] - top[ok],
                             level[ok])[0]
    return a


SHORT_STRIP = 5             # columns: a strip whose >= half-max run is this short is measured by a box fit
TAIL_INK = 0.05             # a strip's columns are summed up to one past the first with less coverage than this
STRIP_WINDOW = 12           # px: window of the box fit of a short strip
FIT_CHUNK = 16              # short strips fitted at once (memory of the grid scan)
KERNEL_CHOICES = (0.0, 0.5, 1.0, 1.5)   # px: kernel widths tried on a short strip whose pole does not show a
NEAR_END_SLACK = 0.01       # rms / peak: a near end held at the pole explains a sharp strip if it fits this well


def _shadow_end(shadow: _Element, side: np.ndarray, kernel: np.ndarray, shown: np.ndarray, pole_x: np.ndarray,
                pole_width: np.ndarray) -> np.ndarray:
    """Task A: x (px) of the shadow strip's far end, from the strip's ink per column P(x) alone.

    Its near end needs no measuring (a strip starts at the pole's axis or is hidden up to its edge, by
    convention of the renderer), and must not be used: the centroid +- half the extent is biased for a
    strip with partial end pixels (a partial pixel's ink counts at its centre, not at its covered
    part's: by a (1 - a) / (2 L) px for an end pixel covered a, up to 1 / (8 L); with the near end on a
    pixel boundary, as in ``empirics.tasks``, always long: 0.05 px on a 2.5 px strip, 1.5 % of l2).

    * A strip whose run of columns at >= half its peak is longer than ``SHORT_STRIP``: the edge integral
      end = x_k + sum_{x >= x_k} P(x) / A from the near boundary x_k of the column two inside that run's far
      end (fully covered for any kernel up to 2 px wide), A the plateau; exact for any symmetric kernel.
    * A shorter strip has no plateau once a downscaler blurs it (a 1-2 px strip under PIL's bilinear:
      the peak column holds 60-90 % of A), so neither A nor the extent is read off a pixel: a blurred box
      (sum / L) * box_profile(x, e, L, a) is fitted to P (``box_profile.fit_boxes``) with the image's
      kernel width a (``_pole_kernel``), and the end is e + L. Where both ends of the pole lie near pixel
      centres (``KERNEL_PHASE``: they read 1/2 whatever a), a is the one of ``KERNEL_CHOICES`` whose fit
      explains P best (the pole's estimate unless another fits better by ``NEAR_END_SLACK``).
      With a sharp kernel (a <= ``SHARP_KERNEL``)
      a strip over two partial columns is not in its pixels (``box_profile``: (A (1 - o), A (L - 1 + o))
      fits every offset o, and the end j + 1 + r (1 - o) moves by up to r px): there the near end is taken
      where a strip starts, at the pole's axis (visible from it) or its edge (hidden up to it), the one
      that explains P better, unless neither explains it as well as the free fit (``NEAR_END_SLACK``).
    Images without a kernel estimate keep the centroid estimate (NaN geometry is Invalid elsewhere).
    """
    b = _bin_factor(shadow.rows.shape[1])
    cols = _bin(np.nan_to_num(shadow.cov.sum(1, dtype=np.float64)), b)
    n, S = cols.shape
    pole_x, pole_width = pole_x / b, pole_width / b
    flip = side < 0
    prof = np.where(flip[:, None], cols[:, ::-1], cols)          # far end to the right
    with np.errstate(invalid="ignore"):
        end = (shadow.cx + side * shadow.dx / 2) / b             # fallback (no kernel, no ink)
    end_m = np.where(flip, S - end, end)
    peak = prof.max(1)
    above = prof >= 0.5 * peak[:, None]
    i0 = np.argmax(above, 1)
    i1 = S - 1 - np.argmax(above[:, ::-1], 1)
    usable = (peak > 0) & np.isfinite(side) & (side != 0)
    long = usable & (i1 - i0 + 1 > SHORT_STRIP)
    if long.any():
        level = _plateau(prof[long])
        k = i1[long] - 2
        with np.errstate(divide="ignore", invalid="ignore"):
            end_m[long] = k + _edge_integral(prof[long] / level[:, None], k, TAIL_INK)
    short = np.flatnonzero(usable & ~long & np.isfinite(kernel))
    if short.size:
        ink = prof[short] > 1e-3 * peak[short, None]
        first = np.argmax(ink, 1)
        w0 = np.clip(first - 2, 0, max(S - STRIP_WINDOW, 0))
        width = min(STRIP_WINDOW, S)
        win = prof[short[:, None], w0[:, None] + np.arange(width)[None, :]]
        inked = win.sum(1) > 0                   # unmixing noise can leave a window without net ink
        short, w0, win = short[inked], w0[inked], win[inked]
        for s0 in range(0, short.size, FIT_CHUNK):
            part = slice(s0, s0 + FIT_CHUNK)
            idx = short[part]
            fit = fit_boxes(win[part], kernel[idx], max_length=min(8.0, width))
            a, best_end, best_rms = kernel[idx].copy(), fit.edge + fit.length, fit.rms
            unsure = np.flatnonzero(~shown[idx])
            for choice in KERNEL_CHOICES if unsure.size else ():
                other = fit_boxes(win[part][unsure], np.full(unsure.size, choice), max_length=min(8.0, width))
                better = other.rms < best_rms[unsure] - NEAR_END_SLACK
                pick = unsure[better]
                a[pick], best_end[pick], best_rms[pick] = choice, (other.edge + other.length)[better], other.rms[better]
            best_rms = best_rms + NEAR_END_SLACK
            sharp = a <= SHARP_KERNEL
            if sharp.any():
                axis = np.where(flip[idx], S - pole_x[idx], pole_x[idx]) - w0[part]
                for near in (axis, axis + np.nan_to_num(pole_width[idx]) / 2):
                    ok = sharp & np.isfinite(near)
                    held = fit_boxes(win[part][ok], a[ok], max_length=min(8.0, width), edge=near[ok])
                    better = held.rms < best_rms[ok]
                    pick = np.flatnonzero(ok)[better]
                    best_end[pick] = (held.edge + held.length)[better]
                    best_rms[pick] = held.rms[better]
            end_m[idx] = w0[part] + best_end
    return b * np.where(flip, S - end_m, end_m)


THIN_COVERAGES = np.linspace(0.1, 1.0, 19)


def _colour_fits(ink: np.ndarray, family: HSVRange, thin: bool, tol: dict | None = None) -> bool:
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
    return bool((_membership(hsv[:, 0] * 0.5, hsv[:, 1] * 255, hsv[:, 2] * 255, family,
                             SHAPE_TOLERANCE if tol is None else tol)
                 >= 0.5).any())


def _task_a_by_shape(rgb: np.ndarray) -> tuple[dict | None, Reason | None]:
    """Task A fallback when colour cannot separate the pole from the shadow (one image, (S, S, 3)).

    JPEG chroma subsampling can leave a 2 px pole of a dark blue nearly as grey as the shadow, so
    no pixel classifies as blue-green. Here the pole and the shadow are found as one ink object and
    split by shape: the shadow band is the run of bottom rows wider than the pole, the pole is what
    rises above it. Each part's colour is then taken from ink sums over the part alone (which the
    chroma subsampling preserves) and must fall in its App. C family, so the colour rule is still
    checked, per element instead of per pixel. Returns (features in px, None) or (None, reason).
    """
    S = rgb.shape[0]
    radius = 2 + S // 64
    min_px = max(2, round(2 * (S / 32) ** 2))
    one = rgb[None]
    ink = 1.0 - one
    inkmag = ink.sum(-1)
    seen = _restore_chroma(ink, RESTORE_WINDOW)
    hsv = cv2.cvtColor(seen[0], cv2.COLOR_RGB2HSV)
    sun_m = _membership(hsv[..., 0] * 0.5, hsv[..., 1] * 255.0, hsv[..., 2] * 255.0, YELLOWISH,
                        RELAXED_TOLERANCE)
    num, lab, stats, _ = cv2.connectedComponentsWithStats((sun_m >= 0.5).astype(np.uint8), connectivity=8)
    big = [j for j in range(1, num) if stats[j, cv2.CC_STAT_AREA] >= min_px]
    if len(big) != 1:
        return None, Reason(Problem.MISSING, "sun") if not big else Reason(Problem.TOO_MANY, "suns", len(big))
    sun_hard = (lab == big[0])[None]
    # Hysteresis: the object is the pixels with ink >= REGION_INK connected to pixels with twice
    # that, so a strip thinner than a pixel (faint rows) stays attached to the pole.
    not_sun = ~_dilate(sun_hard, radius + 1)
    strong = ((inkmag >= 2 * REGION_INK) & not_sun)[0]
    num, lab, stats, _ = cv2.connectedComponentsWithStats(((inkmag >= REGION_INK) & not_sun)[0].astype(np.uint8),
                                                          connectivity=8)
    seeded = np.bincount(lab[strong], minlength=num) > 0
    big = [j for j in range(1, num) if seeded[j] and stats[j, cv2.CC_STAT_AREA] >= 3 * min_px]
    if len(big) != 1:
        return None, Reason(Problem.MISSING, "pole") if not big else Reason(Problem.NOT_ONE_OBJECT)
    obj = lab == big[0]
    widths = obj.sum(1)
    ys = np.flatnonzero(widths)
    y_top, y_bot = ys[0], ys[-1]
    pole_w = np.median(widths[y_top:max(y_top + 1, (y_top + y_bot) // 2 + 1)])
    band = widths >= pole_w + max(1.0, S / 32)
    if not band[y_bot] and not band[max(y_bot - 1, 0)]:
        return None, Reason(Problem.MISSING, "shadow")
    b0 = y_bot if band[y_bot] else y_bot - 1
    while b0 - 1 >= y_top and band[b0 - 1]:
        b0 -= 1
    yc = b0 - 1
    if yc - y_top < 2:
        return None, Reason(Problem.POLE_NOT_ABOVE_SHADOW)
    rows_idx = np.arange(S)[:, None]
    grown = _dilate(obj[None], radius)[0] & ~_dilate(sun_hard, radius)[0]
    pole_region = grown & (rows_idx < yc)
    pole_hard = obj & pole_region
    d_pole = _element_colour(ink, pole_hard[None], np.zeros_like(sun_hard), radius)[0]
    a_pole = np.where(pole_region, (ink[0] @ d_pole) / (d_pole @ d_pole), 0.0)
    pos = np.arange(S) + 0.5
    rows_p = a_pole.sum(1)
    cols_p = a_pole.sum(0)
    pole_x = cols_p @ pos / cols_p.sum()
    width = _plateau(rows_p[None])[0]
    top = yc - rows_p.sum() / width
    band_cols = obj[b0:y_bot + 1].any(0)
    side = np.sign(np.mean(np.flatnonzero(band_cols)) + 0.5 - pole_x) or 1.0
    # The shadow is measured beyond the pole's rim: the columns where the pole's own cross-section
    # (the median over its rows, so a strip's row above the band does not count) has ink, or one
    # pixel past its edge if that is nearer (JPEG noise spreads faint ink far from the pole).
    inside = (rows_idx[:, 0] >= math.ceil(top)) & (rows_idx[:, 0] < yc)
    section = np.median(a_pole[inside], axis=0) if inside.any() else cols_p
    rim = np.flatnonzero(section >= POLE_RIM * section.max())
    edge = pole_x + side * (width / 2 + 1.0)
    x0 = min(int(rim[-1]) + 1, math.ceil(edge)) if side > 0 else max(int(rim[0]), math.floor(edge))
    beyond = (pos[None, :] - x0) * side > 0
    sh_region = grown & beyond & (rows_idx >= yc)
    # The shadow's colour may also use its pixels right next to the pole (not its geometry).
    sh_colour = obj & grown & ((pos[None, :] - (pole_x + side * width / 2)) * side > 0) & (rows_idx >= b0)
    if not (obj & sh_region).any() or not sh_colour.any():
        return None, Reason(Problem.MISSING, "shadow")
    d_sh = _element_colour(ink, sh_colour[None], np.zeros_like(sun_hard), radius)[0]
    for d, family, name, part in ((d_pole, BLUE_GREEN, "pole", pole_hard), (d_sh, DARK, "shadow", sh_colour)):
        if not np.all(np.isfinite(d)):
            return None, Reason(Problem.MISSING, name)
        if not _colour_fits(d, family, thin=not (part & _erode(part[None])[0]).any()):
            return None, Reason(Problem.COLOUR_OUT_OF_RANGE, name, family=family.name)

    a_sh = np.where(sh_region, (ink[0] @ d_sh) / (d_sh @ d_sh), 0.0)
    rows_s, cols_s = a_sh.sum(1), a_sh.sum(0)
    thickness = _plateau(cols_s[None])[0]
    # A strip with a row covered whole: its length is that row's ink; a thinner one (its ink level,
    # and so each row's coverage, unknown): area / thickness, in which the level cancels.
    thin = not (sh_colour & _erode(sh_colour[None])[0]).any()
    length = a_sh.sum() / thickness if thin else _plateau(rows_s[None])[0]
    shadow_end = x0 + side * length
    # The foot: the edge integral down the pole's half on the sun's side (as in _pole_geometry).
    offset = (pole_x - pos) * side
    far = (offset > 0) & (offset <= width / 2 + 1.0)
    far_rows = (ink[0] @ LUMA)[:, far].sum(1)
    above = np.arange(S) < yc
    far_width = _plateau(np.where(above & (np.arange(S) >= math.ceil(top)), far_rows, 0.0)[None])[0]
    ground = yc + _edge_integral(np.where(above, 0.0, far_rows)[None] / far_width, np.array([yc]))[0]
    d_sun = _element_colour(ink, sun_hard, np.zeros_like(sun_hard), radius)[0]
    sun_cov = np.where(_dilate(sun_hard, radius), (ink @ d_sun) / (d_sun @ d_sun), 0.0).astype(np.float32)
    sun = _measure(sun_cov, Shape.DISC, _dilate(sun_hard, radius), radius)
    if sun.fit_failed[0]:
        return None, Reason(Problem.FIT_FAILED, "sun")
    f = {"sun_x": sun.cx[0], "sun_y": sun.cy[0], "sun_radius": sun.r[0], "pole_x": pole_x,
         "pole_width": width, "pole_top": top, "ground_y": ground, "shadow_end": shadow_end,
         "shadow_thickness": thickness}
    f["h2"] = ground - top
    f["l1"] = abs(f["sun_x"] - pole_x)
    f["h1"] = top - f["sun_y"]
    f["l2"] = abs(shadow_end - pole_x)
    if (not all(np.isfinite(v) and -0.5 * S < v < 1.5 * S for v in f.values())
            or not (width > 0.5 * S / 32 and f["l2"] > width / 2)
            or not 0 < thickness <= MAX_SHADOW_THICKNESS * S
            or f["h2"] <= 0):
        return None, Reason(Problem.DEGENERATE)
    if f["h1"] <= 0:
        return None, Reason(Problem.SUN_NOT_ABOVE_POLE)
    return f, None


CUT_SLACK = 0.25            # px: a square whose visible extent falls this short of its side is cut


def _square(el: _Element, S: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Side, centre x, centre y (px) of a square from its own pixels, and whether a border hides its size.

    A square whose coverage reaches the border may be cut by it. Its side is then its extent along
    the border (uncut), its centre lies half a side from its visible inner edge, and its visible
    extent across the border says whether it was cut at all. Whole squares: side = sqrt(area) and
    the centroid (the most precise). Cut at a corner (both axes short), the size is lost.
    """
    along_x = el.touches[:, :2].any(1)             # left or right border: the vertical extent is whole
    along_y = el.touches[:, 2:].any(1)             # top or bottom border: the horizontal extent is whole
    side = np.sqrt(np.maximum(el.mass, 0))
    cx, cy = el.cx.copy(), el.cy.copy()
    corner = np.zeros(len(side), bool)
    edge = np.flatnonzero(along_x | along_y)
    if edge.size:
        cov = el.cov[edge]
        height = _plateau(cov.sum(1, dtype=np.float64))   # vertical extent per column
        width = _plateau(cov.sum(2, dtype=np.float64))    # horizontal extent per row
        ax, ay = along_x[edge], along_y[edge]
        with np.errstate(divide="ignore", invalid="ignore"):
            vis_x, vis_y = el.mass[edge] / height, el.mass[edge] / width
        cut_x = ax & ~ay & (vis_x < height - CUT_SLACK)
        cut_y = ay & ~ax & (vis_y < width - CUT_SLACK)
        corner[edge] = ax & ay & ~(np.abs(height - width) <= CUT_SLACK)
        t = el.touches[edge]
        side[edge] = np.where(cut_x, height, np.where(cut_y, width, side[edge]))
        cx[edge] = np.where(cut_x, np.where(t[:, 0], vis_x - height / 2, S - vis_x + height / 2), cx[edge])
        cy[edge] = np.where(cut_y, np.where(t[:, 2], vis_y - width / 2, S - vis_y + width / 2), cy[edge])
    return side, cx, cy, corner


def _features(spec: TaskSpec, e: list[_Element], S: int, luma: np.ndarray,
              exact: list[np.ndarray]) -> tuple[dict, list[list[Reason]]]:
    """The task's features (divided by S) from its elements' geometry, and geometric Invalid reasons.

    ``luma``: the images' luma ink (n, S, S); ``exact``: per element, (n,) whether its group's
    pixels are exact mixes of the element colours and white (then its coverage is exact)."""
    task = spec.task
    n = len(e[0].mass)
    bad: list[list[Reason]] = [[] for _ in range(n)]

    def flag(mask, reason: Reason):
        for i in np.flatnonzero(mask):
            bad[i].append(reason)

    for el, element in zip(e, spec.elements):
        flag(el.fit_failed, Reason(Problem.FIT_FAILED, element.label))
        if element.shape == Shape.RECT:
            flag(el.touches.any(1), Reason(Problem.CUT_BY_BORDER, element.label))
    f: dict[str, np.ndarray] = {}
    if task is Task.A:
        sun, pole, shadow = e
        f["sun_x"], f["sun_y"], f["sun_radius"] = sun.cx, sun.cy, sun.r
        f.update(_pole_geometry(pole, shadow, np.where(exact[1][:, None, None], pole.cov, luma)))
        with np.errstate(invalid="ignore"):
            flag(~(f.pop("_above") >= 1.0) | ~(f["pole_width"] >= 0.5 * S / 32), Reason(Problem.POLE_NOT_ABOVE_SHADOW))
            flag(~(shadow.dy <= MAX_SHADOW_THICKNESS * S), Reason(Problem.SHADOW_NOT_A_STRIP))
            f["h2"] = f["ground_y"] - f["pole_top"]
        # The shadow lies on the ground: its strip (beside, under or across the ground line) reaches
        # the pole's foot.
        tol = max(1.5, 0.05 * S)
        with np.errstate(invalid="ignore"):
            on_strip = np.abs(f["ground_y"] - shadow.cy) <= shadow.dy / 2 + tol
            flag(~on_strip, Reason(Problem.SHADOW_NOT_AT_FOOT))
        side = np.sign(shadow.cx - f["pole_x"])
        f["shadow_end"] = _shadow_end(shadow, side, f.pop("_kernel"), f.pop("_kernel_shown"), f["pole_x"],
                                      f["pole_width"])
        f["shadow_thickness"] = shadow.dy
        f["l1"] = np.abs(f["sun_x"] - f["pole_x"])
        f["h1"] = f["pole_top"] - f["sun_y"]
        f["l2"] = np.abs(f["shadow_end"] - f["pole_x"])
        flag(f["h1"] <= 0, Reason(Problem.SUN_NOT_ABOVE_POLE))
    elif task is Task.B:
        for el, element in zip(e, spec.elements):
            flag(_thin_bar_extents(el), Reason(Problem.TOO_THIN, element.label))
        first_left = e[0].cx <= e[1].cx
        keys = ("cx", "cy", "dx", "dy")
        left = {k: np.where(first_left, getattr(e[0], k), getattr(e[1], k)) for k in keys}
        right = {k: np.where(first_left, getattr(e[1], k), getattr(e[0], k)) for k in keys}
        f["l1"], f["h1"] = left["cx"] - left["dx"] / 2, left["dy"]
        f["l2"], f["h2"] = right["cx"] - right["dx"] / 2, right["dy"]
        f["left_width"], f["right_width"] = left["dx"], right["dx"]
        f["left_y"], f["right_y"] = left["cy"], right["cy"]
    elif task is Task.C:
        small, large = e
        f["r_small"], f["r_large"] = small.r, large.r
        f["small_x"], f["small_y"], f["large_x"], f["large_y"] = small.cx, small.cy, large.cx, large.cy
        f["gap"] = np.hypot(small.cx - large.cx, small.cy - large.cy) - small.r - large.r
    else:
        (side0, cx0, cy0, corner0), (side1, cx1, cy1, corner1) = (_square(el, S) for el in e)
        for corner, element in zip((corner0, corner1), spec.elements):
            flag(corner, Reason(Problem.CUT_BY_BORDER, element.label))
        first_top = cy0 <= cy1
        f["side_top"] = np.where(first_top, side0, side1)
        f["side_bottom"] = np.where(first_top, side1, side0)
        f["top_x"] = np.where(first_top, cx0, cx1)
        f["top_y"] = np.where(first_top, cy0, cy1)
        f["bottom_x"] = np.where(first_top, cx1, cx0)
        f["bottom_y"] = np.where(first_top, cy1, cy0)
    out = {k: np.asarray(f[k], np.float64) / S for k in spec.features}
    with np.errstate(invalid="ignore"):
        sane = np.all([np.isfinite(v) & (v > -0.5) & (v < 1.5) for v in out.values()], axis=0)
        sane &= np.all([out[k] > 0 for k in spec.positive], axis=0)
    flag(~sane, Reason(Problem.DEGENERATE))
    return out, bad


def _thin_bar_extents(el: _Element) -> np.ndarray:
    """Re-measure, in place, the thin extent of bars thinner than ``THIN_BAR`` px from the shape of their
    blurred profile (``empirics.box_profile``); returns (n,) True where that extent is not identifiable.

    The extent across a rectangle's thin axis is otherwise its ink per row over its ink level, taken
    from a fully covered pixel, which a bar under ~2 px thick may not have once blurred."""
    n, S = el.cov.shape[:2]
    lost = np.zeros(n, bool)
    with np.errstate(invalid="ignore"):
        thin = np.flatnonzero(np.minimum(el.dx, el.dy) < THIN_BAR)
    for i in thin:
        rows, cols = el.rows[i], el.cov[i].sum(0, dtype=np.float64)
        wide = el.dx[i] >= el.dy[i]
        across, along = (rows, cols) if wide else (cols, rows)
        idx = [np.flatnonzero(p > 1e-3) for p in (across, along)]
        if any(k.size == 0 for k in idx) or idx[0][0] == 0 or idx[0][-1] == S - 1:
            continue
        window = [p[max(k[0] - 1, 0):k[-1] + 2] for p, k in zip((across, along), idx)]
        if min(w.size for w in window) < 3:
            continue
        m = thin_extent(window[1], window[0])
        if not m.fits:
            continue                    # not a blurred box: keep the level-based extent
        if m.kernel_width <= SHARP_KERNEL:
            # Unblurred: a bar over three rows or more has a fully covered one, which gives its level
            # (the level-based extent is exact); over two partial rows its thickness is not in its pixels.
            lost[i] = np.count_nonzero(window[0] > TWO_ROWS * window[0].max()) <= 2
            continue
        if not m.identifiable:
            lost[i] = True
        elif wide:
            el.dy[i] = m.extent
        else:
            el.dx[i] = m.extent
    return lost


def _worth_retrying(reasons: list[Reason]) -> bool:
    """True for an Invalid image whose every reason a washed-out colour can cause (``Problem``)."""
    return bool(reasons) and all(r.retryable for r in reasons)


def _whiten_background(rgb: np.ndarray) -> np.ndarray:
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


def _retry(part, task, again, feats, reasons, tol: dict, restore: int, adopt: bool = False) -> None:
    """Measure the images ``again`` once more with colour tolerance ``tol``, chroma restored over
    ``restore`` px and, with ``adopt``, specks and pale blobs adopted (``_label``); keep the successes.
    With ``adopt``, an image that now has all its elements but fails a geometric verdict (an element
    too thin to measure, cut by the border) takes that verdict: it says more than "missing". So does,
    in every pass, an image whose only fault is now the shape of its elements (``Problem.WRONG_SHAPE``)."""
    feats2, reasons2 = _evaluate_chunk(part[again], task, tol, restore, adopt)
    for j, i in enumerate(np.flatnonzero(again)):
        if not reasons2[j]:
            reasons[i] = []
            for k, v in feats.items():
                v[i] = feats2[k][j]
        elif adopt and not any(r.retryable for r in reasons2[j]):
            reasons[i] = reasons2[j]
        elif all(r.problem is Problem.WRONG_SHAPE for r in reasons2[j]):
            reasons[i] = reasons2[j]


def _task_a_shape_pass(part, again, feats, reasons) -> None:
    """Task A: measure the retried images that are still Invalid by shape (``_task_a_by_shape``), except
    those whose elements were all found and only their shapes are wrong (``Problem.WRONG_SHAPE``)."""
    still = [bool(rs) and not all(r.problem is Problem.WRONG_SHAPE for r in rs) for rs in reasons]
    for i in np.flatnonzero(again & np.array(still, bool)):
        shape_feats, _ = _task_a_by_shape(part[i])
        if shape_feats is not None:
            reasons[i] = []
            for k, v in feats.items():
                v[i] = shape_feats[k] / part.shape[1]


def evaluate(images, task, *, value_range=None, workers: int = 1,
             chunk_size: int | None = None) -> Evaluation:
    """Measure every image of ``task`` (Fig. 2 pipeline, module docstring): features, rules, validity.

    ``images``: uint8 RGB [N, S, S, 3] of any square size >= 16, float in [0, 1] or [-1, 1] (see
    ``as_float_rgb``), NCHW accepted. Malformed arrays raise ValueError; a bad *image* (NaN, blank,
    wrong elements) is Invalid with a reason. ``workers`` threads process chunks in parallel.
    """
    task = Task.parse(task)
    workers = check_int("workers", workers, 1, 64)
    rgb, nonfinite = as_float_rgb(images, value_range)
    rgb = _whiten_background(rgb)
    n, S = rgb.shape[:2]
    chunk = check_int("chunk_size", chunk_size, 1) if chunk_size is not None else max(32, 2**20 // (S * S))
    starts = list(range(0, n, chunk))

    def work(start):
        part = rgb[start:start + chunk]
        feats, reasons = _evaluate_chunk(part, task, FAMILY_TOLERANCE)
        again = np.array([_worth_retrying(rs) for rs in reasons], bool)
        if again.any():
            _retry(part, task, again, feats, reasons, RELAXED_TOLERANCE, RESTORE_WINDOW)
        if task is Task.A:
            _task_a_shape_pass(part, again, feats, reasons)
        # Last: an element found only as a speck touching its group (a shadow showing one pixel beside
        # its pole's foot). Not earlier: a speck of the pole's rim must not stand in for a faint strip
        # that the passes above find.
        missing = np.array([any(r.problem is Problem.MISSING for r in rs)
                            and all(r.problem in LAST_RESORT for r in rs) for rs in reasons], bool)
        if missing.any():
            _retry(part, task, missing, feats, reasons, FAMILY_TOLERANCE, 0, adopt=True)
        return feats, reasons

    if workers > 1 and len(starts) > 1:
        with ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(work, starts))
    else:
        parts = [work(s0) for s0 in starts]
    features = {k: np.concatenate([p[0][k] for p in parts]) for k in SPECS[task].features}
    reasons = [r for p in parts for r in p[1]]
    for i in np.flatnonzero(nonfinite):
        reasons[i] = [Reason(Problem.NON_FINITE)]
    valid = np.array([not r for r in reasons], bool)
    reason = np.array(["; ".join(r.message for r in rs) for rs in reasons], dtype=object)
    x, y = fine_xy(task, features)
    x = np.where(valid, x, np.nan)
    y = np.where(valid, y, np.nan)
    coarse = coarse_rule(task, features) & valid
    return Evaluation(task, np.full(n, S), valid, reason, features, x, y, coarse)


def shape_statistics(images, task, *, value_range=None) -> tuple[dict[str, ShapeStats], np.ndarray]:
    """The shape check's statistics (``ShapeStats`` per judged element, ``EXPECTED_FORM``) of every image,
    read in the evaluator's first pass (App. C colour families with ``FAMILY_TOLERANCE``), and bool[N]:
    whether that pass finds the image valid apart from its shapes (the statistics mean something there).

    This is how the thresholds of the section "Shape check" were measured (``benchmarks/shape_check.py``).
    Images that only the relaxed passes of ``evaluate`` rescue are not in the second array.
    """
    task = Task.parse(task)
    rgb, nonfinite = as_float_rgb(images, value_range)
    rgb = _whiten_background(rgb)
    n, S = rgb.shape[:2]
    spec = SPECS[task]
    chunk_size = max(32, 2**20 // (S * S))
    tables, ok = [], np.zeros(n, bool)
    for start in range(0, n, chunk_size):
        part = rgb[start:start + chunk_size]
        chunk = _Chunk(part, spec, [[] for _ in range(part.shape[0])])
        _label(chunk, FAMILY_TOLERANCE)
        _cover(chunk)
        _assign(chunk)
        feats = _measure_chunk(chunk)
        tables.append(_shape_table(spec, chunk.elements, feats, np.arange(chunk.n)))
        ok[start:start + chunk.n] = [not any(r.problem is not Problem.WRONG_SHAPE for r in rs) for rs in chunk.reasons]
    ok &= ~nonfinite
    table = {k: ShapeStats(*(np.concatenate([getattr(t[k], f.name) for t in tables]) for f in fields(ShapeStats)))
             for k in tables[0]}
    return table, ok
