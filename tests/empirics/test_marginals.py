"""empirics.marginals: distances, support, background, colour boxes and binned ratio error on small inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from empirics.evaluate import evaluate
from empirics.evaluator.controls import fresh_renders
from empirics.evaluator.marginals import (
    WHITE_LEVEL,
    Support,
    background_level,
    background_summary,
    colour_box_share,
    element_hsv,
    feature_distance,
    goal_measures,
    inside_support,
    ratio_error_by_size,
    support_bounds,
    support_share,
)
from empirics.tasks import ELEMENTS, generate


def test_identical_sets_have_zero_distance():
    v = np.random.default_rng(0).normal(size=300)
    d = feature_distance(v, v.copy(), n_boot=50, seed=1)
    assert d.w1 == 0.0 and d.ks == 0.0
    assert d.w1_ci95[0] == 0.0 and d.ks_ci95[0] == 0.0  # the basic interval of a zero estimate starts at 0


def test_shifted_set_gives_the_shift_as_w1():
    v = np.random.default_rng(1).normal(size=500)
    d = feature_distance(v + 0.3, v, n_boot=200, seed=2)
    assert d.w1 == pytest.approx(0.3, abs=1e-12)  # W1 of a translate is the shift, exactly
    assert d.w1_ci95[0] <= 0.3 <= d.w1_ci95[1]
    assert d.median - d.median_reference == pytest.approx(0.3)
    # On the integers 0..499 (exact in floating point), a shift by 150 moves 150 of 500 points past any t:
    # KS = 0.3 and W1 = 150 exactly; a shift by 500 separates the sets: KS = 1, W1 = 500.
    grid = np.arange(500.0)
    g = feature_distance(grid + 150, grid, n_boot=0)
    assert g.ks == pytest.approx(0.3, abs=1e-12) and g.w1 == pytest.approx(150.0, abs=1e-9)
    assert np.isnan(g.w1_ci95[0])
    far = feature_distance(grid + 500, grid, n_boot=0)
    assert far.ks == 1.0 and far.w1 == pytest.approx(500.0, abs=1e-9)


def test_feature_distance_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 2 finite"):
        feature_distance([1.0, np.nan, 2.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="n_boot"):
        feature_distance([1.0, 2.0], [1.0, 2.0], n_boot=-1)


@pytest.fixture(scope="module")
def d_renders():
    batch = generate("D", 40, 32, seed=11)
    return batch, evaluate(batch.images, "D")


def test_support_share_on_a_constructed_case(d_renders):
    _, ev = d_renders
    train = ev.take(np.arange(20))
    test = ev.take(np.arange(20, 40))
    lo, hi = np.min(train.features["side_top"][train.valid]), np.max(train.features["side_top"][train.valid])
    # Move 5 test images' side_top: 3 beyond max * 1.02 (outside), 2 to max * 1.01 (inside the widened support).
    feats = {k: v.copy() for k, v in test.features.items()}
    feats["side_top"][:3] = hi * 1.05
    feats["side_top"][3:5] = hi * 1.01
    feats["side_top"][5:20] = np.clip(feats["side_top"][5:20], lo, hi)
    feats["side_bottom"][:20] = np.clip(feats["side_bottom"], *(np.min(train.features["side_bottom"]),
                                                                  np.max(train.features["side_bottom"])))
    moved = type(test)(test.task, test.size, test.valid, test.reason, feats, feats["side_top"], feats["side_bottom"],
                       test.coarse_ok)
    bounds = support_bounds(train, Support(("side_top",), 0.02))
    assert bounds["side_top"] == pytest.approx((0.98 * lo, 1.02 * hi))
    assert int((~inside_support(moved, bounds)).sum()) == 3
    rec = support_share(moved, train, widen=0.02)
    assert rec["outside"]["side_top"]["n_outside"] == 3
    assert rec["outside"]["x"]["n_outside"] == 3            # x is side_top in Task D
    assert rec["outside"]["any_rule_length"]["n_outside"] == 3
    lo_ci, hi_ci = rec["outside"]["any_rule_length"]["share_ci95"]
    assert lo_ci < 3 / 20 < hi_ci
    assert support_share(moved, train, widen=0.0)["outside"]["side_top"]["n_outside"] == 5
    with pytest.raises(ValueError, match="widen"):
        Support(("side_top",), -0.1)


def test_background_of_renders_is_white_and_of_a_tint_is_not():
    imgs = generate("B", 12, 32, seed=3).images
    lv = background_level(imgs)
    assert np.all(lv == 255.0)
    tinted = (imgs.astype(np.float64) * 225 / 255).round().astype(np.uint8)
    s = background_summary(background_level(tinted))
    assert s["median"] == 225.0 and s["share_white"] == 0.0 and s["share_below_white"] == 1.0
    assert background_summary(lv)["share_white"] == 1.0 and WHITE_LEVEL <= 255
    with pytest.raises(ValueError, match="uint8"):
        background_level(imgs.astype(np.float32))


@pytest.mark.parametrize("task", ["A", "B", "D"])
def test_fresh_renders_colours_lie_in_their_boxes(task):
    """Exact renders are drawn inside App. C's boxes: their measured colour must be there (n = 60 per task;
    every element of A, B, D has a fully covered pixel, so no rim mix; at most 1 of 60 may fall out)."""
    rec = colour_box_share(fresh_renders(task, 60, 32).images, task)
    for name, _ in ELEMENTS[task]:
        assert rec[name]["n_found"] == 60
        assert rec[name]["raw"]["share_in_box"] >= 59 / 60
        assert rec[name]["any_pixel_share"] == 1.0


def test_a_tint_moves_yellow_out_of_its_box_and_whitening_brings_it_back():
    imgs = fresh_renders("D", 30, 32).images
    dim = (imgs.astype(np.float64) * 170 / 255).round().astype(np.uint8)  # V of every colour x 2/3: < 200
    rec = colour_box_share(dim, "D")["top"]
    assert rec["raw"]["share_in_box"] == 0.0                      # yellowish needs V >= 200 (App. C)
    assert rec["relative_to_background"]["share_in_box"] >= 29 / 30
    hsv = element_hsv(dim, "D")["top"]
    assert np.all(hsv[:, 2] <= 171)


def test_ratio_error_by_size_bins_and_errors():
    rng = np.random.default_rng(4)
    x = rng.uniform(0.1, 0.3, 400)
    y = 1.5 * x * np.where(x > 0.2, 1.1, 1.0)   # exact below 0.2, 10 % long above
    bins = ratio_error_by_size(x, y, 1.5, [0.1, 0.2, 0.3], n_boot=50)
    assert [b["n"] for b in bins] == [int(np.sum(x < 0.2)), int(np.sum(x >= 0.2))]
    assert bins[0]["median_abs_error"] == pytest.approx(0.0, abs=1e-12)
    assert bins[1]["median_abs_error"] == pytest.approx(0.1) and bins[1]["median_error"] == pytest.approx(0.1)
    empty = ratio_error_by_size(x, y, 1.5, [0.3, 0.4], n_boot=0)[0]
    assert empty["n"] == 0 and empty["median_abs_error"] is None
    with pytest.raises(ValueError, match="increasing"):
        ratio_error_by_size(x, y, 1.5, [0.3, 0.1])


def _run_evaluation(sample_images, train_batch):
    """A RunEvaluation without a run folder: ``sample_images`` stand for a model's samples."""
    from empirics import ddpm
    from empirics.runs import RunEvaluation, RunSamples

    task = train_batch.task.value
    samples = RunSamples(ddpm.make_config(task, "smoke"), "test", Path("."), sample_images,
                         np.arange(len(sample_images)), {})
    return RunEvaluation(Path("."), samples, train_batch, evaluate(sample_images, task),
                         evaluate(train_batch.images, task))


