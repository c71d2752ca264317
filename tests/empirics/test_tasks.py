"""Task generators (App. C): rules hold exactly, elements stay in frame, colours in range, seeding."""

import math

import cv2
import numpy as np
import pytest

from empirics.data.render import disc_coverage, element_coverages, rect_coverage
from empirics.evaluator.metrics import coarse_rule
from empirics.tasks import (
    ELEMENTS,
    FINE_FACTOR_LIMITS,
    TARGET_SLOPE,
    Task,
    TaskBatch,
    degrade,
    fine_xy,
    generate,
    render,
    sample_params,
)

TASKS = ["A", "B", "C", "D"]


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("task", TASKS)
def test_fine_rule_exact_and_coarse_rule_always(task, size):
    p = sample_params(task, 3000, size, seed=11)
    x, y = fine_xy(task, p)
    k = TARGET_SLOPE[Task(task)]
    np.testing.assert_allclose(y / x, k, rtol=1e-12)
    np.testing.assert_allclose(p["ratio"], k, rtol=1e-12)
    assert coarse_rule(task, p).all()
    # normalised and pixel values agree
    for key in [k_ for k_ in p if k_.endswith("_px")]:
        np.testing.assert_allclose(p[key] / size, p[key[:-3]], rtol=1e-12)


def test_task_a_follows_app_c():
    p = sample_params("A", 5000, 32, seed=3)
    assert p["h2_px"].min() >= 0.2 * 32 and p["h2_px"].max() <= 0.4 * 32
    np.testing.assert_allclose(p["sun_height_px"], np.clip(2 * p["h2_px"], 9.6, 25.6))
    eq8 = p["h2_px"] * p["l1_px"] / (p["sun_height_px"] - p["h2_px"])
    np.testing.assert_allclose(p["l2_px"], eq8)
    far = p["far"] == 1
    assert np.all((p["l1_px"][far] >= 10) & (p["l1_px"][far] <= 15))
    assert np.all((p["l1_px"][~far] >= 3) & (p["l1_px"][~far] <= 6))
    assert 0.45 < far.mean() < 0.55 and 0.45 < (p["sun_side"] > 0).mean() < 0.55
    assert np.all(p["shadow_side"] == -p["sun_side"])


@pytest.mark.parametrize("task", TASKS)
def test_elements_stay_in_frame_and_do_not_overlap(task):
    size = 32
    p = sample_params(task, 2000, size, seed=5)
    g = {k[:-3]: v for k, v in p.items() if k.endswith("_px")}
    if task == "A":
        # everything but the sun (which may be cut, as in the paper) is inside the frame
        assert np.all((g["shadow_end"] >= 1 - 1e-9) & (g["shadow_end"] <= size - 1 + 1e-9))
        assert np.all(g["pole_top"] > 0)
        assert np.all((g["sun_x"] > 0) & (g["sun_x"] < size) & (g["sun_y"] > 0))   # centre in frame
        assert np.all(g["sun_y"] + g["sun_radius"] < g["pole_top"])          # sun above the pole, apart
        assert np.all(np.abs(g["shadow_end"] - g["pole_x"]) > g["pole_width"] / 2 + 1)  # visible shadow
    elif task == "B":
        assert np.all(g["l1"] > 0) and np.all(g["l2"] + g["right_width"] < size)
        assert np.all(g["l2"] > g["l1"] + g["left_width"])
        for h, yc in (("h1", "left_y"), ("h2", "right_y")):
            assert np.all(g[yc] - g[h] / 2 > 0) and np.all(g[yc] + g[h] / 2 < size)
        assert g["h2"].min() >= 2 - 1e-9
    elif task == "C":
        for e, r in (("small", "r_small"), ("large", "r_large")):
            for ax in ("x", "y"):
                centre = g[f"{e}_{ax}"]
                assert np.all(centre - g[r] >= 1 - 1e-9) and np.all(centre + g[r] <= size - 1 + 1e-9)
        dist = np.hypot(g["small_x"] - g["large_x"], g["small_y"] - g["large_y"])
        np.testing.assert_allclose(dist, g["r_small"] + g["r_large"], rtol=1e-12)   # tangent
    else:
        for e in ("top", "bottom"):
            half = g[f"side_{e}"] / 2
            assert np.all(g[f"{e}_x"] - half >= 1 - 1e-9) and np.all(g[f"{e}_x"] + half <= size - 1 + 1e-9)
        assert np.all(g["top_y"] + g["side_top"] / 2 <= size / 2 - 1 + 1e-9)
        assert np.all(g["bottom_y"] - g["side_bottom"] / 2 >= size / 2 + 1 - 1e-9)
    # coverages of different elements never overlap: additive rendering is exact
    covs = element_coverages(Task(task), p, slice(0, 200), size)
    total = np.sum([c for _, c in covs], axis=0)
    assert total.max() <= 1 + 1e-9


