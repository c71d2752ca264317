"""App. D.2 memorization: element colours, nearest neighbours, replica fractions."""

from __future__ import annotations

import numpy as np
import pytest

from empirics import ddpm
from empirics.evaluate import evaluate
from empirics.evaluator.memorization import (
    element_colours,
    feature_space,
    memorization,
    nearest_neighbours,
    replica_fraction,
)
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


# ---- Fig. 5b with controls: pixel-space neighbours, leave-one-out, replica curves, novelty test ----

def test_pixel_space_finds_an_exact_copy_at_distance_zero():
    from empirics.evaluator.memorization import fit_whitening, pixel_vectors

    train = generate("B", 60, 32, seed=11).images
    query = np.concatenate([generate("B", 5, 32, seed=12).images, train[[17, 42]]])
    w = fit_whitening(train)
    for f in (w.transform, pixel_vectors):
        d, i = nearest_neighbours(f(query), f(train), k=2, method="chunked", chunk=3)
        assert d[5, 0] == 0.0 and i[5, 0] == 17 and d[6, 0] == 0.0 and i[6, 0] == 42
        assert np.all(d[:5, 0] > 0) and np.all(d[:, 1] > 0)


def test_chunked_search_equals_unchunked_and_brute_force():
    from scipy.spatial.distance import cdist

    rng = np.random.default_rng(0)
    R, Q = rng.normal(size=(300, 50)), rng.normal(size=(70, 50))
    d1, i1 = nearest_neighbours(Q, R, k=3, method="chunked", chunk=1)
    d2, i2 = nearest_neighbours(Q, R, k=3, method="chunked", chunk=70)
    d3, i3 = nearest_neighbours(Q, R, k=3, method="chunked", chunk=16)
    assert np.array_equal(d1, d2) and np.array_equal(i1, i2) and np.array_equal(d1, d3) and np.array_equal(i1, i3)
    full = cdist(Q, R)
    assert np.array_equal(i1, np.argsort(full, axis=1)[:, :3])
    np.testing.assert_allclose(d1, np.sort(full, axis=1)[:, :3], rtol=1e-12)
    dk, ik = nearest_neighbours(Q, R, k=3, method="kdtree")
    assert np.array_equal(ik, i1) and np.allclose(dk, d1, rtol=1e-12)


@pytest.mark.parametrize("method", ["kdtree", "chunked"])
def test_leave_one_out_excludes_the_point_itself_but_not_a_duplicate(method):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 5))
    X[7] = X[3]  # an identical duplicate
    d, i = nearest_neighbours(X, X, k=2, leave_one_out=True, method=method, chunk=6)
    assert not np.any(i == np.arange(40)[:, None])
    assert i[3, 0] == 7 and i[7, 0] == 3 and d[3, 0] == 0.0
    full = np.linalg.norm(X[:, None] - X[None], axis=2)
    np.fill_diagonal(full, np.inf)
    np.testing.assert_allclose(d[:, 0], full.min(1), rtol=1e-12)
    assert np.all(d[np.arange(40) != 3][np.arange(39) != 6, 0] > 0)