def test_goal_measures_pass_fresh_renders_and_fail_a_grey_tint():
    """Fresh renders (n = 200, another seed than the 400 training renders) meet the marginal goals; the same
    renders tinted grey (background 225) fail the background goal, and colours darkened by 40 % fail the
    colour goal: each goal can come out either way."""
    train = generate("B", 400, 32, seed=5)
    fresh = generate("B", 200, 32, seed=6).images
    good = goal_measures(_run_evaluation(fresh, train))
    assert good["background_white_percent"] == 100.0 and good["background_median"] == 255.0
    assert good["goals"] == {"background_white": True, "outside_rule_range": True, "colours": True}
    assert good["outside_rule_range_percent"] <= 5.0
    lo, hi = good["background_white_percent_ci95"]
    assert lo < 100.0 == hi
    tinted = (fresh.astype(np.float64) * 225 / 255).round().astype(np.uint8)
    grey = goal_measures(_run_evaluation(tinted, train))
    assert grey["background_white_percent"] == 0.0 and not grey["goals"]["background_white"]
    dark = np.where(fresh.min(-1, keepdims=True) < 250, (fresh * 0.6).astype(np.uint8), fresh)
    assert not goal_measures(_run_evaluation(dark, train))["goals"]["colours"]
    with pytest.raises(ValueError, match="RunEvaluation"):
        goal_measures(fresh)