@pytest.mark.parametrize("task", TASKS)
def test_colours_within_app_c_ranges(task):
    p = sample_params(task, 500, 32, seed=2)
    for element, family in ELEMENTS[Task(task)]:
        for key, (lo, hi) in (("hue", family.hue), ("sat", family.sat), ("val", family.val)):
            v = p[f"{element}_{key}"]
            assert v.min() >= lo and v.max() <= hi and np.all(v == np.round(v))
        hsv = np.stack([p[f"{element}_{c}"] for c in ("hue", "sat", "val")], 1).astype(np.uint8)[:, None]
        rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[:, 0]
        expected = np.stack([p[f"{element}_{c}"] for c in ("red", "green", "blue")], 1)
        np.testing.assert_array_equal(rgb, expected)


def test_exact_coverage():
    # rectangles: analytic; discs: area to the midpoint-rule accuracy
    cov = rect_coverage([3.3], [9.85], [4.1], [4.9], 16)
    assert cov.sum() == pytest.approx(6.55 * 0.8, abs=1e-12)
    r = np.array([1.6, 3.0, 4.77])
    cov = disc_coverage([10.3, 15.5, 20.01], [11.7, 16.25, 19.5], r, 40)
    np.testing.assert_allclose(cov.sum((1, 2)), math.pi * r**2, rtol=2e-3)
    assert cov.min() >= 0 and cov.max() <= 1


def test_reproducible_and_prefix_stable():
    a = generate("C", 30, 32, seed=4)
    b = generate("C", 30, 32, seed=4)
    c = generate("C", 12, 32, seed=4)
    d = generate("C", 30, 32, seed=5)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.images[:12], c.images)
    assert all(np.array_equal(a.params[k][:12], c.params[k]) for k in a.params)
    assert not np.array_equal(a.images, d.images)


def test_images_white_background_and_types():
    b = generate("D", 20, 64, seed=1)
    assert b.images.dtype == np.uint8 and b.images.shape == (20, 64, 64, 3) and b.size == 64
    assert np.all(b.images[:, 0, 0] == 255) and len(b) == 20
    assert all(v.dtype == np.float64 and v.shape == (20,) for v in b.params.values())
    sub = b[2:5]
    assert len(sub) == 3 and np.array_equal(sub.images, b.images[2:5])


@pytest.mark.parametrize("task", TASKS)
def test_negative_controls(task):
    k = TARGET_SLOPE[Task(task)]
    p = sample_params(task, 400, 32, seed=9, fine_factor=1.2)
    np.testing.assert_allclose(p["ratio"], 1.2 * k, rtol=1e-12)
    assert coarse_rule(task, p).all()
    q = sample_params(task, 400, 32, seed=9, violate_coarse=True)
    assert not coarse_rule(task, q).any()


def test_render_rebuilds_images_from_params():
    b = generate("B", 10, 32, seed=8)
    np.testing.assert_array_equal(render("B", b.params, 32), b.images)


@pytest.mark.parametrize("kwargs, word", [
    ({"task": "E", "n": 3}, "task"), ({"task": "A", "n": 0}, "n"), ({"task": "A", "n": 2.5}, "n"),
    ({"task": "A", "n": 3, "size": 8}, "size"), ({"task": "A", "n": 3, "seed": -1}, "seed"),
    ({"task": "A", "n": 3, "fine_factor": 3.0}, "fine_factor"),
    ({"task": "A", "n": 3, "fine_factor": math.nan}, "fine_factor"),
    ({"task": "A", "n": 3, "violate_coarse": "yes"}, "violate_coarse"),
])
def test_generate_validation(kwargs, word):
    with pytest.raises(ValueError, match=word):
        generate(**kwargs)


