"""Synthetic Tasks A-D of Section 3.1.2 and App. C, rendered with exact anti-aliasing.

``generate(task, n, size=32, seed=0) -> TaskBatch`` draws the ground-truth parameters of each task
with a seeded ``numpy.random.Generator`` and renders RGB images on a white background. Every
element is drawn with its exact box-filtered pixel coverage (rectangles analytically; discs
integrated over 16 sub-columns per pixel and exactly along each sub-column), which is the limit
of supersampled rendering: features are continuous, not integer pixels. Pixel colour =
white - sum_e coverage_e * (white - colour_e); the elements never overlap, so this is the exact
area-weighted mix. Colours are drawn uniformly from App. C's HSV ranges in OpenCV units
(H in [0, 180), S and V in [0, 255]) and converted to RGB with OpenCV.

Fine rules (our readings of App. C; features are lengths divided by the image size)::

    task  x                 y                  slope k   coarse rule
    A     l1 * h2           l2 * h1            1         sun and shadow on opposite sides of the pole
    B     l1 * h1           l2 * h2            1         left rectangle taller: h1 > h2
    C     r_small           r_large            sqrt(2)   distinct radii
    D     side_top          side_bottom        1.5       top square smaller: side_top < side_bottom

Task A (App. C, eq. (8)). A pole of height h2 ~ U[20 %, 40 %] of the image stands on the ground
line at the horizontal centre; the sun's height above the ground is 2*h2 clipped to [30 %, 80 %];
h1 = sun height - h2 is the vertical distance from the sun centre to the pole top; l1 is the
horizontal sun-pole distance and the shadow length is l2 = h2*l1/h1 (eq. (8)), on the side
opposite the sun. With h2 in [20 %, 40 %] the clip never binds, so the paper's recipe gives
h1 = h2 and l2 = l1 exactly; we keep it (the rule l1*h2 = l2*h1 holds either way).
Adjusted ranges (the paper's would degenerate or leave the frame): App. C's sun positions
0-6 | 26-32 px ("far") and 10-16 | 16-22 px ("near") at 32 px mean sun-pole distances 10-16 and
0-6 px. A distance of 16 px puts the shadow's end on the image border and a distance near 0 gives
no shadow at all (and no side to check the coarse rule on), so we draw the distance from
[10, 15] px ("far") or [3, 6] px ("near") with equal probability, on either side, all scaled by
size/32. Sizes the paper does not give (at 32 px, scaled with the image): pole width 2 px, sun
radius 3 px, ground line at y = 28 px, shadow a 3 px thick strip lying on the ground from the
pole's foot to its end point. Far suns are cut by the image border (as in the paper's figures);
the evaluator measures them from their visible arc.

Task B (Section 3.1.2 vs App. C). The main text says the rectangle lengths are *proportional* to
their distance from the viewpoint (l1*h2 = l2*h1) while the coarse rule and the perspective
picture say the farther rectangle is shorter; App. C's formula l1*h1 = h2*l2 is the consistent
one, with l = distance of a rectangle's left edge from the left image edge (the viewpoint) and
h = its height, i.e. height proportional to 1/distance. App. C also swaps names (l2 is a height
there). Ranges (App. C: left edge in [0, 30 %], left height in [20 %, 60 %], right edge in
[l1 + 20 %, 80 %]): a left edge at 0 makes h2 = 0, so l1 ~ U[12.5 %, 30 %]; h1 ~ U[20 %, 60 %];
l2 ~ U[l1 + 20 %, min(80 %, l1*h1/6.25 %)] so that h2 = l1*h1/l2 >= 6.25 % (2 px at 32 px).
Not in the paper: both rectangles are 12.5 % wide and centred on a common horizon line at
U[40 %, 60 %] of the height; the left one is yellowish, the right one blue-green.

Task C (Section 3.1.2 vs App. C). App. C draws the *large* circle's diameter in [10 %, 30 %] and
makes the *small* one sqrt(2) times larger, a contradiction; the main text's r2 = sqrt(2)*r1 with
r1 the small radius is the consistent reading: the small (yellowish) circle's diameter is drawn
from [10 %, 30 %] of the image and the large (blue-green) circle has sqrt(2) times its radius.
The small circle touches the large one on its left, right, top or bottom (equal probability);
the large circle's centre is uniform over the positions that keep both circles at least
1/32 of the image from the border.

Task D (App. C). The small (yellowish) square's side is a fraction of the top half's height,
App. C: [30 %, 70 %] of the top half, i.e. [15 %, 35 %] of the image; the large (blue-green) square
has 1.5 times that side, which would not fit in the bottom half (52.5 % > 50 %), so we draw the
small side from [15 %, 28 %] of the image (large <= 42 %). Each square is uniform over the
positions inside its half, at least 1/32 of the image from the border and from the middle line.

Negative controls (tests, contrastive data): ``fine_factor`` multiplies the dependent quantity
so that y/x = fine_factor * k, and ``violate_coarse=True`` breaks the coarse rule (A: shadow on the
sun's side; B: heights swapped; C: equal radii; D: top square 1.5 times the bottom one). A scalar
factor lies in ``FINE_FACTOR_RANGE``; a per-image array (the contrastive data of App. G.1,
``empirics.data.contrastive``) may range over the open interval ``FINE_FACTOR_LIMITS[task]``, beyond which
the task could not be drawn with its coarse rule intact and every element visible in the frame:

    task  lower limit: below it ...                        upper limit: above it ...
    A     2/3: a near sun's shadow (l2 = f l1, l1 >= 3 px)  3: a near sun's distance (3/f px, the sun
          sticks out of the 2 px pole by < 1 px            moves in so that the shadow stays in frame)
                                                           is inside the pole's half width (1 px)
    B     0.5: the right bar's floor f * 2 px is < 1 px     5/3: h2 / h1 = f l1 / l2 (<= 0.6 f) can reach 1
    C     1/(0.95 sqrt(2)) = 0.744: radii within            5.92: the small circle's range [5 %, hi]
          COARSE_C_RTOL of each other                      is empty (both circles must fit)
    D     2/3: the top square is not the smaller one      1.94: a 15 % top square's bottom square
                                                           (1.5 f times it) does not fit its half

Where f > 1 needs room, the sampler makes it the same way as for a scalar factor: A scales the sun
distance by 1/f (the shadow keeps its range), C and D lower the small element's upper bound. Image i
depends only on (task, size, seed, i, fine_factor[i]).
"""

