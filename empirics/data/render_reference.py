"""An independent second renderer of Tasks A-D (App. C), to check the evaluator on images it did not make.

Why it exists. ``hidden-rules eval`` promises to measure *any* model's samples, but the evaluator
(``empirics.evaluate``) has been developed against one renderer (``empirics.tasks``) and may have
learnt its conventions (where a shadow strip sits, how thin an element gets, how edges are
anti-aliased and downsampled). This module draws the same four tasks a second way, written from
App. C's text and not from ``empirics.tasks``: it shares only the *names* of the rule features, the
fine-rule definitions (``fine_xy``, ``TARGET_SLOPE``) and App. C's element colour families
(``ELEMENTS``), so that ``benchmarks/evaluator.py`` can compare the evaluator's measurements with
this renderer's ground truth.

How it draws. matplotlib patches (``Circle``, ``Rectangle``; no outline, anti-aliased, not snapped
to pixels) on a continuous unit canvas, rendered by the Agg vector rasteriser at ``hi_res`` pixels
(default ``HI_RES`` = 770, dpi 100; one ``Figure`` + ``FigureCanvasAgg`` per call, its artists updated
per image, no pyplot state), then downscaled to 32 or 64 px by

* ``Downscaler.PIL_BILINEAR`` (default): ``PIL.Image.resize(..., Image.BILINEAR)``. On a downscale
  PIL widens the triangle filter to the scale factor, so each output pixel is a tent-weighted average
  over two output pixels' worth of input: edges come out softer than an area average;
* ``Downscaler.CV2_AREA``: OpenCV ``INTER_AREA`` (box average over the output pixel's footprint).

White background; colours drawn uniformly from App. C's HSV boxes (OpenCV units: H in [0, 180),
S and V in [0, 255]) and converted to RGB by ``hsv_to_rgb`` (the standard hexcone formula).
Seeding: one ``numpy.random.default_rng(seed)``, drawn image by image, so image i of a seed is the
same whatever n is.

Units of the ground truth (``ReferenceBatch.params``, float64[N]): every length and position is a
fraction of the canvas side; x runs right from the left edge and y runs *down* from the top edge
(like image rows); positions of circles and squares are their centres. The rule features carry the
evaluator's names (``empirics.tasks.RULE_FEATURES``) and ``x``, ``y``, ``ratio``, ``k`` are the fine rule
of ``empirics.tasks.fine_xy`` (A: x = l1 h2, y = l2 h1, k = 1; B: x = l1 h1, y = l2 h2, k = 1;
C: x = r_small, y = r_large, k = sqrt(2); D: x = side_top, y = side_bottom, k = 1.5). Every image obeys
its fine and coarse rule exactly in continuous geometry (the dependent length is computed from the
others); only rasterisation and downscaling stand between the geometry and the pixels.

Geometry (App. C where it speaks; the rest is this renderer's own choice, marked "ours here"):

* Task A (eq. (8)). Pole at the horizontal centre (App. C's sun intervals are symmetric about
  16 px of 32), height h2 ~ U[20 %, 40 %]; the sun's height above the ground is 2 h2 clipped to
  [30 %, 80 %], so h1 = sun height - h2 (sun centre above the pole top). The sun-pole distance l1 is
  "far" (App. C: sun at 0-6 or 26-32 px, i.e. 10-16 px from the pole) or "near" (10-16 / 16-22 px,
  i.e. 0-6 px) with equal probability, on either side; the shadow runs from the pole's axis to
  l2 = l1 h2 / h1 on the other side. Ours here: ground line 9-12 % of the canvas above the bottom
  edge, pole width 5-8 %, sun radius 5-7.5 %; a far distance stops where the shadow (or, with the
  sun kept inside, the sun) would leave the canvas, a near one starts where the shadow reaches
  ``shadow_beyond_pole`` past the pole's edge.
* Task B. Left edges l1 ~ U[1/32, 30 %] (App. C: [0, 30 %]; 0 would make h2 = 0), l2 ~
  U[l1 + 20 %, 80 %]; left height h1 ~ U[20 %, 60 %]; right height h2 = l1 h1 / l2 (App. C's
  l1 h1 = h2 l2 with its names for heights and edges made consistent), redrawn until h2 falls in
  ``right_bar_height``. Ours here: widths 7-12 %, both bars standing on one baseline 15-30 % above
  the bottom edge.
* Task C. App. C gives the *large* circle's diameter, 10-30 % of the canvas, and the main text
  r_large = sqrt(2) r_small; so r_small = r_large / sqrt(2) (App. C's "small = sqrt(2) x large" is
  read as a slip). The small circle sits left of, right of, above or below the large one at
  ``circle_gap`` from it (App. C: adjacent); the pair is uniform inside the canvas with a 2 % margin.
* Task D. The small square's side is 30-70 % of the top half (App. C), i.e. [15 %, 35 %] of the
  canvas, capped so that 1.5 times it fits in the bottom half with ``square_margin`` on both sides;
  each square is uniform inside its half at ``square_margin`` from the border and the middle line.

Conventions (``Conventions``, frozen; presets in ``PRESETS``), each deliberately unlike
``empirics.tasks`` where App. C leaves room:

* ``strip_placement`` (A): the shadow strip lies ``under`` the ground line (its top edge at the
  pole's foot; default), ``straddle``s it (centred on it) or lies ``on`` it (bottom edge at the
  foot). The pole's height h2 is always measured from its foot on the ground line.
* ``draw_order`` (A): the pole is drawn over the strip (default) or the strip over the pole; only
  visible where they overlap (``straddle`` / ``on``).
* ``strip_thickness`` (A): range of the strip's thickness; the ``a_thin_strip`` preset goes below a
  pixel at 32 px.
* ``shadow_beyond_pole`` and ``near_sun_probability`` (A): how far a near sun's shadow must reach
  past the pole's edge, and how often the sun is near; ``a_short_shadow`` makes every shadow near
  and lets it end just past the pole, so its visible part is short next to the pole's width.
* ``sun_inside`` and ``sun_radius`` (A): keep the whole sun on the canvas (default) or let a larger
  sun be cut by the border (App. C's far positions 0-6 / 26-32 px put the sun's centre at the edge).
* ``right_bar_height`` (B): range of the right bar's height h2; ``b_thin_bars`` makes it 1-2 px at 32 px.
* ``circle_gap`` (C): gap between the circles, 0 = tangent (App. C); ``c_small_gap`` leaves a gap
  of 0.16-1 px at 32 px.
* ``square_margin`` (D): distance of each square from the border and the middle line; 0
  (``d_touch_border``) places them uniformly inside their half, so they may touch the border.

Use ``render_reference(task, n, size=32, seed=0, conventions="default")``; ``presets_for(task)``
lists the presets that change a task's images.
"""

