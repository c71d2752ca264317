"""The evaluator on images it did not draw: the reference renderer's conventions (empirics.render_reference).

Features are geometric statements (empirics.evaluate's docstring), so they must read the same
whichever way a convention draws the task. 100 images per convention set here; the goals (valid >=
98 %, R^2 >= 0.99, slope within 2 %, Error <= 0.02) are measured on 2000 per set by
benchmarks/evaluator.py. With 100 images a valid fraction of 98 % has a binomial standard error of
1.4 %, so the valid floor here is 95 %; the rule metrics keep the goals' values.
"""

from __future__ import annotations

import numpy as np
import pytest

from empirics.data.render_reference import presets_for, render_reference
from empirics.evaluate import evaluate
from empirics.tasks import Task

# Conventions the evaluator does not meet (docs/empirics.md): 1-2 px bars drawn by area averaging, of which
# about half cover two partial rows and have no height in their pixels (empirics.box_profile: Invalid);
# shadows ending under a pixel past a PIL-blurred pole read ~0.1 px long (Error 0.014-0.020 on 100-400).
# Their own tests are below.
OPEN = {(Task.B, "b_thin_bars"), (Task.A, "a_short_shadow")}
CASES = [(t, p) for t in Task for p in presets_for(t) if (t, p) not in OPEN]


@pytest.mark.parametrize(("task", "preset"), CASES, ids=[f"{t.value}-{p}" for t, p in CASES])
def test_rule_read_through_other_conventions(task, preset):
    batch = render_reference(task, 100, 32, seed=11, conventions=preset)
    s = evaluate(batch.images, task).summary(n_boot=0)
    assert s["valid_fraction"] >= 0.95, s["invalid_reasons"]
    assert s["r2"] >= 0.99 and s["slope_rel_error"] <= 0.02 and s["error"] <= 0.02, s
    assert s["coarse_violations"] == 0


@pytest.mark.parametrize("preset", ["default", "a_straddle", "a_strip_over_pole"])
def test_pole_height_is_measured_from_its_own_foot(preset):
    """h2 = height of the pole above the point where it meets the ground, wherever the strip lies."""
    batch = render_reference("A", 60, 32, seed=5, conventions=preset, downscaler="cv2_area")
    ev = evaluate(batch.images, "A")
    assert ev.valid.all(), set(ev.reason)
    err = np.abs(ev.features["h2"] - batch.params["h2"]) * 32
    assert np.median(err) <= 0.05 and err.max() <= 0.3


def test_square_on_the_border_is_measured_not_rejected():
    batch = render_reference("D", 100, 32, seed=6, conventions="d_touch_border", downscaler="cv2_area")
    ev = evaluate(batch.images, "D")
    on_border = np.zeros(len(batch), bool)
    for key in ("top", "bottom"):
        half = batch.params[f"side_{key}"] / 2
        x, y = batch.params[f"{key}_x"], batch.params[f"{key}_y"]
        on_border |= (x - half < 1 / 64) | (x + half > 1 - 1 / 64) | (y - half < 1 / 64) | (y + half > 1 - 1 / 64)
    assert on_border.sum() >= 10            # the case under test occurs
    assert ev.valid.all(), set(ev.reason)
    for key in ("side_top", "side_bottom"):
        assert np.max(np.abs(ev.features[key] - batch.params[key])[on_border]) * 32 <= 0.05


def _shadow_speck(seed=3, index=26):
    """A short-shadow image whose shadow shows as one labelled pixel beside the pole's foot."""
    batch = render_reference("A", index + 1, 32, seed=seed, conventions="a_short_shadow", downscaler="cv2_area")
    return batch.images[index], {k: v[index] for k, v in batch.params.items()}


def test_shadow_of_one_pixel_beside_the_pole_is_measured():
    """A part smaller than the speck size counts when it touches the rest of its group (the pole)."""
    image, truth = _shadow_speck()
    ev = evaluate(image[None], "A")
    assert ev.valid[0], ev.reason[0]
    # l2 is 1-2 px here and read from 2-4 partly covered pixels: a third of a pixel is the scale.
    assert abs(ev.features["l2"][0] - truth["l2"]) * 32 <= 0.5


def test_lone_speck_of_the_shadow_colour_is_not_a_shadow():
    image, truth = _shadow_speck()
    ink = 255 - image.astype(int)
    foot = int(truth["ground_y"] * 32)
    below = ink[foot:].sum(-1)
    ys, xs = np.nonzero(below > 20)
    lone = image.copy()
    y, x = foot + ys[np.argmax(below[ys, xs])], xs[np.argmax(below[ys, xs])]
    lone[2, 2] = image[y, x]                     # the shadow's darkest pixel, far from the pole
    lone[foot:] = 255                            # and no shadow under the foot
    ev = evaluate(lone[None], "A")
    assert not ev.valid[0] and ev.reason[0] == "missing shadow"