from __future__ import annotations

import enum
import math
import zlib
from dataclasses import dataclass

import cv2
import numpy as np

from empirics._checks import check_choice, check_int, check_real

__all__ = [
    "Task", "HSVRange", "FactorLimits", "FINE_FACTOR_RANGE", "FINE_FACTOR_LIMITS",
    "YELLOWISH", "BLUE_GREEN", "DARK", "TARGET_SLOPE", "TRAIN_SIZES",
    "ELEMENTS", "RULE_FEATURES", "SPECS", "TaskSpec", "Element", "Shape", "COARSE_C_RTOL",
    "fine_xy", "coarse_rule", "feature_values", "sample_params",
]


class Task(str, enum.Enum):
    """The four synthetic tasks of Section 3.1.2."""

    A = "A"
    B = "B"
    C = "C"
    D = "D"

    @classmethod
    def parse(cls, task) -> Task:
        return check_choice("task", task, cls)


@dataclass(frozen=True)
class HSVRange:
    """An App. C colour range in OpenCV units: hue in [0, 180), saturation and value in [0, 255]."""

    name: str
    hue: tuple[float, float]
    sat: tuple[float, float]
    val: tuple[float, float]

    def contains(self, hsv, slack: float = 4.0):
        """Whether HSV colours (OpenCV units, [..., 3]) lie in this box widened by ``slack`` units (half
        of it on the hue), which absorbs the uint8 rounding of a drawn colour."""
        h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
        (h0, h1), (s0, s1), (v0, v1) = self.hue, self.sat, self.val
        return ((h >= h0 - slack / 2) & (h <= h1 + slack / 2) & (s >= s0 - slack) & (s <= s1 + slack)
                & (v >= v0 - slack) & (v <= v1 + slack))