from __future__ import annotations

import enum
import math
import numbers
from dataclasses import dataclass, field, replace

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle, Rectangle
from PIL import Image

# Shared with the rest of the package as data only: task names, App. C's element colour families
# (ELEMENTS: name and HSV box of each element), the fine rule's definition and slope.
from empirics._checks import check_choice
from empirics.data.tasks import ELEMENTS, TARGET_SLOPE, Task, fine_xy

__all__ = [
    "HI_RES", "SIZES", "DPI", "Downscaler", "StripPlacement", "DrawOrder", "Conventions", "PRESETS", "TASK_FIELDS",
    "presets_for", "resolve_conventions", "hsv_to_rgb", "ReferenceBatch", "reference_params",
    "render_reference",
]

SIZES = (32, 64)          # output sizes (Section 3.2: 32 px; App. D.3: 64 px)
HI_RES = 770              # default side of the vector rendering, px (at DPI 100: 7.7 in)
HI_RES_RANGE = (128, 4096)
DPI = 100

# ---- Geometry, fractions of the canvas side (App. C where cited; "ours here" otherwise). -------------
A_POLE_X = 0.5                        # App. C: sun intervals symmetric about 16 px of 32
A_POLE_HEIGHT = (0.20, 0.40)          # App. C: 6.4-12.8 px of 32
A_SUN_HEIGHT_CLIP = (0.30, 0.80)      # App. C: sun height = 2 x pole height, clipped to 9.6-25.6 px
A_FAR = (10 / 32, 16 / 32)            # App. C: sun at 0-6 | 26-32 px -> 10-16 px from the pole
A_NEAR = (0.0, 6 / 32)                # App. C: sun at 10-16 | 16-22 px -> 0-6 px from the pole
A_GROUND_ABOVE_BOTTOM = (0.09, 0.12)  # ours here: ground line above the bottom edge
A_POLE_WIDTH = (0.05, 0.08)           # ours here
A_EDGE_MARGIN = 1 / 64                # ours here: shadow end (and an inside sun) this far from the border
B_LEFT_EDGE = (1 / 32, 0.30)          # App. C: [0, 30 %] of the width; ours starts at 1/32 (h2 > 0)
B_LEFT_HEIGHT = (0.20, 0.60)          # App. C: 20-60 % of the height
B_RIGHT_GAP = 0.20                    # App. C: right edge in [l1 + 6.4 px, ...] at 32 px
B_RIGHT_EDGE_MAX = 0.80               # App. C: ... 25.6 px
B_WIDTH = (0.07, 0.12)                # ours here
B_BASELINE_ABOVE_BOTTOM = (0.15, 0.30)  # ours here
B_MAX_DRAWS = 100_000                 # rejection sampling of h2 gives up after this many draws
C_LARGE_DIAMETER = (0.10, 0.30)       # App. C: the large circle's diameter, 10-30 % of the image
C_MARGIN = 0.02                       # ours here
D_SIDE_TOP = (0.15, 0.35)             # App. C: 30-70 % of the top half (0.5 of the image)
D_SIDE_RATIO = 1.5                    # App. C: large side = 1.5 x small side
SQRT2 = math.sqrt(2.0)