def test_render_and_degrade_validation():
    p = sample_params("A", 3, 32)
    with pytest.raises(ValueError, match="missing"):
        render("A", {k: v for k, v in p.items() if k != "l1_px"}, 32)
    bad = dict(p, l1_px=np.array([1.0, np.nan, 2.0]))
    with pytest.raises(ValueError, match="finite"):
        render("A", bad, 32)
    with pytest.raises(ValueError, match="images"):
        degrade(np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="jpeg_quality"):
        degrade(np.zeros((1, 16, 16, 3), np.uint8), jpeg_quality=0)
    with pytest.raises(ValueError, match="images"):
        TaskBatch(np.zeros((2, 16, 15, 3), np.uint8), {}, "A")


def test_degrade_blurs_and_compresses():
    b = generate("D", 4, 32, seed=0)
    d = degrade(b.images, blur_sigma=0.5, jpeg_quality=75)
    assert d.shape == b.images.shape and d.dtype == np.uint8 and not np.array_equal(d, b.images)
    np.testing.assert_array_equal(degrade(b.images, blur_sigma=0, jpeg_quality=None), b.images)


def test_coverage_validation():
    with pytest.raises(ValueError, match="x1"):
        rect_coverage([1.0], [np.nan], [1.0], [2.0], 8)
    with pytest.raises(ValueError, match="size"):
        rect_coverage([1.0], [2.0], [1.0], [2.0], 0)
    with pytest.raises(ValueError, match="r must be"):
        disc_coverage([4.0], [4.0], [-1.0], 8)
    with pytest.raises(ValueError, match="cy"):
        disc_coverage([4.0, 5.0], [4.0], [1.0, 1.0], 8)


@pytest.mark.parametrize("task", TASKS)
def test_per_image_fine_factor(task):
    # an (n,) factor spanning the task's limits: y/x = f_i k per image, coarse rule kept, image i
    # independent of n, a constant array identical to the scalar
    t = Task(task)
    lim = FINE_FACTOR_LIMITS[t]
    f = np.linspace(lim.lo, lim.hi, 302)[1:-1]
    p = sample_params(task, 300, 32, seed=12, fine_factor=f)
    np.testing.assert_allclose(p["ratio"], f * TARGET_SLOPE[t], rtol=1e-12)
    assert coarse_rule(task, p).all()
    q = sample_params(task, 100, 32, seed=12, fine_factor=f[:100])
    assert all(np.array_equal(p[k][:100], q[k]) for k in p)
    scalar = sample_params(task, 50, 32, seed=2, fine_factor=1.2)
    array = sample_params(task, 50, 32, seed=2, fine_factor=np.full(50, 1.2))
    assert all(np.array_equal(scalar[k], array[k]) for k in scalar)
    g = {k[:-3]: v for k, v in p.items() if k.endswith("_px")}
    if task == "A":   # shadow in frame and out of the pole's shadow, sun centre off the pole
        assert np.all((g["shadow_end"] >= 1 - 1e-9) & (g["shadow_end"] <= 31 + 1e-9))
        assert np.all(np.abs(g["shadow_end"] - g["pole_x"]) >= g["pole_width"] / 2 + 1 - 1e-9)
        assert np.all(np.abs(g["sun_x"] - g["pole_x"]) >= g["pole_width"] / 2 - 1e-9)
    elif task == "B":
        assert g["h2"].min() >= 1 - 1e-9
    elif task == "C":
        for e, r in (("small", "r_small"), ("large", "r_large")):
            assert np.all(np.abs(g[f"{e}_x"] - 16) + g[r] <= 15 + 1e-9)
            assert np.all(np.abs(g[f"{e}_y"] - 16) + g[r] <= 15 + 1e-9)
    else:
        assert np.all(g["bottom_y"] + g["side_bottom"] / 2 <= 31 + 1e-9)
        assert np.all(g["bottom_y"] - g["side_bottom"] / 2 >= 17 - 1e-9)


@pytest.mark.parametrize("fine_factor, words", [
    (np.full(4, 1.1), r"shape \(3,\)"),
    (np.ones((3, 1)), "shape"),
    (np.array([True, True, True]), "bool"),
    (np.array(["1", "1", "1"]), "array"),
    (np.array([1.0, np.inf, 1.0]), "non-finite"),
    (np.array([1.0, 0.6, 1.0]), "shadow"),
    (np.array([1.0, 3.0, 1.0]), "sun"),
])
def test_per_image_fine_factor_validation(fine_factor, words):
    with pytest.raises(ValueError, match=words):
        sample_params("A", 3, fine_factor=fine_factor)
