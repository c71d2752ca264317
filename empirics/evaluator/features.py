"""The features table (Fig. 2 step 3, App. C): per task, the named features from its elements' geometry,
with the geometric Invalid reasons."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from empirics.data.tasks import Shape, Task, TaskSpec
from empirics.evaluator.box_profile import thin_extent
from empirics.evaluator.geometry import Element
from empirics.evaluator.morphology import plateau
from empirics.evaluator.pole import MAX_SHADOW_THICKNESS, SHARP_KERNEL, pole_geometry, shadow_far_end
from empirics.evaluator.reasons import Problem, Reason

THIN_BAR = 2.5              # px: Task B bars thinner than this are measured by the shape of their profile
TWO_ROWS = 0.02             # a thin profile's pixel with less than this x its peak holds none of the bar
CUT_SLACK = 0.25            # px: a square whose visible extent falls this short of its side is cut


def square_extents(el: Element, S: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
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
        height = plateau(cov.sum(1, dtype=np.float64))   # vertical extent per column
        width = plateau(cov.sum(2, dtype=np.float64))    # horizontal extent per row
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


Flag = Callable[[np.ndarray, Reason], None]   # flag(mask (n,), reason): mark those images Invalid


def _task_a(spec: TaskSpec, e: list[Element], S: int, luma: np.ndarray, exact: list[np.ndarray],
            flag: Flag) -> dict:
    """Task A's parts: the sun, the pole (``pole_geometry``) and the shadow strip's far end (px)."""
    sun, pole, shadow = e
    p = {"sun": sun, "shadow": shadow}
    p.update(pole_geometry(pole, shadow, np.where(exact[1][:, None, None], pole.cov, luma)))
    with np.errstate(invalid="ignore"):
        flag(~(p["above"] >= 1.0) | ~(p["pole_width"] >= 0.5 * S / 32), Reason(Problem.POLE_NOT_ABOVE_SHADOW))
        flag(~(shadow.dy <= MAX_SHADOW_THICKNESS * S), Reason(Problem.SHADOW_NOT_A_STRIP))
    # The shadow lies on the ground: its strip (beside, under or across the ground line) reaches
    # the pole's foot.
    tol = max(1.5, 0.05 * S)
    with np.errstate(invalid="ignore"):
        on_strip = np.abs(p["ground_y"] - shadow.cy) <= shadow.dy / 2 + tol
        flag(~on_strip, Reason(Problem.SHADOW_NOT_AT_FOOT))
    side = np.sign(shadow.cx - p["pole_x"])
    p["shadow_end"] = shadow_far_end(shadow, side, p["kernel"], p["kernel_shown"], p["pole_x"], p["pole_width"])
    flag(p["pole_top"] - sun.cy <= 0, Reason(Problem.SUN_NOT_ABOVE_POLE))
    return p


def _task_b(spec: TaskSpec, e: list[Element], S: int, luma: np.ndarray, exact: list[np.ndarray],
            flag: Flag) -> dict:
    """Task B's parts: the left and right bars (smaller / larger centre x), thin bars re-measured."""
    for el, element in zip(e, spec.elements):
        flag(thin_bar_extents(el), Reason(Problem.TOO_THIN, element.label))
    first_left = e[0].cx <= e[1].cx
    keys = ("cx", "cy", "dx", "dy")
    return {"left": {k: np.where(first_left, getattr(e[0], k), getattr(e[1], k)) for k in keys},
            "right": {k: np.where(first_left, getattr(e[1], k), getattr(e[0], k)) for k in keys}}


def _task_c(spec: TaskSpec, e: list[Element], S: int, luma: np.ndarray, exact: list[np.ndarray],
            flag: Flag) -> dict:
    """Task C's parts: the small (yellowish) and large (blue-green) circles, named by colour."""
    small, large = e
    return {"small": small, "large": large}


def _task_d(spec: TaskSpec, e: list[Element], S: int, luma: np.ndarray, exact: list[np.ndarray],
            flag: Flag) -> dict:
    """Task D's parts: side and centre of the top and bottom squares (smaller / larger centre y)."""
    (side0, cx0, cy0, corner0), (side1, cx1, cy1, corner1) = (square_extents(el, S) for el in e)
    for corner, element in zip((corner0, corner1), spec.elements):
        flag(corner, Reason(Problem.CUT_BY_BORDER, element.label))
    first_top = cy0 <= cy1
    return {"top": {"side": np.where(first_top, side0, side1), "x": np.where(first_top, cx0, cx1),
                    "y": np.where(first_top, cy0, cy1)},
            "bottom": {"side": np.where(first_top, side1, side0), "x": np.where(first_top, cx1, cx0),
                       "y": np.where(first_top, cy1, cy0)}}


