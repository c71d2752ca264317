"""Short Task A shadows (1-5 px) and very large inputs: the shadow's end is read from the strip's far
edge (``empirics.evaluate._shadow_end``), not from its centroid, whose partial end pixels bias it long.

Goals (issue item 6): rule lengths >= 1 px within 5 %, >= 3 px within 1.5 %, on renders of the independent
reference renderer (``empirics.render_reference``, preset ``a_short_shadow``) downscaled by PIL's bilinear
(kernel a = 1) and OpenCV's INTER_AREA (a = 0), and on our own exact renders; a 1024 px enlargement of a
render is valid and measured like its source. The bound checked per length bin is on the median absolute
relative error of l2 (the typical image), with n = 60 renders per downscaler; before the change the
1-2 px bin read +7.5 % (PIL) and +3.4 % (INTER_AREA) at the median and ours 91 % conforming.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from empirics.data.render_reference import render_reference
from empirics.evaluate import evaluate
from empirics.evaluator.box_profile import box_profile, fit_boxes, kernel_width
from empirics.evaluator.controls import fresh_renders
from empirics.evaluator.metrics import conforming_fraction

N_REF = 60
SEED = 11
BINS = ((1.0, 3.0, 0.05), (3.0, np.inf, 0.015))     # (lo px, hi px, bound on the median |relative error|)


@pytest.mark.parametrize("downscaler", ["pil_bilinear", "cv2_area"])
def test_short_shadows_of_the_reference_renderer_meet_the_goals(downscaler):
    ref = render_reference("A", N_REF, 32, SEED, conventions="a_short_shadow", downscaler=downscaler)
    ev = evaluate(ref.images, "A")
    assert ev.valid.mean() >= 0.95
    for feature in ("l1", "h1", "h2", "l2"):
        truth = ref.params[feature] * 32
        rel = np.abs(ev.features[feature] * 32 - truth) / truth
        for lo, hi, bound in BINS:
            sel = ev.valid & (truth >= lo) & (truth < hi)
            if feature == "l2" and lo == 1.0:
                assert sel.sum() >= 15, "the preset must make short shadows"
            if sel.any():
                assert np.median(rel[sel]) <= bound, (feature, lo, float(np.median(rel[sel])))


def test_fresh_exact_task_a_renders_conform():
    """Our own exact renders: the fine rule holds within +-1 % for (nearly) all (91 % before the change,
    when l2 of near suns read long by up to 1.5 %). n = 300: with a true share of 99 % the binomial
    standard error is 0.6 %, so >= 97 % fails only for a real regression."""
    batch = fresh_renders("A", 300)
    ev = evaluate(batch.images, "A")
    assert ev.valid.all()
    assert conforming_fraction(ev.x[ev.valid], ev.y[ev.valid], 1.0) >= 0.97
    rel = np.abs(ev.features["l2"] / batch.params["l2"] - 1)
    assert np.max(rel) <= 0.01


def test_a_1024_px_enlargement_is_valid_and_measured_like_its_source():
    batch = fresh_renders("A", 3)
    big = np.stack([cv2.resize(im, (1024, 1024), interpolation=cv2.INTER_NEAREST) for im in batch.images])
    ev = evaluate(big, "A")
    assert ev.valid.all(), ev.reason
    for feature in ("l1", "h1", "h2", "l2"):
        # 0.003 of the image = 0.1 px at 32 px: the cut sun's edge is a staircase at 1024 px
        assert np.max(np.abs(ev.features[feature] - batch.params[feature])) <= 0.003, feature


@pytest.mark.parametrize("a", [0.0, 1.0])
def test_kernel_width_and_box_fit_recover_a_blurred_box(a):
    c = np.arange(24) + 0.5
    long = 0.8 * box_profile(c, 5.3, 9.7, a)                 # a pole-like box: both ends known
    got, rms = kernel_width(long[None], 5.3, 9.7, 0.8)
    assert got[0] == pytest.approx(a, abs=1e-9) and rms[0] <= 1e-9
    short = 1.7 * box_profile(np.arange(12) + 0.5, 4.0, 1.45, a)   # a 1.45 px strip, near end on a boundary
    held = fit_boxes(short[None], [a], edge=[4.0])
    assert held.length[0] == pytest.approx(1.45, abs=2e-3)
    if a == 1.0:                                              # blurred: identifiable without the near end
        free = fit_boxes(short[None], [a])
        assert free.edge[0] + free.length[0] == pytest.approx(5.45, abs=2e-3)


def test_box_fit_rejects_bad_input():
    with pytest.raises(ValueError, match="profiles"):
        fit_boxes(np.ones(5), [0.0])
    with pytest.raises(ValueError, match="kernel widths"):
        fit_boxes(np.ones((1, 5)), [3.0])
    with pytest.raises(ValueError, match="ink"):
        fit_boxes(np.zeros((1, 5)), [0.0], max_length=4.0)