# App. C's colour families.
YELLOWISH = HSVRange("yellowish", (0, 30), (100, 255), (200, 255))
BLUE_GREEN = HSVRange("blue-green", (90, 150), (100, 255), (100, 255))
DARK = HSVRange("dark", (0, 179), (0, 50), (50, 150))

class Shape(str, enum.Enum):
    """How the evaluator measures an element: a disc (centre, radius), an axis-aligned rectangle, or
    a square (a rectangle whose one side gives the other, so a border may cut it)."""

    DISC = "disc"
    RECT = "rect"
    SQUARE = "square"


@dataclass(frozen=True)
class Element:
    """One object of a task: its name in the ground truth, its App. C colour family and its shape.

    ``label``/``plural`` name it in Invalid reasons ("missing sun", "2 yellowish rectangles");
    elements of one ``group`` may touch each other (the evaluator unmixes their coverage jointly).
    """

    name: str
    family: HSVRange
    shape: Shape
    label: str
    plural: str
    group: int


@dataclass(frozen=True)
class TaskSpec:
    """Everything the rest of the package knows about a task: its elements, features and rules.

    ``features``: the lengths and positions the evaluator measures (divided by the image size), in
    order; ``positive``: those that are lengths and must be > 0; ``rule_features``: the lengths the
    fine rule y = ``slope`` * x is made of (``fine_xy``); ``coarse``: the coarse rule in words
    (``coarse_rule``). The generator's ground truth holds every feature plus ``extra_lengths``.
    """

    task: Task
    elements: tuple[Element, ...]
    features: tuple[str, ...]
    positive: tuple[str, ...]
    rule_features: tuple[str, ...]
    slope: float
    coarse: str
    extra_lengths: tuple[str, ...] = ()

    @property
    def lengths(self) -> tuple[str, ...]:
        return self.features + self.extra_lengths


def _element(name, family, shape, label, group):
    return Element(name, family, shape, label, label + "s", group)


SPECS: dict[Task, TaskSpec] = {
    Task.A: TaskSpec(
        Task.A,
        (_element("sun", YELLOWISH, Shape.DISC, "sun", 0), _element("pole", BLUE_GREEN, Shape.RECT, "pole", 1),
         _element("shadow", DARK, Shape.RECT, "shadow", 1)),
        features=("l1", "h1", "h2", "l2", "sun_x", "sun_y", "sun_radius", "pole_x", "pole_top", "pole_width",
                  "ground_y", "shadow_end", "shadow_thickness"),
        positive=("h2", "pole_width", "shadow_thickness", "sun_radius"),
        rule_features=("l1", "h1", "h2", "l2"), slope=1.0,
        coarse="the sun and the shadow's end lie on opposite sides of the pole",
        extra_lengths=("sun_height",)),
    Task.B: TaskSpec(
        Task.B,
        (_element("left", YELLOWISH, Shape.RECT, "yellowish rectangle", 0),
         _element("right", BLUE_GREEN, Shape.RECT, "blue-green rectangle", 1)),
        features=("l1", "h1", "l2", "h2", "left_width", "right_width", "left_y", "right_y"),
        positive=("h1", "h2", "left_width", "right_width"),
        rule_features=("l1", "h1", "l2", "h2"), slope=1.0,
        coarse="the left rectangle is taller (h1 > h2)"),
    Task.C: TaskSpec(
        Task.C,
        (_element("small", YELLOWISH, Shape.DISC, "yellowish circle", 0),
         _element("large", BLUE_GREEN, Shape.DISC, "blue-green circle", 0)),
        features=("r_small", "r_large", "small_x", "small_y", "large_x", "large_y", "gap"),
        positive=("r_small", "r_large"),
        rule_features=("r_small", "r_large"), slope=math.sqrt(2.0),
        coarse="the radii differ (by more than COARSE_C_RTOL of the larger)"),
    Task.D: TaskSpec(
        Task.D,
        (_element("top", YELLOWISH, Shape.SQUARE, "yellowish square", 0),
         _element("bottom", BLUE_GREEN, Shape.SQUARE, "blue-green square", 1)),
        features=("side_top", "side_bottom", "top_x", "top_y", "bottom_x", "bottom_y"),
        positive=("side_top", "side_bottom"),
        rule_features=("side_top", "side_bottom"), slope=1.5,
        coarse="the top square is smaller (side_top < side_bottom)"),
}

