"""Task A by shape: the fallback pass when colour cannot separate the pole from the shadow."""

from __future__ import annotations

import math

import cv2
import numpy as np

from empirics.data.tasks import BLUE_GREEN, DARK, YELLOWISH, Shape
from empirics.evaluator.colour import (
    LUMA,
    RELAXED_TOLERANCE,
    RESTORE_WINDOW,
    colour_fits,
    element_colour,
    membership,
    restore_chroma,
)
from empirics.evaluator.geometry import measure_element
from empirics.evaluator.masks import REGION_INK, element_radius, min_pixels
from empirics.evaluator.morphology import dilate, erode, plateau
from empirics.evaluator.pole import MAX_SHADOW_THICKNESS, POLE_RIM, foot_integral
from empirics.evaluator.reasons import Problem, Reason


def task_a_by_shape(rgb: np.ndarray) -> tuple[dict | None, Reason | None]:
    """Task A fallback when colour cannot separate the pole from the shadow (one image, (S, S, 3)).

    JPEG chroma subsampling can leave a 2 px pole of a dark blue nearly as grey as the shadow, so
    no pixel classifies as blue-green. Here the pole and the shadow are found as one ink object and
    split by shape: the shadow band is the run of bottom rows wider than the pole, the pole is what
    rises above it. Each part's colour is then taken from ink sums over the part alone (which the
    chroma subsampling preserves) and must fall in its App. C family, so the colour rule is still
    checked, per element instead of per pixel. Returns (features in px, None) or (None, reason).
    """
    S = rgb.shape[0]
    radius = element_radius(S)
    min_px = min_pixels(S)
    one = rgb[None]
    ink = 1.0 - one
    inkmag = ink.sum(-1)
    sun_hard, why = _find_sun(ink, min_px)
    if why is not None:
        return None, why
    obj, b0, y_bot, why = _pole_and_shadow(inkmag, sun_hard, radius, min_px)
    if why is not None:
        return None, why
    yc = b0 - 1
    rows_idx = np.arange(S)[:, None]
    grown = dilate(obj[None], radius)[0] & ~dilate(sun_hard, radius)[0]
    pole_region = grown & (rows_idx < yc)
    pole_hard = obj & pole_region
    d_pole = element_colour(ink, pole_hard[None], np.zeros_like(sun_hard), radius)[0]
    a_pole = np.where(pole_region, (ink[0] @ d_pole) / (d_pole @ d_pole), 0.0)
    pos = np.arange(S) + 0.5
    rows_p = a_pole.sum(1)
    cols_p = a_pole.sum(0)
    pole_x = cols_p @ pos / cols_p.sum()
    width = plateau(rows_p[None])[0]
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
    d_sh = element_colour(ink, sh_colour[None], np.zeros_like(sun_hard), radius)[0]
    for d, family, name, part in ((d_pole, BLUE_GREEN, "pole", pole_hard), (d_sh, DARK, "shadow", sh_colour)):
        if not np.all(np.isfinite(d)):
            return None, Reason(Problem.MISSING, name)
        if not colour_fits(d, family, thin=not (part & erode(part[None])[0]).any()):
            return None, Reason(Problem.COLOUR_OUT_OF_RANGE, name, family=family.name)

    a_sh = np.where(sh_region, (ink[0] @ d_sh) / (d_sh @ d_sh), 0.0)
    rows_s, cols_s = a_sh.sum(1), a_sh.sum(0)
    thickness = plateau(cols_s[None])[0]
    # A strip with a row covered whole: its length is that row's ink; a thinner one (its ink level,
    # and so each row's coverage, unknown): area / thickness, in which the level cancels.
    thin = not (sh_colour & erode(sh_colour[None])[0]).any()
    length = a_sh.sum() / thickness if thin else plateau(rows_s[None])[0]
    shadow_end = x0 + side * length
    # The foot: the edge integral down the pole's half on the sun's side (as in pole_geometry).
    offset = (pole_x - pos) * side
    far = (offset > 0) & (offset <= width / 2 + 1.0)
    far_rows = (ink[0] @ LUMA)[:, far].sum(1)
    ground = foot_integral(far_rows[None], np.array([yc]), np.array([top]))[0][0]
    d_sun = element_colour(ink, sun_hard, np.zeros_like(sun_hard), radius)[0]
    sun_cov = np.where(dilate(sun_hard, radius), (ink @ d_sun) / (d_sun @ d_sun), 0.0).astype(np.float32)
    sun = measure_element(sun_cov, Shape.DISC, dilate(sun_hard, radius), radius)
    if sun.fit_failed[0]:
        return None, Reason(Problem.FIT_FAILED, "sun")
    f = {"sun_x": sun.cx[0], "sun_y": sun.cy[0], "sun_radius": sun.r[0], "pole_x": pole_x,
         "pole_width": width, "pole_top": top, "ground_y": ground, "shadow_end": shadow_end,
         "shadow_thickness": thickness}
    return _checked(f, S)