def test_neighbour_search_rejects_bad_inputs():
    from empirics.evaluator.memorization import fit_whitening, novelty_test, pixel_vectors, threshold_grid

    X = np.zeros((4, 2))
    with pytest.raises(ValueError, match="same set"):
        nearest_neighbours(X, X + 1, leave_one_out=True)
    with pytest.raises(ValueError, match="method must be one of"):
        nearest_neighbours(X, X, method="annoy")
    with pytest.raises(ValueError, match="chunk must be"):
        nearest_neighbours(X, X, chunk=0)
    with pytest.raises(ValueError, match="k must be"):
        nearest_neighbours(X, X, k=4, leave_one_out=True)
    with pytest.raises(ValueError, match="uint8"):
        pixel_vectors(np.zeros((2, 8, 8, 3)))
    with pytest.raises(ValueError, match="identical"):
        fit_whitening(np.zeros((3, 8, 8, 3), np.uint8))
    w = fit_whitening(generate("A", 10, 32, seed=0).images)
    with pytest.raises(ValueError, match="like the training images"):
        w.transform(np.zeros((1, 16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="at least one"):
        novelty_test([], [1.0])
    with pytest.raises(ValueError, match="finite"):
        novelty_test([np.nan], [1.0])
    with pytest.raises(ValueError, match="fresh_distance"):
        threshold_grid([])


def test_novelty_test_sees_near_copies_and_not_fresh_draws():
    """Samples drawn like the null: closer than its 1st percentile at ~1 % (binomial); near-copies: p ~ 0."""
    from scipy.stats import binom

    from empirics.evaluator.memorization import Novelty, novelty_test

    rng = np.random.default_rng(5)
    n = 2000
    fresh, same = rng.gamma(4.0, 1.0, n), rng.gamma(4.0, 1.0, n)
    t = novelty_test(same, fresh)
    # the 1st percentile of 2000 fresh draws is itself random; a 99.9 % binomial band at p = 0.01 covers it
    assert binom.ppf(0.0005, n, 0.01) - 10 <= t.n_below <= binom.ppf(0.9995, n, 0.01) + 10
    copies = np.concatenate([rng.uniform(0, 0.01, 200), same[200:]])
    c = novelty_test(copies, fresh)
    assert c.verdict is Novelty.CLOSER and c.p_closer < 1e-6 and c.n_below >= 200
    assert c.share_below_ci95[0] > 0.01
    assert novelty_test(same + 5.0, fresh).verdict is Novelty.FARTHER


def test_replica_curves_one_function_for_every_set():
    """Rule-exact renders as 'samples': every set's curve is replica_fraction of its own distances, the
    samples behave like the fresh draws, and a training image passed as a sample is at distance 0."""
    from empirics.evaluator.memorization import MeasuredImages, ReplicaSet, Space, replica_curves

    train = generate("D", 150, 32, seed=21)
    samp = np.concatenate([generate("D", 40, 32, seed=22).images, train.images[:3]])
    fresh = generate("D", 60, 32, seed=23).images
    m = [MeasuredImages(x, evaluate(x, "D")) for x in (samp, train.images, fresh)]
    rc = replica_curves(*m, rtol=0.05, chunk=17)
    assert rc.dims == {Space.LENGTHS: 2, Space.LENGTHS_COLOURS: 8, Space.PIXELS: 3072, Space.PIXELS_RAW: 3072}
    for space in Space:
        t = rc.thresholds(space)
        assert np.all(np.diff(t) > 0)
        for g in rc.groups:
            shares = replica_fraction(rc.distance(space, g), t)
            assert rc.curve(space, g, t).tolist() == [shares[float(x)] for x in t]
            assert rc.curve(space, g, t)[-1] == 1.0
        pix = rc.neighbours[(space, ReplicaSet.VALID)]
        copies = np.isin(pix.members, [40, 41, 42])
        if space in (Space.PIXELS, Space.PIXELS_RAW):
            assert np.all(pix.distance[copies, 0] == 0) and list(pix.index[copies, 0]) == [0, 1, 2]
    loo = rc.neighbours[(Space.PIXELS, ReplicaSet.TRAIN_LOO)]
    assert not np.any(loo.index[:, 0] == loo.members)
    s = rc.summary()
    assert set(s["spaces"]["pixels_whitened"]["sets"]) == {"conforming", "valid", "fresh", "train_loo"}
    assert s["spaces"]["pixels_raw"]["novelty"]["valid"]["n_below"] >= 3
    with pytest.raises(ValueError, match="not measured"):
        rc.distance(Space.PIXELS, ReplicaSet.MATCHED)
    with pytest.raises(ValueError, match="one task"):
        replica_curves(m[0], MeasuredImages(train.images, evaluate(train.images, "C")), m[2])
    with pytest.raises(ValueError, match="MeasuredImages"):
        replica_curves(m[0], train, m[2])
