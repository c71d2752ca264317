"""Shape check: every element has the shape its task names (not in the paper; see the comment below)."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, fields

import numpy as np
from scipy.special import ndtr

from empirics.data.tasks import Task, TaskSpec
from empirics.evaluator.geometry import Element, disc_fit
from empirics.evaluator.reasons import Problem, Reason

# ---- Shape check (every element has the shape its task names) --------------------------------------
#
# Two models are fitted to each element's coverage (a window around it, read at 32 px scale): an
# edge-blurred disc amp * Phi((r - |p - c|) / s) (``disc_fit``) and the best separable map a(y) b(x)
# (rank 1, SVD), which is every axis-aligned rectangle however blurred (box filtering and Gaussian blur
# are separable). R_disc and R_sep are the fractions of the coverage's energy (sum of squares) each
# leaves unexplained, and ``separable_gain`` L = log10(R_disc / R_sep): a disc has L < 0, a rectangle
# L > 0. Ratios of extents tell squares from bars. Not in the paper (Fig. 2 only counts colour blobs),
# so that an image of the wrong task, or a model drawing the wrong shapes, is Invalid.
# Thresholds from ``benchmarks/shape_check.py`` (seed 11: 1000 renders per task, exact, blurred
# (sigma 0.5) and blurred + JPEG 75 (``degrade``); 300 per preset and downscaler of
# ``empirics.data.render_reference``), images valid apart from their shapes, extremes over each source:
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
SQUARE_ASPECT = 1.4         # Task D: a square's side ratio (extents, ``measure_element``) within [1/1.4, 1.4]
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
    ``measure_element``; Task A's pole: h2 / pole width), NaN for discs. NaN where an element has no coverage.
    """

    separable_gain: np.ndarray
    disc_residual: np.ndarray
    radius: np.ndarray
    elongation: np.ndarray
    aspect: np.ndarray

    def take(self, index) -> ShapeStats:
        return ShapeStats(*(getattr(self, f.name)[index] for f in fields(self)))


def shape_window(cov: np.ndarray, pad: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def shape_stats(cov: np.ndarray, aspect: np.ndarray, iters: int = 20) -> ShapeStats:
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
    win, xs, ys = shape_window(cov, SHAPE_PAD)
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
    p, _ = disc_fit(win, np.ones_like(win), xs, ys, p0, iters, scale=max(scale, 1.0))
    rho = np.hypot(xs[:, None, :] - p[:, 0, None, None], ys[:, :, None] - p[:, 1, None, None])
    model = p[:, 4, None, None] * ndtr((p[:, 2, None, None] - rho) / p[:, 3, None, None])
    r_disc = ((win - model) ** 2).sum((1, 2)) / energy
    eps = 1e-6              # relative energy: the floor of both residuals (exact renders reach ~1e-6)
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = np.log10((r_disc + eps) / (r_sep + eps))
        elong = np.sqrt(var_y / var_x)
    return ShapeStats(np.where(has, gain, np.nan), np.where(has, r_disc, np.nan),
                      np.where(has, np.sqrt(mass / np.pi) / scale, np.nan), np.where(has, elong, np.nan), aspect)


def shape_table(spec: TaskSpec, e: list[Element], features: dict[str, np.ndarray],
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
                table[element.name] = shape_stats(e[f].cov[idx], aspect)
    return table


def named_form(gain: float, ratio: float) -> Form:
    """What an element looks like: a circle if a disc explains it better (``gain`` < 0), else, by its
    height / width ``ratio``, a square, a (vertical) bar or a horizontal bar."""
    if not gain > 0:
        return Form.CIRCLE
    if 1 / NAMED_SQUARE <= ratio <= NAMED_SQUARE:
        return Form.SQUARE
    return Form.BAR if ratio > 1 else Form.HORIZONTAL_BAR


def shape_verdicts(spec: TaskSpec, table: dict[str, ShapeStats], touches: dict[str, np.ndarray],
                    ) -> list[list[Reason]]:
    """``Problem.WRONG_SHAPE`` reasons per image from a ``shape_table`` (thresholds: section comment);
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
                        add(j, name, named_form(st.separable_gain[j], st.elongation[j]))
                    elif st.disc_residual[j] > limit[j]:
                        add(j, name, Form.IRREGULAR)
            elif form is Form.VERTICAL_STRIP:
                for j in np.flatnonzero(~(st.aspect >= POLE_ASPECT)):
                    add(j, name, named_form(1.0, st.aspect[j]))
            else:
                for j in np.flatnonzero(st.separable_gain < SEPARABLE_GAIN_RECT):
                    add(j, name, Form.CIRCLE)
            if form is Form.SQUARE:
                off = ~touches[name] & ~(np.abs(np.log(st.aspect)) <= math.log(SQUARE_ASPECT))
                for j in np.flatnonzero(off & (st.separable_gain >= SEPARABLE_GAIN_RECT)):
                    add(j, name, named_form(1.0, st.aspect[j]))
        if spec.task is Task.B:
            names = [el.name for el in spec.elements]
            ratios = np.stack([table[k].aspect for k in names])
            taller = np.argmax(np.nan_to_num(ratios, nan=-1.0), axis=0)
            best = ratios[taller, np.arange(m)]
            for j in np.flatnonzero(~(best >= BAR_ASPECT)):
                add(j, names[taller[j]], named_form(1.0, best[j]))
    return bad


def shape_reasons(spec: TaskSpec, e: list[Element], features: dict[str, np.ndarray],
                   todo: np.ndarray) -> list[list[Reason]]:
    """``Problem.WRONG_SHAPE`` reasons (n images) for the images ``todo`` (bool[n]) whose elements do not
    have the shape their task names (``EXPECTED_FORM``); the others get none."""
    bad: list[list[Reason]] = [[] for _ in range(len(todo))]
    idx = np.flatnonzero(todo)
    if idx.size:
        touches = {el.name: e[f].touches[idx].any(1) for f, el in enumerate(spec.elements)}
        for j, reasons in zip(idx, shape_verdicts(spec, shape_table(spec, e, features, idx), touches)):
            bad[j] = reasons
    return bad