# Views of SPECS under the names the rest of the package and its users know.
TARGET_SLOPE: dict[Task, float] = {t: s.slope for t, s in SPECS.items()}
# Element names and colour families, in drawing order.
ELEMENTS: dict[Task, tuple[tuple[str, HSVRange], ...]] = {
    t: tuple((e.name, e.family) for e in s.elements) for t, s in SPECS.items()}
# The lengths the fine rule is made of (Fig. 3's feature errors, App. D.2's memorization space).
RULE_FEATURES: dict[Task, tuple[str, ...]] = {t: s.rule_features for t, s in SPECS.items()}
# Training-set sizes of Section 3.2 / App. D.1.
TRAIN_SIZES: dict[Task, int] = {Task.A: 4000, Task.B: 2000, Task.C: 2000, Task.D: 2000}

# Geometry in units of the image size (32 px -> multiply by 32).
A_POLE_HEIGHT = (0.2, 0.4)           # App. C
A_SUN_HEIGHT_CLIP = (0.3, 0.8)       # App. C: sun height = 2 * pole height, clipped
A_FAR = (10 / 32, 15 / 32)           # App. C: 10-16 px from the pole; ours ends at 15 px (shadow in frame)
A_NEAR = (3 / 32, 6 / 32)            # App. C: 0-6 px; ours starts at 3 px (a visible shadow)
A_POLE_X, A_GROUND_Y = 0.5, 28 / 32
A_POLE_WIDTH, A_SHADOW_THICKNESS, A_SUN_RADIUS = 2 / 32, 3 / 32, 3 / 32
B_WIDTH = 0.125
B_L1 = (0.125, 0.3)                  # App. C: [0, 0.3]
B_H1 = (0.2, 0.6)                    # App. C
B_GAP, B_L2_MAX, B_H2_MIN = 0.2, 0.8, 0.0625
B_HORIZON = (0.4, 0.6)
C_R_SMALL = (0.05, 0.15)             # diameter 10-30 % of the image (App. C)
MARGIN = 1 / 32
D_SIDE_TOP = (0.15, 0.28)            # App. C: 30-70 % of the top half = [0.15, 0.35]
# Task C's coarse rule: measured radii are never exactly equal, so "distinct" means by more than 5 %.
COARSE_C_RTOL = 0.05

FINE_FACTOR_RANGE = (0.5, 1.5)           # a scalar fine_factor


@dataclass(frozen=True)
class FactorLimits:
    """Open interval (lo, hi) of per-image fine factors y/(k x) a task can draw (module docstring);
    ``below`` / ``above`` say what would break beyond it."""

    lo: float
    hi: float
    below: str
    above: str


FINE_FACTOR_LIMITS: dict[Task, FactorLimits] = {
    Task.A: FactorLimits((A_POLE_WIDTH / 2 + MARGIN) / A_NEAR[0], A_NEAR[0] / (A_POLE_WIDTH / 2),
                         "a near sun's shadow would stick out of the pole by less than 1/32 of the image",
                         "a near sun's centre would reach the pole (no side for the coarse rule)"),
    Task.B: FactorLimits(0.5, (B_L1[1] + B_GAP) / B_L1[1],          # 0.5: h2 >= B_H2_MIN / 2
                         "the right bar could be thinner than half its floor (1 px at 32 px)",
                         "the right bar could be as tall as the left one (coarse rule h1 > h2)"),
    Task.C: FactorLimits(1.0 / ((1.0 - COARSE_C_RTOL) * math.sqrt(2.0)),
                         ((0.5 - MARGIN) / C_R_SMALL[0] - 1.0) / math.sqrt(2.0),
                         "the radii could differ by less than COARSE_C_RTOL (coarse rule)",
                         "the two circles would not fit in the frame"),
    Task.D: FactorLimits(1.0 / TARGET_SLOPE[Task.D], (0.5 - 2 * MARGIN) / (D_SIDE_TOP[0] * TARGET_SLOPE[Task.D]),
                         "the top square could be as large as the bottom one (coarse rule)",
                         "the bottom square would not fit in the bottom half"),
}