def _left_edge(bar: dict) -> np.ndarray:
    return bar["cx"] - bar["dx"] / 2


# The features table, scikit-image ``regionprops`` style: per task, the function measuring its parts
# (px; it flags the geometric Invalid reasons) and one named entry per feature, read from those parts.
# The names and their order are ``TaskSpec.features`` (App. C; ``empirics.data.tasks``).
FEATURES: dict[Task, tuple[Callable[..., dict], dict[str, Callable[[dict], np.ndarray]]]] = {
    Task.A: (_task_a, {
        "l1": lambda p: np.abs(p["sun"].cx - p["pole_x"]),            # sun - pole axis, horizontally
        "h1": lambda p: p["pole_top"] - p["sun"].cy,                  # sun centre above the pole top
        "h2": lambda p: p["ground_y"] - p["pole_top"],                # pole height above its foot
        "l2": lambda p: np.abs(p["shadow_end"] - p["pole_x"]),        # pole axis - shadow's far end
        "sun_x": lambda p: p["sun"].cx,
        "sun_y": lambda p: p["sun"].cy,
        "sun_radius": lambda p: p["sun"].r,
        "pole_x": lambda p: p["pole_x"],
        "pole_top": lambda p: p["pole_top"],
        "pole_width": lambda p: p["pole_width"],
        "ground_y": lambda p: p["ground_y"],
        "shadow_end": lambda p: p["shadow_end"],
        "shadow_thickness": lambda p: p["shadow"].dy,
    }),
    Task.B: (_task_b, {
        "l1": lambda p: _left_edge(p["left"]),
        "h1": lambda p: p["left"]["dy"],
        "l2": lambda p: _left_edge(p["right"]),
        "h2": lambda p: p["right"]["dy"],
        "left_width": lambda p: p["left"]["dx"],
        "right_width": lambda p: p["right"]["dx"],
        "left_y": lambda p: p["left"]["cy"],
        "right_y": lambda p: p["right"]["cy"],
    }),
    Task.C: (_task_c, {
        "r_small": lambda p: p["small"].r,
        "r_large": lambda p: p["large"].r,
        "small_x": lambda p: p["small"].cx,
        "small_y": lambda p: p["small"].cy,
        "large_x": lambda p: p["large"].cx,
        "large_y": lambda p: p["large"].cy,
        "gap": lambda p: np.hypot(p["small"].cx - p["large"].cx, p["small"].cy - p["large"].cy)
        - p["small"].r - p["large"].r,
    }),
    Task.D: (_task_d, {
        "side_top": lambda p: p["top"]["side"],
        "side_bottom": lambda p: p["bottom"]["side"],
        "top_x": lambda p: p["top"]["x"],
        "top_y": lambda p: p["top"]["y"],
        "bottom_x": lambda p: p["bottom"]["x"],
        "bottom_y": lambda p: p["bottom"]["y"],
    }),
}


def task_features(spec: TaskSpec, e: list[Element], S: int, luma: np.ndarray,
                  exact: list[np.ndarray]) -> tuple[dict, list[list[Reason]]]:
    """The task's features (divided by S) from its elements' geometry (``FEATURES``), and geometric Invalid
    reasons.

    ``luma``: the images' luma ink (n, S, S); ``exact``: per element, (n,) whether its group's
    pixels are exact mixes of the element colours and white (then its coverage is exact)."""
    n = len(e[0].mass)
    bad: list[list[Reason]] = [[] for _ in range(n)]

    def flag(mask, reason: Reason):
        for i in np.flatnonzero(mask):
            bad[i].append(reason)

    for el, element in zip(e, spec.elements):
        flag(el.fit_failed, Reason(Problem.FIT_FAILED, element.label))
        if element.shape == Shape.RECT:
            flag(el.touches.any(1), Reason(Problem.CUT_BY_BORDER, element.label))
    parts, table = FEATURES[spec.task]
    p = parts(spec, e, S, luma, exact, flag)
    with np.errstate(invalid="ignore"):
        out = {k: np.asarray(table[k](p), np.float64) / S for k in spec.features}
        sane = np.all([np.isfinite(v) & (v > -0.5) & (v < 1.5) for v in out.values()], axis=0)
        sane &= np.all([out[k] > 0 for k in spec.positive], axis=0)
    flag(~sane, Reason(Problem.DEGENERATE))
    return out, bad


def thin_bar_extents(el: Element) -> np.ndarray:
    """Re-measure, in place, the thin extent of bars thinner than ``THIN_BAR`` px from the shape of their
    blurred profile (``empirics.evaluator.box_profile``); returns (n,) True where that extent is not identifiable.

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
