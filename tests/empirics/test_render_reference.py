"""Independent reference renderer (App. C): seeding, shapes, rules exact, conventions, colours, bad input."""

import math
from dataclasses import replace

import cv2
import numpy as np
import pytest

from empirics.data.render_reference import (
    PRESETS,
    SIZES,
    TASK_FIELDS,
    Conventions,
    DrawOrder,
    StripPlacement,
    hsv_to_rgb,
    presets_for,
    reference_params,
    render_reference,
)
from empirics.evaluator.metrics import coarse_rule
from empirics.tasks import ELEMENTS, RULE_FEATURES, TARGET_SLOPE, Task

TASKS = ["A", "B", "C", "D"]


def test_same_seed_same_images_and_prefix_stable():
    a = render_reference("A", 5, 32, seed=4)
    b = render_reference("A", 5, 32, seed=4)
    np.testing.assert_array_equal(a.images, b.images)
    short = render_reference("A", 3, 32, seed=4)
    np.testing.assert_array_equal(short.images, a.images[:3])     # image i does not depend on n
    for key in a.params:
        np.testing.assert_array_equal(short.params[key], a.params[key][:3])
    assert not np.array_equal(render_reference("A", 5, 32, seed=5).images, a.images)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("task", TASKS)
def test_shapes_dtypes_and_white_corners(task, size):
    batch = render_reference(task, 3, size, seed=1)
    assert batch.images.shape == (3, size, size, 3) and batch.images.dtype == np.uint8
    assert batch.task is Task(task) and batch.size == size and batch.conventions.name == "default"
    for key, value in batch.params.items():
        assert value.dtype == np.float64 and value.shape == (3,), key
    for key in RULE_FEATURES[Task(task)] + ("x", "y", "ratio", "k"):
        assert key in batch.params
    corners = batch.images[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert np.all(corners == 255)
    assert np.any(batch.images < 200)                               # something is drawn


@pytest.mark.parametrize("task", TASKS)
def test_fine_and_coarse_rules_exact_for_every_preset(task):
    k = TARGET_SLOPE[Task(task)]
    for name in presets_for(task):
        p = reference_params(task, 300, seed=2, conventions=name)
        assert all(v.dtype == np.float64 for v in p.values())
        np.testing.assert_allclose(p["y"], k * p["x"], rtol=1e-12, atol=0)
        np.testing.assert_allclose(p["ratio"], k, rtol=1e-12)
        assert coarse_rule(task, p).all(), name


def test_task_a_follows_app_c():
    p = reference_params("A", 2000, seed=3)
    assert p["h2"].min() >= 0.2 and p["h2"].max() <= 0.4
    np.testing.assert_allclose(p["sun_height"], np.clip(2 * p["h2"], 0.3, 0.8), rtol=1e-15)
    np.testing.assert_allclose(p["l2"], p["h2"] * p["l1"] / (p["sun_height"] - p["h2"]), rtol=1e-12)  # eq. (8)
    near = p["near"] == 1
    assert 0.45 < near.mean() < 0.55
    assert p["l1"][near].max() <= 6 / 32 and p["l1"][~near].min() >= 10 / 32 and p["l1"].max() <= 0.5
    np.testing.assert_allclose(p["pole_top"], p["ground_y"] - p["h2"], rtol=1e-15)
    np.testing.assert_allclose(p["h1"], p["pole_top"] - p["sun_y"], atol=1e-15)
    np.testing.assert_allclose(np.abs(p["shadow_end"] - p["pole_x"]), p["l2"], atol=1e-15)
    # the default strip lies under the ground line and the sun stays inside the canvas
    np.testing.assert_array_equal(p["strip_top"], p["ground_y"])
    assert np.all(p["sun_y"] - p["sun_radius"] >= 0) and np.all(np.abs(p["sun_x"] - 0.5) + p["sun_radius"] <= 0.5)
    straddle = reference_params("A", 50, seed=3, conventions="a_straddle")
    np.testing.assert_allclose(straddle["strip_top"], straddle["ground_y"] - straddle["strip_thickness"] / 2)


def test_tasks_b_c_d_follow_app_c():
    b = reference_params("B", 1000, seed=3)
    assert b["l1"].max() <= 0.3 and np.all(b["l2"] >= b["l1"] + 0.2) and b["l2"].max() <= 0.8
    assert b["h1"].min() >= 0.2 and b["h1"].max() <= 0.6
    np.testing.assert_allclose(b["l1"] * b["h1"], b["l2"] * b["h2"], rtol=1e-12)
    thin = reference_params("B", 200, seed=3, conventions="b_thin_bars")
    assert thin["h2"].min() >= 1 / 32 and thin["h2"].max() <= 2 / 32
    c = reference_params("C", 1000, seed=3)
    assert 2 * c["r_large"].min() >= 0.1 and 2 * c["r_large"].max() <= 0.3       # App. C: large diameter
    centre_dist = np.hypot(c["small_x"] - c["large_x"], c["small_y"] - c["large_y"])
    np.testing.assert_allclose(centre_dist, c["r_small"] + c["r_large"], rtol=1e-12)   # tangent by default
    d = reference_params("D", 1000, seed=3)
    assert d["side_top"].min() >= 0.15 and d["side_top"].max() <= 0.35
    assert np.all(d["top_y"] + d["side_top"] / 2 <= 0.5) and np.all(d["bottom_y"] - d["side_bottom"] / 2 >= 0.5)
    touch = reference_params("D", 1000, seed=3, conventions="d_touch_border")
    assert touch["side_bottom"].max() <= 0.5 + 1e-12 and touch["side_top"].max() > 0.3


# One alternative value per convention field; draw_order is only visible where the strip meets the pole.
ALTERNATIVES = {
    "strip_placement": ({}, StripPlacement.STRADDLE),
    "draw_order": ({"strip_placement": StripPlacement.STRADDLE}, DrawOrder.STRIP_OVER_POLE),
    "strip_thickness": ({}, (0.01, 0.03)),
    "shadow_beyond_pole": ({"near_sun_probability": 1.0}, 0.005),
    "near_sun_probability": ({}, 1.0),
    "sun_inside": ({}, False),
    "sun_radius": ({}, (0.06, 0.07)),
    "right_bar_height": ({}, (1 / 32, 2 / 32)),
    "circle_gap": ({}, (0.02, 0.03)),
    "square_margin": ({}, 0.0),
}


def test_every_convention_field_and_preset_changes_the_images():
    assert set(ALTERNATIVES) == {f for fs in TASK_FIELDS.values() for f in fs}
    for task, names in TASK_FIELDS.items():
        for name in names:
            base_changes, value = ALTERNATIVES[name]
            base = replace(PRESETS["default"], name="base", **base_changes)
            a = render_reference(task, 6, 32, seed=9, conventions=base).images
            b = render_reference(task, 6, 32, seed=9, conventions=replace(base, **{name: value})).images
            assert not np.array_equal(a, b), name
    for task in TASKS:
        default = render_reference(task, 4, 32, seed=9).images
        for preset in presets_for(task)[1:]:
            assert not np.array_equal(default, render_reference(task, 4, 32, seed=9, conventions=preset).images)
        other = render_reference(task, 4, 32, seed=9, downscaler="cv2_area").images
        assert not np.array_equal(default, other)


@pytest.mark.parametrize("downscaler", ["pil_bilinear", "cv2_area"])
def test_square_ink_matches_its_area(downscaler):
    """Alignment and downscaling keep each square's coverage: sum of ink / colour ink = side^2 * S^2."""
    size = 32
    batch = render_reference("D", 6, size, seed=12, downscaler=downscaler)
    p = batch.params
    ink = 255.0 - batch.images.astype(np.float64)
    for i in range(6):
        for name, half in (("top", slice(0, size // 2)), ("bottom", slice(size // 2, size))):
            colour_ink = 255.0 * (1.0 - np.array([p[f"{name}_{c}"][i] for c in ("red", "green", "blue")]))
            ch = int(np.argmax(colour_ink))
            coverage = ink[i, half, :, ch].sum() / colour_ink[ch]
            assert coverage == pytest.approx(p[f"side_{name}"][i] ** 2 * size**2, rel=0.01)


def test_hsv_to_rgb_matches_opencv():
    rng = np.random.default_rng(0)
    h, s, v = rng.uniform(0, 180, 500), rng.uniform(0, 255, 500), rng.uniform(0, 255, 500)
    ours = hsv_to_rgb(h, s, v)
    hsv = np.stack([2 * h, s / 255, v / 255], -1).astype(np.float32)[None]
    cv = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0]
    np.testing.assert_allclose(ours, cv, atol=1e-5)


def _interior_pixels(task: Task, p: dict, i: int, size: int) -> dict[str, tuple[int, int]]:
    """A pixel (row, col) fully inside each element of image i, or none for that element (geometry)."""
    g = {k: v[i] * size for k, v in p.items()}
    out = {}

    def rect(name, x0, x1, y0, y1):
        c0, c1, r0, r1 = math.ceil(x0), math.floor(x1) - 1, math.ceil(y0), math.floor(y1) - 1
        if c0 <= c1 and r0 <= r1:
            out[name] = ((r0 + r1) // 2, (c0 + c1) // 2)

    def disc(name, cx, cy, r):
        col, row = math.floor(cx), math.floor(cy)
        if max(math.hypot(col + dx - cx, row + dy - cy) for dx in (0, 1) for dy in (0, 1)) < r:
            out[name] = (row, col)

    if task is Task.A:
        disc("sun", g["sun_x"], g["sun_y"], g["sun_radius"])
        w = g["pole_width"] / 2
        rect("pole", g["pole_x"] - w, g["pole_x"] + w, g["pole_top"], g["ground_y"] - g["strip_thickness"])
        side = np.sign(g["shadow_end"] - g["pole_x"])
        xs = sorted((g["pole_x"] + side * w, g["shadow_end"]))
        rect("shadow", xs[0], xs[1], g["strip_top"], g["strip_top"] + g["strip_thickness"])
    elif task is Task.B:
        rect("left", g["l1"], g["l1"] + g["left_width"], g["baseline_y"] - g["h1"], g["baseline_y"])
        rect("right", g["l2"], g["l2"] + g["right_width"], g["baseline_y"] - g["h2"], g["baseline_y"])
    elif task is Task.C:
        disc("small", g["small_x"], g["small_y"], g["r_small"])
        disc("large", g["large_x"], g["large_y"], g["r_large"])
    else:
        for name in ("top", "bottom"):
            s = g[f"side_{name}"] / 2
            rect(name, g[f"{name}_x"] - s, g[f"{name}_x"] + s, g[f"{name}_y"] - s, g[f"{name}_y"] + s)
    return out


@pytest.mark.parametrize("task", TASKS)
def test_colours_fall_in_app_c_hsv_boxes(task):
    """HSV (cv2, OpenCV units) of a fully covered pixel of each element lies in its App. C box."""
    size, n = 64, 12
    batch = render_reference(task, n, size, seed=21, downscaler="cv2_area")
    hsv = cv2.cvtColor(batch.images.reshape(-1, size, 3), cv2.COLOR_RGB2HSV).reshape(n, size, size, 3)
    checked = {name: 0 for name, _ in ELEMENTS[Task(task)]}
    for i in range(n):
        for name, (row, col) in _interior_pixels(Task(task), batch.params, i, size).items():
            family = dict(ELEMENTS[Task(task)])[name]
            expect = np.array([batch.params[f"{name}_{c}"][i] for c in ("red", "green", "blue")]) * 255
            np.testing.assert_allclose(batch.images[i, row, col], expect, atol=1.0)
            h, s, v = (float(t) for t in hsv[i, row, col])
            lo, hi = family.hue
            centre, half = (lo + hi) / 2, (hi - lo) / 2
            assert abs((h - centre + 90) % 180 - 90) <= half + 2, (name, h)
            assert family.sat[0] - 4 <= s <= family.sat[1] + 4, (name, s)
            assert family.val[0] - 1 <= v <= family.val[1] + 1, (name, v)
            checked[name] += 1
    assert all(c >= n // 2 for c in checked.values()), checked


@pytest.mark.parametrize("call, message", [
    (lambda: render_reference("E", 2), "task must be one of"),
    (lambda: render_reference("A", 0), "n must be an integer >= 1"),
    (lambda: render_reference("A", 2.0), "n must be an integer >= 1"),
    (lambda: render_reference("A", 2, seed=-1), "seed must be an integer >= 0"),
    (lambda: render_reference("A", 2, size=48), r"size must be one of \(32, 64\)"),
    (lambda: render_reference("A", 2, conventions="sideways"), "conventions must be a Conventions or one of"),
    (lambda: render_reference("A", 2, downscaler="lanczos"), "downscaler must be one of"),
    (lambda: render_reference("A", 2, hi_res=100), "hi_res must be an integer in"),
    (lambda: render_reference("A", 2, size=64, hi_res=200), r"at least 4 x size"),
    (lambda: reference_params("B", 0), "n must be an integer >= 1"),
    (lambda: reference_params("B", 2, conventions=3), "conventions must be a Conventions"),
    (lambda: presets_for("Z"), "task must be one of"),
    (lambda: Conventions(strip_placement="sideways"), "strip_placement must be one of 'under', 'straddle', 'on'"),
    (lambda: Conventions(draw_order="random"), "draw_order must be one of"),
    (lambda: Conventions(strip_thickness=(0.05, 0.02)), "strip_thickness must satisfy"),
    (lambda: Conventions(strip_thickness="thin"), "strip_thickness must be a range"),
    (lambda: Conventions(near_sun_probability=1.5), "near_sun_probability must be a real number in"),
    (lambda: Conventions(sun_inside="yes"), "sun_inside must be a bool"),
    (lambda: Conventions(sun_radius=(0.08, 0.12)), "sun_radius must be <= 0.075 when sun_inside=True"),
    (lambda: Conventions(square_margin=float("nan")), "square_margin must be a real number in"),
    (lambda: Conventions(name=""), "name must be a non-empty string"),
    (lambda: hsv_to_rgb(200, 100, 100), "hue must be in"),
])
def test_bad_input_raises_value_error_with_message(call, message):
    with pytest.raises(ValueError, match=message):
        call()