def _stream(seed: int, task: Task, name: str) -> np.random.Generator:
    """One independent stream per (seed, task, parameter): image i does not depend on n."""
    return np.random.default_rng([seed, ord(task.value), zlib.crc32(name.encode())])


def _uniform(seed, task, name, n, lo, hi):
    return lo + (hi - lo) * _stream(seed, task, name).random(n)


def _colours(seed: int, task: Task, element: str, family: HSVRange, n: int) -> dict[str, np.ndarray]:
    """Uniform HSV in the family's App. C box (OpenCV units, integers), converted to RGB."""
    hsv = np.empty((n, 3), np.float64)
    for j, (key, (lo, hi)) in enumerate(zip(("hue", "sat", "val"), (family.hue, family.sat, family.val))):
        hsv[:, j] = np.rint(_uniform(seed, task, f"{element}_{key}", n, lo, hi))
    rgb = cv2.cvtColor(hsv.astype(np.uint8)[:, None, :], cv2.COLOR_HSV2RGB)[:, 0, :].astype(np.float64)
    out = {f"{element}_{k}": hsv[:, j] for j, k in enumerate(("hue", "sat", "val"))}
    out.update({f"{element}_{k}": rgb[:, j] for j, k in enumerate(("red", "green", "blue"))})
    return out


def _sample_a(seed, n, size, fine_factor, violate_coarse):
    t = Task.A
    h2 = _uniform(seed, t, "h2", n, *A_POLE_HEIGHT) * size
    sun_height = np.clip(2.0 * h2, A_SUN_HEIGHT_CLIP[0] * size, A_SUN_HEIGHT_CLIP[1] * size)
    h1 = sun_height - h2
    far = _stream(seed, t, "far").random(n) < 0.5
    side = np.where(_stream(seed, t, "side").random(n) < 0.5, -1.0, 1.0)
    u = _stream(seed, t, "distance").random(n)
    # Keep the shadow's end inside the frame when the shadow is lengthened (fine_factor > 1).
    shrink = np.minimum(1.0, 1.0 / fine_factor)
    lo = np.where(far, A_FAR[0], A_NEAR[0]) * size * shrink
    hi = np.where(far, A_FAR[1], A_NEAR[1]) * size * shrink
    l1 = lo + (hi - lo) * u
    l2 = fine_factor * h2 * l1 / h1                                     # eq. (8)
    pole_x, ground = A_POLE_X * size, A_GROUND_Y * size
    shadow_side = side if violate_coarse else -side
    def full(v):
        return np.full(n, v)

    p = {"h2": h2, "h1": h1, "l1": l1, "l2": l2, "sun_height": sun_height, "sun_x": pole_x + side * l1,
         "sun_y": ground - sun_height, "sun_radius": full(A_SUN_RADIUS * size), "pole_x": full(pole_x),
         "pole_top": ground - h2, "pole_width": full(A_POLE_WIDTH * size), "ground_y": full(ground),
         "shadow_end": pole_x + shadow_side * l2, "shadow_thickness": full(A_SHADOW_THICKNESS * size)}
    flags = {"sun_side": side, "shadow_side": shadow_side, "far": far.astype(np.float64)}
    return p, flags


def _sample_b(seed, n, size, fine_factor, violate_coarse):
    t = Task.B
    l1 = _uniform(seed, t, "l1", n, *B_L1)
    h1 = _uniform(seed, t, "h1", n, *B_H1)
    l2_lo = l1 + B_GAP
    l2_hi = np.minimum(B_L2_MAX, l1 * h1 / B_H2_MIN)
    l2 = l2_lo + (l2_hi - l2_lo) * _stream(seed, t, "l2").random(n)
    h2 = fine_factor * l1 * h1 / l2                                     # l1 h1 = l2 h2 (App. C)
    if violate_coarse:
        h1, h2 = h2, h1
    horizon = _uniform(seed, t, "horizon", n, *B_HORIZON)
    p = {"l1": l1, "h1": h1, "l2": l2, "h2": h2, "left_width": np.full(n, B_WIDTH),
         "right_width": np.full(n, B_WIDTH), "left_y": horizon, "right_y": horizon}
    return {k: v * size for k, v in p.items()}, {}