class Downscaler(str, enum.Enum):
    """How the high-resolution rendering is reduced to the output size."""

    PIL_BILINEAR = "pil_bilinear"
    CV2_AREA = "cv2_area"


class StripPlacement(str, enum.Enum):
    """Task A: where the shadow strip lies relative to the ground line (the pole's foot)."""

    UNDER = "under"        # top edge on the ground line
    STRADDLE = "straddle"  # centred on the ground line
    ON = "on"              # bottom edge on the ground line


class DrawOrder(str, enum.Enum):
    """Task A: which of pole and strip is drawn last where they overlap."""

    POLE_OVER_STRIP = "pole_over_strip"
    STRIP_OVER_POLE = "strip_over_pole"


def _parse_enum(cls, name, value):
    if isinstance(value, cls):
        return value
    for member in cls:
        if isinstance(value, str) and value.strip().lower() == member.value:
            return member
    raise ValueError(f"{name} must be one of {', '.join(repr(m.value) for m in cls)}, got {value!r}")


def _check_range(name, value, lo=0.0, hi=1.0) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a range (lo, hi) of fractions of the canvas, got {value!r}") from exc
    if not (math.isfinite(a) and math.isfinite(b) and lo <= a <= b <= hi):
        raise ValueError(f"{name} must satisfy {lo} <= lo <= hi <= {hi}, got {value!r}")
    return a, b


def _check_fraction(name, value, lo=0.0, hi=1.0) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number in [{lo}, {hi}], got {value!r}")
    v = float(value)
    if not (math.isfinite(v) and lo <= v <= hi):
        raise ValueError(f"{name} must be a real number in [{lo}, {hi}], got {value!r}")
    return v


@dataclass(frozen=True)
class Conventions:
    """Drawing conventions App. C leaves open (module docstring); lengths are fractions of the canvas."""

    name: str = "custom"
    # Task A
    strip_placement: StripPlacement = StripPlacement.UNDER
    draw_order: DrawOrder = DrawOrder.POLE_OVER_STRIP
    strip_thickness: tuple[float, float] = (0.04, 0.06)
    shadow_beyond_pole: float = 0.05
    near_sun_probability: float = 0.5
    sun_inside: bool = True
    sun_radius: tuple[float, float] = (0.05, 0.075)
    # Task B
    right_bar_height: tuple[float, float] = (3 / 32, 0.60)
    # Task C
    circle_gap: tuple[float, float] = (0.0, 0.0)
    # Task D
    square_margin: float = 0.04

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        set_ = object.__setattr__
        set_(self, "strip_placement", _parse_enum(StripPlacement, "strip_placement", self.strip_placement))
        set_(self, "draw_order", _parse_enum(DrawOrder, "draw_order", self.draw_order))
        set_(self, "strip_thickness", _check_range("strip_thickness", self.strip_thickness, 0.001, 0.06))
        set_(self, "shadow_beyond_pole", _check_fraction("shadow_beyond_pole", self.shadow_beyond_pole,
                                                         0.0, 0.08))
        set_(self, "near_sun_probability", _check_fraction("near_sun_probability", self.near_sun_probability))
        if not isinstance(self.sun_inside, bool | np.bool_):
            raise ValueError(f"sun_inside must be a bool, got {self.sun_inside!r}")
        set_(self, "sun_inside", bool(self.sun_inside))
        set_(self, "sun_radius", _check_range("sun_radius", self.sun_radius, 0.01, 0.15))
        if self.sun_inside and self.sun_radius[1] > 0.075:
            raise ValueError(f"sun_radius must be <= 0.075 when sun_inside=True (a sun 80 % above a ground "
                             f"line 12 % above the bottom has 7.5 % left), got {self.sun_radius!r}")
        set_(self, "right_bar_height", _check_range("right_bar_height", self.right_bar_height, 0.01, 0.60))
        set_(self, "circle_gap", _check_range("circle_gap", self.circle_gap, 0.0, 0.1))
        set_(self, "square_margin", _check_fraction("square_margin", self.square_margin, 0.0, 0.05))