def test_short_thin_strip_is_measured_beyond_the_pole_rim():
    """A strip 0.5 px thick ending 1.8 px past the pole's edge (PIL blur): found by shape beyond the
    pole's own rim (not a fixed pixel past its edge), so the image is valid."""
    batch = render_reference("A", 45, 32, seed=11, conventions="a_thin_strip", downscaler="pil_bilinear")
    ev = evaluate(batch.images[44:], "A")
    assert ev.valid[0], ev.reason[0]
    assert abs(ev.features["l2"][0] - batch.params["l2"][44]) * 32 <= 0.5


def test_strip_level_from_its_pixels_that_touch_the_pole():
    """A short strip whose every fully covered pixel touches the pole: its ink level comes from those
    pixels (they hold no pole ink), not from its half-covered bottom row (which read l2 1.2 px long)."""
    batch = render_reference("A", 35, 32, seed=2025, conventions="a_short_shadow", downscaler="cv2_area")
    ev = evaluate(batch.images[34:], "A")
    assert ev.valid[0], ev.reason[0]
    assert abs(ev.features["l2"][0] - batch.params["l2"][34]) * 32 <= 0.1


def _thin_bars(downscaler, n=80):
    batch = render_reference("B", n, 32, seed=13, conventions="b_thin_bars", downscaler=downscaler)
    ev = evaluate(batch.images, "B")
    return ev, np.abs(ev.features["h2"] - batch.params["h2"]) * 32


def test_sharp_thin_bars_are_measured_or_declared_unmeasurable():
    """Area-averaged 1-2 px bars: those covering a full row are measured exactly; those covering two
    partial rows have no height in their pixels (empirics.box_profile) and are Invalid, not a number."""
    ev, err = _thin_bars("cv2_area")
    too_thin = np.array(["too thin" in r for r in ev.reason])
    # 52 % on 2000 images (docs/evaluator_reference.json); with 80 the binomial SE is 5.6 %, so [0.2, 0.8]
    # is > 5 SE from it: the bound only asks that both cases occur.
    assert 0.2 <= too_thin.mean() <= 0.8
    assert np.median(err[ev.valid]) <= 0.01 and np.percentile(err[ev.valid], 90) <= 0.1


def test_blurred_thin_bars_are_measured_from_their_profile():
    """PIL-bilinear 1-2 px bars: no pixel is fully covered, the height comes from the profile's shape
    (before: from the peak pixel as the ink level, median error ~0.2 px, R^2 0.88)."""
    ev, err = _thin_bars("pil_bilinear")
    # 97.2 % valid on 2000 images (docs/evaluator_reference.json); with 80 the binomial SE is 1.8 %, so
    # 90 % is 4 SE below it.
    assert ev.valid.mean() >= 0.9, set(ev.reason)
    assert np.median(err[ev.valid]) <= 0.02 and np.percentile(err[ev.valid], 90) <= 0.06


def test_a_speck_of_the_pole_rim_does_not_stand_in_for_a_faint_strip():
    """A 0.37 px strip 11 px long, too faint to label, beside a rim speck of shadow colour under the
    pole: the speck is adopted only after the retries (which find the strip), so the shadow is not
    read 1 px long on the wrong side of the pole (a coarse violation the image does not have)."""
    batch = render_reference("A", 854, 32, seed=2025, conventions="a_thin_strip", downscaler="pil_bilinear")
    ev = evaluate(batch.images[853:], "A")
    assert ev.valid[0], ev.reason[0]
    assert ev.coarse_ok[0] and abs(ev.features["l2"][0] - batch.params["l2"][853]) * 32 <= 0.3


def test_a_pale_bar_is_found_by_its_colour_mixed_with_white():
    """A 1.03 px bar of a dark, weakly saturated blue-green (HSV 93/118/112) over two half-covered rows:
    no pixel reaches the family's saturation floor, yet its ink, scaled to a coverage below one, is a
    blue-green of App. C. It is found, and reported as what it is (too thin to measure, both rows
    0.5 covered), not as a missing bar; the same pixels made grey stay a missing bar."""
    batch = render_reference("B", 65, 32, seed=2025, conventions="b_thin_bars", downscaler="pil_bilinear")
    image = batch.images[64:65]
    assert abs(batch.params["h2"][64] * 32 - 1.03) <= 0.01
    ev = evaluate(image, "B")
    assert "too thin" in ev.reason[0] and "missing" not in ev.reason[0], ev.reason[0]
    grey = image.copy()
    bar = (255 - grey[0].astype(int)).sum(-1) > 0
    bar[:, :16] = False                                        # the right half holds only the pale bar
    luma = grey[0][bar] @ np.array([0.299, 0.587, 0.114])
    grey[0][bar] = np.round(luma)[:, None].astype(np.uint8)
    assert "missing blue-green rectangle" in evaluate(grey, "B").reason[0]