def _sample_c(seed, n, size, fine_factor, violate_coarse):
    t = Task.C
    factor = 1.0 if violate_coarse else fine_factor * TARGET_SLOPE[Task.C]
    # Both circles must fit: 2 (r_large + r_small) + 2 margin <= 1.
    hi = np.minimum(C_R_SMALL[1], (0.5 - MARGIN) / (1.0 + factor))
    rs = _uniform(seed, t, "r_small", n, C_R_SMALL[0], hi)
    rl = factor * rs
    direction = _stream(seed, t, "direction").integers(0, 4, n)       # left, right, top, bottom
    dx = np.array([-1.0, 1.0, 0.0, 0.0])[direction]
    dy = np.array([0.0, 0.0, -1.0, 1.0])[direction]
    # Large centre range along each axis so that both discs keep the margin.
    ext_lo_x = np.maximum(rl, -dx * (rl + 2 * rs))
    ext_hi_x = np.maximum(rl, dx * (rl + 2 * rs))
    ext_lo_y = np.maximum(rl, -dy * (rl + 2 * rs))
    ext_hi_y = np.maximum(rl, dy * (rl + 2 * rs))
    ux, uy = _stream(seed, t, "x").random(n), _stream(seed, t, "y").random(n)
    lx = MARGIN + ext_lo_x + ux * (1 - 2 * MARGIN - ext_lo_x - ext_hi_x)
    ly = MARGIN + ext_lo_y + uy * (1 - 2 * MARGIN - ext_lo_y - ext_hi_y)
    p = {"r_small": rs, "r_large": rl, "large_x": lx, "large_y": ly, "small_x": lx + dx * (rl + rs),
         "small_y": ly + dy * (rl + rs), "gap": np.zeros(n)}
    return {k: v * size for k, v in p.items()}, {"direction": direction.astype(np.float64)}


def _sample_d(seed, n, size, fine_factor, violate_coarse):
    t = Task.D
    factor = 1.0 / 1.5 if violate_coarse else fine_factor * TARGET_SLOPE[Task.D]
    room = 0.5 - 2 * MARGIN
    hi = np.minimum(D_SIDE_TOP[1], room / np.maximum(factor, 1.0))
    a = _uniform(seed, t, "side_top", n, D_SIDE_TOP[0], hi)
    b = factor * a
    tx = MARGIN + a / 2 + (1 - 2 * MARGIN - a) * _stream(seed, t, "top_x").random(n)
    ty = MARGIN + a / 2 + (room - a) * _stream(seed, t, "top_y").random(n)
    bx = MARGIN + b / 2 + (1 - 2 * MARGIN - b) * _stream(seed, t, "bottom_x").random(n)
    by = 0.5 + MARGIN + b / 2 + (room - b) * _stream(seed, t, "bottom_y").random(n)
    p = {"side_top": a, "side_bottom": b, "top_x": tx, "top_y": ty, "bottom_x": bx, "bottom_y": by}
    return {k: v * size for k, v in p.items()}, {}


_SAMPLERS = {Task.A: _sample_a, Task.B: _sample_b, Task.C: _sample_c, Task.D: _sample_d}