_DEFAULT = Conventions(name="default")
PRESETS: dict[str, Conventions] = {
    "default": _DEFAULT,
    "a_straddle": replace(_DEFAULT, name="a_straddle", strip_placement=StripPlacement.STRADDLE),
    "a_strip_over_pole": replace(_DEFAULT, name="a_strip_over_pole", strip_placement=StripPlacement.STRADDLE,
                                 draw_order=DrawOrder.STRIP_OVER_POLE),
    "a_thin_strip": replace(_DEFAULT, name="a_thin_strip", strip_thickness=(0.01, 0.03)),
    "a_short_shadow": replace(_DEFAULT, name="a_short_shadow", near_sun_probability=1.0,
                              shadow_beyond_pole=0.005),
    "a_sun_outside": replace(_DEFAULT, name="a_sun_outside", sun_inside=False, sun_radius=(0.08, 0.12)),
    "a_strip_on_ground": replace(_DEFAULT, name="a_strip_on_ground", strip_placement=StripPlacement.ON),
    "b_thin_bars": replace(_DEFAULT, name="b_thin_bars", right_bar_height=(1 / 32, 2 / 32)),
    "c_small_gap": replace(_DEFAULT, name="c_small_gap", circle_gap=(0.005, 1 / 32)),
    "d_touch_border": replace(_DEFAULT, name="d_touch_border", square_margin=0.0),
}
# Conventions fields that act on each task.
TASK_FIELDS: dict[Task, tuple[str, ...]] = {
    Task.A: ("strip_placement", "draw_order", "strip_thickness", "shadow_beyond_pole", "near_sun_probability",
             "sun_inside", "sun_radius"),
    Task.B: ("right_bar_height",), Task.C: ("circle_gap",), Task.D: ("square_margin",),
}


def presets_for(task) -> list[str]:
    """Names of the presets that change ``task``'s images: "default" first, then one per hard convention."""
    task = Task.parse(task)
    out = ["default"]
    for name, conv in PRESETS.items():
        if name != "default" and any(getattr(conv, f) != getattr(_DEFAULT, f) for f in TASK_FIELDS[task]):
            out.append(name)
    return out


def resolve_conventions(conventions) -> Conventions:
    """A ``Conventions`` from itself or a preset name (``PRESETS``)."""
    if isinstance(conventions, Conventions):
        return conventions
    if isinstance(conventions, str) and conventions.strip().lower() in PRESETS:
        return PRESETS[conventions.strip().lower()]
    raise ValueError(f"conventions must be a Conventions or one of the presets "
                     f"{', '.join(repr(p) for p in PRESETS)}, got {conventions!r}")


def hsv_to_rgb(hue, sat, val) -> np.ndarray:
    """RGB in [0, 1] (float64 [..., 3]) of OpenCV-unit HSV: hue in [0, 180), saturation and value in [0, 255]."""
    h = np.asarray(hue, np.float64)
    s = np.asarray(sat, np.float64)
    v = np.asarray(val, np.float64)
    if not (np.all(np.isfinite(h)) and np.all(np.isfinite(s)) and np.all(np.isfinite(v))):
        raise ValueError("hue, sat and val must be finite")
    if np.any((h < 0) | (h > 180)) or np.any((s < 0) | (s > 255)) or np.any((v < 0) | (v > 255)):
        raise ValueError("hue must be in [0, 180] and sat, val in [0, 255] (OpenCV units)")
    h6 = np.mod(h / 30.0, 6.0)             # 180 OpenCV hue units = 6 sectors of 60 degrees
    s, v = s / 255.0, v / 255.0
    sector = np.floor(h6)
    f = h6 - sector
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    sector = sector.astype(int)
    r = np.choose(sector, [v, q, p, p, t, v])
    g = np.choose(sector, [t, v, v, q, p, p])
    b = np.choose(sector, [p, p, t, v, v, q])
    return np.stack([r, g, b], axis=-1)