def _find_sun(ink: np.ndarray, min_px: int) -> tuple[np.ndarray | None, Reason | None]:
    """The sun's pixels (1, S, S): the one yellowish component (relaxed tolerances, chroma restored)."""
    seen = restore_chroma(ink, RESTORE_WINDOW)
    hsv = cv2.cvtColor(seen[0], cv2.COLOR_RGB2HSV)
    sun_m = membership(hsv[..., 0] * 0.5, hsv[..., 1] * 255.0, hsv[..., 2] * 255.0, YELLOWISH,
                       RELAXED_TOLERANCE)
    num, lab, stats, _ = cv2.connectedComponentsWithStats((sun_m >= 0.5).astype(np.uint8), connectivity=8)
    big = [j for j in range(1, num) if stats[j, cv2.CC_STAT_AREA] >= min_px]
    if len(big) != 1:
        return None, Reason(Problem.MISSING, "sun") if not big else Reason(Problem.TOO_MANY, "suns", len(big))
    return (lab == big[0])[None], None


def _pole_and_shadow(inkmag: np.ndarray, sun_hard: np.ndarray, radius: int,
                     min_px: int) -> tuple[np.ndarray | None, int, int, Reason | None]:
    """The pole-and-shadow ink object (S, S), the first row b0 of its shadow band (the run of bottom rows
    wider than the pole) and its last row, or a reason."""
    S = inkmag.shape[1]
    # Hysteresis: the object is the pixels with ink >= REGION_INK connected to pixels with twice
    # that, so a strip thinner than a pixel (faint rows) stays attached to the pole.
    not_sun = ~dilate(sun_hard, radius + 1)
    strong = ((inkmag >= 2 * REGION_INK) & not_sun)[0]
    num, lab, stats, _ = cv2.connectedComponentsWithStats(((inkmag >= REGION_INK) & not_sun)[0].astype(np.uint8),
                                                          connectivity=8)
    seeded = np.bincount(lab[strong], minlength=num) > 0
    big = [j for j in range(1, num) if seeded[j] and stats[j, cv2.CC_STAT_AREA] >= 3 * min_px]
    if len(big) != 1:
        return None, 0, 0, Reason(Problem.MISSING, "pole") if not big else Reason(Problem.NOT_ONE_OBJECT)
    obj = lab == big[0]
    widths = obj.sum(1)
    ys = np.flatnonzero(widths)
    y_top, y_bot = ys[0], ys[-1]
    pole_w = np.median(widths[y_top:max(y_top + 1, (y_top + y_bot) // 2 + 1)])
    band = widths >= pole_w + max(1.0, S / 32)
    if not band[y_bot] and not band[max(y_bot - 1, 0)]:
        return None, 0, 0, Reason(Problem.MISSING, "shadow")
    b0 = y_bot if band[y_bot] else y_bot - 1
    while b0 - 1 >= y_top and band[b0 - 1]:
        b0 -= 1
    if b0 - 1 - y_top < 2:
        return None, 0, 0, Reason(Problem.POLE_NOT_ABOVE_SHADOW)
    return obj, b0, y_bot, None


def _checked(f: dict, S: int) -> tuple[dict | None, Reason | None]:
    """The rule's features from the parts' (px) and the sanity checks of ``task_features``: (f, None) or
    (None, reason)."""
    width, thickness = f["pole_width"], f["shadow_thickness"]
    f["h2"] = f["ground_y"] - f["pole_top"]
    f["l1"] = abs(f["sun_x"] - f["pole_x"])
    f["h1"] = f["pole_top"] - f["sun_y"]
    f["l2"] = abs(f["shadow_end"] - f["pole_x"])
    if (not all(np.isfinite(v) and -0.5 * S < v < 1.5 * S for v in f.values())
            or not (width > 0.5 * S / 32 and f["l2"] > width / 2)
            or not 0 < thickness <= MAX_SHADOW_THICKNESS * S
            or f["h2"] <= 0):
        return None, Reason(Problem.DEGENERATE)
    if f["h1"] <= 0:
        return None, Reason(Problem.SUN_NOT_ABOVE_POLE)
    return f, None
