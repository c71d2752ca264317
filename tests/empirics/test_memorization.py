"""App. D.2 memorization: element colours, nearest neighbours, replica fractions."""

from __future__ import annotations

import numpy as np
import pytest

from empirics import ddpm
from empirics.evaluate import evaluate
from empirics.memorization import element_colours, feature_space, memorization, nearest_neighbours, replica_fraction
from empirics.tasks import ELEMENTS, Task, generate


@pytest.mark.parametrize("task", "ABCD")
def test_element_colours_of_rendered_images(task):
    """Median colour of each element's strongest pixels: exact for most images (box-filtered interiors)."""
    batch = generate(task, 300, 32, seed=3)
    colours = element_colours(batch.images, task)
    for name, _ in ELEMENTS[Task.parse(task)]:
        truth = np.stack([batch.params[f"{name}_{c}"] for c in ("red", "green", "blue")], 1) / 255.0
        err = np.abs(colours[name] - truth).max(1) * 255
        assert np.isfinite(err).all()
        assert np.median(err) == 0.0, name
        # tiny elements (a 3 px circle, a 2 px tall bar) may have no full-coverage pixel
        assert np.percentile(err, 95) <= 3.0, name


def test_training_images_are_their_own_replicas():
    batch = generate("A", 200, 32, seed=1)
    ev = evaluate(batch.images, "A")
    mem = memorization(ev, batch.images, ev, batch.images, rtol=0.01)
    assert mem.conforming.size > 0
    assert np.all(mem.distance_structure[:, 0] == 0) and np.all(mem.distance_colour[:, 0] == 0)
    assert np.array_equal(mem.index_colour[:, 0], mem.conforming)
    assert mem.summary()["replica_fraction_colour"]["0.01"] == 1.0
    assert mem.summary()["dims"] == {"structure": 4, "structure_colour": 13}


def test_fresh_images_are_not_replicas_at_small_thresholds():
    train, fresh = generate("A", 400, 32, seed=1), generate("A", 200, 32, seed=2)
    mem = memorization(evaluate(fresh.images, "A"), fresh.images, evaluate(train.images, "A"), train.images)
    s = mem.summary()
    assert s["replica_fraction_colour"]["0.01"] == 0.0
    assert s["nn_distance_colour"]["min"] > s["nn_distance_structure"]["min"]  # colours only add distance


def test_exact_empirical_denoiser_only_replicates():
    """The package's memorization reference: samples of the exact empirical score are training images."""
    train = generate("C", 24, 32, seed=4)
    imgs = ddpm.sample_images(ddpm.EmpiricalDenoiser(train.images), 8, 32, ddpm.SampleSpec("ddim", 50, 1.0),
                              seed=0, batch_size=8, device="cpu")
    ev_s, ev_t = evaluate(imgs, "C"), evaluate(train.images, "C")
    X, R = feature_space(ev_s, imgs, True), feature_space(ev_t, train.images, True)
    ok = np.all(np.isfinite(X), axis=1)
    d, _ = nearest_neighbours(X[ok], R, k=1)
    assert ok.sum() >= 6 and d.max() < 1e-2
    assert replica_fraction(d[:, 0], (0.01,)) == {0.01: 1.0}


def test_nearest_neighbours_validation_and_nan_reference_rows():
    R = np.array([[0.0, 0.0], [np.nan, 1.0], [3.0, 4.0]])
    d, i = nearest_neighbours(np.array([[2.9, 4.1]]), R, k=2)
    assert list(i[0]) == [2, 0] and d[0, 0] == pytest.approx(np.hypot(0.1, 0.1))
    with pytest.raises(ValueError, match="same width"):
        nearest_neighbours(np.zeros((1, 3)), R)
    with pytest.raises(ValueError, match="finite"):
        nearest_neighbours(np.array([[np.nan, 0.0]]), R)
    with pytest.raises(ValueError, match="k must be"):
        nearest_neighbours(np.zeros((1, 2)), R, k=3)


def test_a_sample_without_measurable_colours_keeps_its_length_neighbours():
    """Colours outside App. C's boxes drop a sample from the 13-D space only, and the summary says so."""
    batch = generate("A", 200, 32, seed=1)
    ev = evaluate(batch.images, "A")
    recoloured = batch.images.copy()
    ink = recoloured.astype(int).sum(-1) < 3 * 250
    recoloured[ink] = (200, 0, 200)  # magenta: in none of Task A's colour families
    mem = memorization(ev, recoloured, ev, batch.images, rtol=0.01)
    assert mem.conforming.size > 0 and not mem.has_colour.any()
    assert np.all(mem.distance_structure[:, 0] == 0)  # the 4-D neighbours are still found
    assert np.all(np.isnan(mem.distance_colour)) and np.all(mem.index_colour == -1)
    s = mem.summary()
    assert s["n_conforming"] == mem.conforming.size and s["n_conforming_with_colours"] == 0
    assert s["nn_distance_colour"] is None and s["replica_fraction_structure"]["0.01"] == 1.0