def _check_task_n_seed(task, n, seed):
    task = Task.parse(task)
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    return task, int(n), int(seed)


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * rng.random()


# ---- Per-image geometry (one dict of floats per image). ----------------------------------------------

def _task_a(rng, c: Conventions) -> dict:
    h2 = _u(rng, *A_POLE_HEIGHT)
    sun_height = min(max(2.0 * h2, A_SUN_HEIGHT_CLIP[0]), A_SUN_HEIGHT_CLIP[1])    # App. C
    h1 = sun_height - h2
    ground_y = 1.0 - _u(rng, *A_GROUND_ABOVE_BOTTOM)
    width = _u(rng, *A_POLE_WIDTH)
    radius = _u(rng, *c.sun_radius)
    near = rng.random() < c.near_sun_probability
    to_l2 = h2 / h1                                   # eq. (8): l2 = l1 h2 / h1
    if near:
        lo = max(A_NEAR[0], (width / 2 + c.shadow_beyond_pole) / to_l2)
        hi = A_NEAR[1]
    else:
        lo = A_FAR[0]
        hi = min(A_FAR[1], (0.5 - A_EDGE_MARGIN) / to_l2)
        if c.sun_inside:
            hi = min(hi, 0.5 - radius - A_EDGE_MARGIN)
    l1 = _u(rng, lo, hi)
    l2 = l1 * to_l2
    side = 1.0 if rng.random() < 0.5 else -1.0        # +1: sun right of the pole, shadow left
    t = _u(rng, *c.strip_thickness)
    offset = {StripPlacement.UNDER: 0.0, StripPlacement.STRADDLE: -t / 2, StripPlacement.ON: -t}[c.strip_placement]
    return {
        "l1": l1, "h1": h1, "h2": h2, "l2": l2,
        "pole_x": A_POLE_X, "pole_width": width, "pole_top": ground_y - h2, "ground_y": ground_y,
        "sun_x": A_POLE_X + side * l1, "sun_y": ground_y - sun_height, "sun_radius": radius,
        "sun_height": sun_height, "shadow_end": A_POLE_X - side * l2,
        "strip_top": ground_y + offset, "strip_thickness": t, "sun_side": side, "near": float(near),
    }


def _task_b(rng, c: Conventions) -> dict:
    lo_h, hi_h = c.right_bar_height
    for _ in range(B_MAX_DRAWS):
        l1 = _u(rng, *B_LEFT_EDGE)
        h1 = _u(rng, *B_LEFT_HEIGHT)
        l2 = _u(rng, l1 + B_RIGHT_GAP, B_RIGHT_EDGE_MAX)
        h2 = l1 * h1 / l2                              # App. C: l1 h1 = h2 l2
        if lo_h <= h2 <= hi_h:
            break
    else:
        raise ValueError(f"right_bar_height {c.right_bar_height!r} is not reachable with App. C's ranges")
    baseline = 1.0 - _u(rng, *B_BASELINE_ABOVE_BOTTOM)
    return {"l1": l1, "h1": h1, "l2": l2, "h2": h2, "left_width": _u(rng, *B_WIDTH),
            "right_width": _u(rng, *B_WIDTH), "baseline_y": baseline}


_DIRECTIONS = ((-1.0, 0.0), (1.0, 0.0), (0.0, -1.0), (0.0, 1.0))   # left, right, above, below


def _task_c(rng, c: Conventions) -> dict:
    r_large = _u(rng, *C_LARGE_DIAMETER) / 2
    r_small = r_large / SQRT2                          # main text: r_large = sqrt(2) r_small
    gap = _u(rng, *c.circle_gap)
    direction = int(rng.integers(4))
    dx, dy = _DIRECTIONS[direction]
    dist = r_large + r_small + gap
    ox, oy = dx * dist, dy * dist                      # small centre relative to the large one
    x_lo = max(r_large, r_small - ox) + C_MARGIN
    x_hi = min(1 - r_large, 1 - r_small - ox) - C_MARGIN
    y_lo = max(r_large, r_small - oy) + C_MARGIN
    y_hi = min(1 - r_large, 1 - r_small - oy) - C_MARGIN
    large_x, large_y = _u(rng, x_lo, x_hi), _u(rng, y_lo, y_hi)
    return {"r_small": r_small, "r_large": r_large, "large_x": large_x, "large_y": large_y,
            "small_x": large_x + ox, "small_y": large_y + oy, "gap": gap, "direction": float(direction)}