def fine_xy(task, features) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of the fine rule y = k x from features normalised by the image size (table above)."""
    task = Task.parse(task)
    f = features
    if task is Task.A:
        return f["l1"] * f["h2"], f["l2"] * f["h1"]
    if task is Task.B:
        return f["l1"] * f["h1"], f["l2"] * f["h2"]
    if task is Task.C:
        return f["r_small"], f["r_large"]
    return f["side_top"], f["side_bottom"]


def feature_values(features, key: str) -> np.ndarray:
    """``features[key]`` as float64, or a ValueError naming the missing feature."""
    if key not in features:
        raise ValueError(f"features must contain {key!r}")
    return np.asarray(features[key], dtype=np.float64)


def coarse_rule(task, features) -> np.ndarray:
    """True where the coarse rule holds (Section 3.1.2); False where it fails or features are NaN.

    A: sun and shadow end on opposite sides of the pole; B: left rectangle taller (h1 > h2);
    C: distinct radii (|r_large - r_small| > 5 % of the larger); D: top square smaller.
    """
    task = Task.parse(task)
    with np.errstate(invalid="ignore"):
        if task is Task.A:
            pole = feature_values(features, "pole_x")
            sun_side = np.sign(feature_values(features, "sun_x") - pole)
            ok = sun_side * np.sign(feature_values(features, "shadow_end") - pole) < 0
        elif task is Task.B:
            ok = feature_values(features, "h1") > feature_values(features, "h2")
        elif task is Task.C:
            rs, rl = feature_values(features, "r_small"), feature_values(features, "r_large")
            ok = np.abs(rl - rs) > COARSE_C_RTOL * np.maximum(rl, rs)
        else:
            ok = feature_values(features, "side_top") < feature_values(features, "side_bottom")
    return np.asarray(ok, bool)


def _check_fine_factor(task: Task, fine_factor, n: int) -> float | np.ndarray:
    """A scalar in ``FINE_FACTOR_RANGE``, or a finite (n,) array inside ``FINE_FACTOR_LIMITS[task]``."""
    if np.ndim(fine_factor) == 0:
        return check_real("fine_factor", fine_factor, *FINE_FACTOR_RANGE)
    lim = FINE_FACTOR_LIMITS[task]
    allowed = (f"fine_factor must be a number in [{FINE_FACTOR_RANGE[0]}, {FINE_FACTOR_RANGE[1]}] or a finite "
               f"array of shape ({n},) with values in ({lim.lo:.4g}, {lim.hi:.4g}) for task {task.value}")
    f = np.asarray(fine_factor)
    if f.shape != (n,) or f.dtype == bool or not np.issubdtype(f.dtype, np.number):
        raise ValueError(f"{allowed}, got {f.dtype} array of shape {f.shape}")
    f = f.astype(np.float64)
    if not np.all(np.isfinite(f)):
        raise ValueError(f"{allowed}, got non-finite values")
    if f.min() <= lim.lo:
        raise ValueError(f"{allowed}, got min {f.min():.4g}: at f <= {lim.lo:.4g} {lim.below}")
    if f.max() >= lim.hi:
        raise ValueError(f"{allowed}, got max {f.max():.4g}: at f >= {lim.hi:.4g} {lim.above}")
    return f


def sample_params(task, n: int, size: int = 32, seed: int = 0, *, fine_factor: float | np.ndarray = 1.0,
                  violate_coarse: bool = False) -> dict[str, np.ndarray]:
    """Ground-truth parameters of ``n`` images (see the module docstring for the ranges).

    ``fine_factor``: one factor for all images (in ``FINE_FACTOR_RANGE``) or one per image, an (n,)
    array inside ``FINE_FACTOR_LIMITS[task]`` (App. G.1 contrastive data); y/x = fine_factor * k.
    Lengths appear twice: ``"<key>_px"`` in pixels and ``"<key>"`` divided by ``size``. Colours are
    ``"<element>_{hue,sat,val}"`` (OpenCV HSV) and ``"<element>_{red,green,blue}"`` (0-255).
    ``"x"``, ``"y"``, ``"ratio"`` = y/x and ``"k"`` give the fine rule.
    """
    task = Task.parse(task)
    n = check_int("n", n, 1)
    size = check_int("size", size, 16, 512)
    seed = check_int("seed", seed, 0)
    fine_factor = _check_fine_factor(task, fine_factor, n)
    if not isinstance(violate_coarse, bool | np.bool_):
        raise ValueError(f"violate_coarse must be a bool, got {violate_coarse!r}")
    px, flags = _SAMPLERS[task](seed, n, size, fine_factor, bool(violate_coarse))
    params: dict[str, np.ndarray] = {}
    for key in SPECS[task].lengths:
        params[f"{key}_px"] = np.asarray(px[key], np.float64)
        params[key] = params[f"{key}_px"] / size
    params.update({k: np.asarray(v, np.float64) for k, v in flags.items()})
    for element, family in ELEMENTS[task]:
        params.update(_colours(seed, task, element, family, n))
    x, y = fine_xy(task, params)
    params["x"], params["y"], params["ratio"] = x, y, y / x
    params["k"] = np.full(n, TARGET_SLOPE[task])
    return params
