"""Property tests: any in-range geometry and App. C colour, at sub-pixel positions, is measured exactly.

Special points (range ends, the darkest / palest colours, elements one margin from the border) are
mixed with ranges, as in tests/strategies.py.
"""

import cv2
import numpy as np
from hypothesis import assume, given
from hypothesis import strategies as st

from empirics.evaluate import evaluate
from empirics.tasks import BLUE_GREEN, DARK, YELLOWISH, render, sample_params


def _colour(draw, family, prefix, params):
    hsv = []
    for lo, hi in (family.hue, family.sat, family.val):
        hsv.append(draw(st.one_of(st.sampled_from([lo, hi]), st.integers(lo, hi))))
    rgb = cv2.cvtColor(np.array([[hsv]], np.uint8), cv2.COLOR_HSV2RGB)[0, 0]
    for c, v in zip(("red", "green", "blue"), rgb):
        params[f"{prefix}_{c}"] = np.array([float(v)])


@st.composite
def task_d_images(draw):
    p = {k: v[:1].copy() for k, v in sample_params("D", 1, 32).items()}
    a = draw(st.one_of(st.sampled_from([4.8, 8.96]), st.floats(4.8, 8.96)))
    b = 1.5 * a
    p["side_top_px"], p["side_bottom_px"] = np.array([a]), np.array([b])
    p["top_x_px"] = np.array([draw(st.floats(1 + a / 2, 31 - a / 2))])
    p["top_y_px"] = np.array([draw(st.floats(1 + a / 2, 15 - a / 2))])
    p["bottom_x_px"] = np.array([draw(st.floats(1 + b / 2, 31 - b / 2))])
    p["bottom_y_px"] = np.array([draw(st.floats(17 + b / 2, 31 - b / 2))])
    _colour(draw, YELLOWISH, "top", p)
    _colour(draw, BLUE_GREEN, "bottom", p)
    return p


@st.composite
def task_a_images(draw):
    p = {k: v[:1].copy() for k, v in sample_params("A", 1, 32).items()}
    h2 = draw(st.one_of(st.sampled_from([6.4, 12.8]), st.floats(6.4, 12.8)))
    l1 = draw(st.one_of(st.sampled_from([3.0, 6.0, 10.0, 15.0]), st.floats(3.0, 15.0)))
    side = draw(st.sampled_from([-1.0, 1.0]))
    p["h2_px"], p["h1_px"], p["l1_px"], p["l2_px"] = (np.array([v]) for v in (h2, h2, l1, l1))
    p["pole_top_px"] = 28.0 - p["h2_px"]
    p["sun_y_px"] = 28.0 - 2 * p["h2_px"]
    p["sun_x_px"] = 16.0 + side * p["l1_px"]
    p["shadow_end_px"] = 16.0 - side * p["l1_px"]
    _colour(draw, YELLOWISH, "sun", p)
    _colour(draw, BLUE_GREEN, "pole", p)
    _colour(draw, DARK, "shadow", p)
    # App. C's ranges let the shadow be an exactly paler copy of the pole (a dark desaturated blue
    # pole, a blue-grey shadow at V = 150): same ink direction, so no colour tells their shared edge
    # apart. That happens for 0.017 % of images (ink directions within 3 degrees); left out here.
    pole = 255 - np.array([p[f"pole_{c}"][0] for c in ("red", "green", "blue")])
    shadow = 255 - np.array([p[f"shadow_{c}"][0] for c in ("red", "green", "blue")])
    assume(np.linalg.norm(np.cross(pole, shadow)) >= 0.05 * np.linalg.norm(pole) * np.linalg.norm(shadow))
    return p


@given(task_d_images())
def test_task_d_sides_exact(p):
    ev = evaluate(render("D", p, 32), "D")
    assert ev.valid[0], ev.reason[0]
    assert abs(ev.features["side_top"][0] * 32 - p["side_top_px"][0]) < 0.05
    assert abs(ev.features["side_bottom"][0] * 32 - p["side_bottom_px"][0]) < 0.05
    assert ev.coarse_ok[0]


@given(task_a_images())
def test_task_a_features_exact(p):
    ev = evaluate(render("A", p, 32), "A")
    assert ev.valid[0], ev.reason[0]
    for key in ("l1", "h1", "h2", "l2"):
        assert abs(ev.features[key][0] * 32 - p[f"{key}_px"][0]) < 0.15, key
    assert ev.coarse_ok[0]


@st.composite
def task_c_images(draw):
    p = {k: v[:1].copy() for k, v in sample_params("C", 1, 32).items()}
    rs = draw(st.one_of(st.sampled_from([1.6, 4.8]), st.floats(1.6, 4.8)))
    rl = np.sqrt(2) * rs
    dx, dy = draw(st.sampled_from([(-1, 0), (1, 0), (0, -1), (0, 1)]))
    lo_x, hi_x = 1 + rl + max(0, -dx) * 2 * rs, 31 - rl - max(0, dx) * 2 * rs
    lo_y, hi_y = 1 + rl + max(0, -dy) * 2 * rs, 31 - rl - max(0, dy) * 2 * rs
    lx, ly = draw(st.floats(lo_x, hi_x)), draw(st.floats(lo_y, hi_y))
    p["r_small_px"], p["r_large_px"] = np.array([rs]), np.array([rl])
    p["large_x_px"], p["large_y_px"] = np.array([lx]), np.array([ly])
    p["small_x_px"], p["small_y_px"] = np.array([lx + dx * (rl + rs)]), np.array([ly + dy * (rl + rs)])
    _colour(draw, YELLOWISH, "small", p)
    _colour(draw, BLUE_GREEN, "large", p)
    return p


@st.composite
def task_b_images(draw):
    p = {k: v[:1].copy() for k, v in sample_params("B", 1, 32).items()}
    l1 = draw(st.one_of(st.sampled_from([4.0, 9.6]), st.floats(4.0, 9.6)))
    h1 = draw(st.one_of(st.sampled_from([6.4, 19.2]), st.floats(6.4, 19.2)))
    l2 = draw(st.floats(l1 + 6.4, min(25.6, l1 * h1 / 2.0)))
    p["l1_px"], p["h1_px"], p["l2_px"], p["h2_px"] = (np.array([v]) for v in (l1, h1, l2, l1 * h1 / l2))
    horizon = draw(st.floats(12.8, 19.2))
    p["left_y_px"] = p["right_y_px"] = np.array([horizon])
    _colour(draw, YELLOWISH, "left", p)
    _colour(draw, BLUE_GREEN, "right", p)
    return p


@given(task_c_images())
def test_task_c_radii_exact(p):
    ev = evaluate(render("C", p, 32), "C")
    assert ev.valid[0], ev.reason[0]
    for key in ("r_small", "r_large"):
        assert abs(ev.features[key][0] * 32 - p[f"{key}_px"][0]) < 0.05, key


@given(task_b_images())
def test_task_b_features_exact(p):
    ev = evaluate(render("B", p, 32), "B")
    assert ev.valid[0], ev.reason[0]
    for key in ("l1", "h1", "l2", "h2"):
        assert abs(ev.features[key][0] * 32 - p[f"{key}_px"][0]) < 0.1, key