def _task_d(rng, c: Conventions) -> dict:
    m = c.square_margin
    side = _u(rng, D_SIDE_TOP[0], min(D_SIDE_TOP[1], (0.5 - 2 * m) / D_SIDE_RATIO))
    big = D_SIDE_RATIO * side
    top_x = _u(rng, m, 1 - m - side) + side / 2
    top_y = _u(rng, m, 0.5 - m - side) + side / 2
    bottom_x = _u(rng, m, 1 - m - big) + big / 2
    bottom_y = _u(rng, 0.5 + m, 1 - m - big) + big / 2
    return {"side_top": side, "side_bottom": big, "top_x": top_x, "top_y": top_y,
            "bottom_x": bottom_x, "bottom_y": bottom_y}


_GEOMETRY = {Task.A: _task_a, Task.B: _task_b, Task.C: _task_c, Task.D: _task_d}


def reference_params(task, n: int, seed: int = 0, conventions="default") -> dict[str, np.ndarray]:
    """Ground truth of ``n`` images (float64[n] each; units in the module docstring), colours included.

    Colours: ``"<element>_hue|_sat|_val"`` in OpenCV HSV units and ``"<element>_red|_green|_blue"`` in
    [0, 1]. ``"x"``, ``"y"``, ``"ratio"`` = y / x and ``"k"`` give the fine rule (``empirics.tasks.fine_xy``).
    """
    task, n, seed = _check_task_n_seed(task, n, seed)
    conv = resolve_conventions(conventions)
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        row = _GEOMETRY[task](rng, conv)
        for element, family in ELEMENTS[task]:
            hsv = (_u(rng, *family.hue), _u(rng, *family.sat), _u(rng, *family.val))
            rgb = hsv_to_rgb(*hsv)
            row.update({f"{element}_hue": hsv[0], f"{element}_sat": hsv[1], f"{element}_val": hsv[2],
                        f"{element}_red": rgb[0], f"{element}_green": rgb[1], f"{element}_blue": rgb[2]})
        rows.append(row)
    params = {key: np.array([r[key] for r in rows], np.float64) for key in rows[0]}
    x, y = fine_xy(task, params)
    params["x"], params["y"] = x, y
    params["ratio"] = y / x
    params["k"] = np.full(n, TARGET_SLOPE[task])
    return params


# ---- Rendering. ---------------------------------------------------------------------------------------

def _patch(kind, **kw):
    return kind(linewidth=0, edgecolor="none", antialiased=True, snap=False, **kw)


class _Canvas:
    """One Figure + Agg canvas for a task; ``draw(params, i)`` updates the artists and returns RGBA [H, H, 4]."""

    def __init__(self, task: Task, hi_res: int, conv: Conventions):
        self.task, self.conv = task, conv
        self.fig = Figure(figsize=(hi_res / DPI, hi_res / DPI), dpi=DPI, facecolor="white")
        self.canvas = FigureCanvasAgg(self.fig)
        ax = self.fig.add_axes((0.0, 0.0, 1.0, 1.0))
        ax.set_axis_off()
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(1.0, 0.0)                          # y down, like image rows
        ax.set_facecolor("white")
        if task is Task.A:
            self.artists = {"sun": _patch(Circle, xy=(0, 0), radius=0.1, zorder=3),
                            "pole": _patch(Rectangle, xy=(0, 0), width=0.1, height=0.1),
                            "shadow": _patch(Rectangle, xy=(0, 0), width=0.1, height=0.1)}
            over_pole = conv.draw_order is DrawOrder.STRIP_OVER_POLE
            self.artists["pole"].set_zorder(1 if over_pole else 2)
            self.artists["shadow"].set_zorder(2 if over_pole else 1)
        elif task is Task.C:
            self.artists = {"small": _patch(Circle, xy=(0, 0), radius=0.1),
                            "large": _patch(Circle, xy=(0, 0), radius=0.1)}
        else:
            self.artists = {name: _patch(Rectangle, xy=(0, 0), width=0.1, height=0.1)
                            for name, _ in ELEMENTS[task]}
        for artist in self.artists.values():
            ax.add_patch(artist)

    def draw(self, p: dict[str, np.ndarray], i: int) -> np.ndarray:
        a = self.artists
        g = {k: float(v[i]) for k, v in p.items()}
        if self.task is Task.A:
            a["sun"].set_center((g["sun_x"], g["sun_y"]))
            a["sun"].set_radius(g["sun_radius"])
            a["pole"].set_bounds(g["pole_x"] - g["pole_width"] / 2, g["pole_top"], g["pole_width"], g["h2"])
            x0, x1 = sorted((g["pole_x"], g["shadow_end"]))  # from the pole's axis to the shadow's end
            a["shadow"].set_bounds(x0, g["strip_top"], x1 - x0, g["strip_thickness"])
        elif self.task is Task.B:
            a["left"].set_bounds(g["l1"], g["baseline_y"] - g["h1"], g["left_width"], g["h1"])
            a["right"].set_bounds(g["l2"], g["baseline_y"] - g["h2"], g["right_width"], g["h2"])
        elif self.task is Task.C:
            for name in ("small", "large"):
                a[name].set_center((g[f"{name}_x"], g[f"{name}_y"]))
                a[name].set_radius(g[f"r_{name}"])
        else:
            for name in ("top", "bottom"):
                s = g[f"side_{name}"]
                a[name].set_bounds(g[f"{name}_x"] - s / 2, g[f"{name}_y"] - s / 2, s, s)
        for name, _ in ELEMENTS[self.task]:
            a[name].set_facecolor((g[f"{name}_red"], g[f"{name}_green"], g[f"{name}_blue"]))
        self.canvas.draw()
        return np.asarray(self.canvas.buffer_rgba())


def _downscale(rgba: np.ndarray, size: int, how: Downscaler) -> np.ndarray:
    if how is Downscaler.PIL_BILINEAR:
        img = Image.frombuffer("RGBA", rgba.shape[1::-1], rgba.tobytes(), "raw", "RGBA", 0, 1).convert("RGB")
        return np.asarray(img.resize((size, size), Image.BILINEAR))
    return cv2.resize(rgba, (size, size), interpolation=cv2.INTER_AREA)[..., :3]


@dataclass(frozen=True)
class ReferenceBatch:
    """Images rendered by this module: ``images`` uint8 [N, S, S, 3] RGB and their ground truth ``params``."""

    task: Task
    images: np.ndarray
    params: dict[str, np.ndarray] = field(repr=False)
    conventions: Conventions
    size: int
    seed: int
    downscaler: Downscaler
    hi_res: int

    def __len__(self) -> int:
        return len(self.images)

    @property
    def x(self) -> np.ndarray:
        return self.params["x"]

    @property
    def y(self) -> np.ndarray:
        return self.params["y"]


def render_reference(task, n: int, size: int = 32, seed: int = 0, *, conventions="default",
                     downscaler="pil_bilinear", hi_res: int = HI_RES) -> ReferenceBatch:
    """Render ``n`` images of ``task`` with the given conventions (module docstring) and their ground truth."""
    task, n, seed = _check_task_n_seed(task, n, seed)
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or int(size) not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    size = int(size)
    how = check_choice("downscaler", downscaler, Downscaler)
    conv = resolve_conventions(conventions)
    if isinstance(hi_res, bool) or not isinstance(hi_res, numbers.Integral) or not (
            max(HI_RES_RANGE[0], 4 * size) <= hi_res <= HI_RES_RANGE[1]):
        raise ValueError(f"hi_res must be an integer in [{max(HI_RES_RANGE[0], 4 * size)}, {HI_RES_RANGE[1]}] "
                         f"(at least 4 x size), got {hi_res!r}")
    hi_res = int(hi_res)
    params = reference_params(task, n, seed, conv)
    canvas = _Canvas(task, hi_res, conv)
    images = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        rgba = canvas.draw(params, i)
        if rgba.shape[:2] != (hi_res, hi_res):
            raise RuntimeError(f"matplotlib rendered {rgba.shape[:2]}, expected {(hi_res, hi_res)}")
        images[i] = _downscale(rgba, size, how)
    return ReferenceBatch(task, images, params, conv, size, seed, how, hi_res)
