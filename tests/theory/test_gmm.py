"""App. A: Fréchet distance, the FID-0 mixture and its moment-matched Gaussian, conditional structure."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import integrate, stats

from theory.gmm import (
    GaussianMixture,
    appendix_a_mixture,
    frechet_distance,
    mixture_fid,
    moment_matched_gaussian,
)


def test_A1_mixture_moments_as_printed():
    p = appendix_a_mixture()
    np.testing.assert_array_equal(p.mean, [0.0, 0.0])
    np.testing.assert_allclose(p.covariance, [[2.0, 1.0], [1.0, 2.0]], rtol=0, atol=1e-15)


def test_A2_fid_is_zero():
    p = appendix_a_mixture()
    q = moment_matched_gaussian(p)
    assert abs(mixture_fid(p, q)) < 1e-12
    np.testing.assert_allclose(q.covariance, [[2.0, 1.0], [1.0, 2.0]], atol=1e-15)


def test_A3_same_covariance_different_conditional_mean():
    """Cov(x, y) = 1 in both p and q (App. A's contrast is not in the covariance); E[y | x] differs."""
    p = appendix_a_mixture()
    q = moment_matched_gaussian(p)
    assert p.covariance[0, 1] == pytest.approx(q.covariance[0, 1], abs=1e-15)
    x = np.linspace(-4, 4, 81)
    mp, vp = p.conditional(x)
    mq, vq = q.conditional(x)
    np.testing.assert_allclose(mp, np.tanh(x), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(vp, 2 - np.tanh(x) ** 2, rtol=1e-12)
    np.testing.assert_allclose(mq, x / 2, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(vq, 1.5, rtol=1e-13)
    assert np.max(np.abs(mp - mq)) > 1.0


def test_conditional_mean_against_numerical_integration():
    p = appendix_a_mixture()
    for x0 in (-1.3, 0.2, 2.5):
        num = integrate.quad(lambda y, x0=x0: y * p.density([x0, y]), -20, 20, epsabs=0, epsrel=1e-12)[0]
        den = integrate.quad(lambda y, x0=x0: p.density([x0, y]), -20, 20, epsabs=0, epsrel=1e-12)[0]
        assert p.conditional(np.array([x0]))[0][0] == pytest.approx(num / den, rel=1e-10)


def test_density_integrates_to_one_and_matches_scipy():
    rng = np.random.default_rng(0)
    covs = [[[1.0, 0.3], [0.3, 2.0]], [[0.5, 0.0], [0.0, 0.4]]]
    m = GaussianMixture([0.3, 0.7], [[0.0, 1.0], [2.0, -1.0]], covs)
    pts = rng.normal(size=(50, 2))
    ref = 0.3 * stats.multivariate_normal([0, 1], covs[0]).pdf(pts) \
        + 0.7 * stats.multivariate_normal([2, -1], covs[1]).pdf(pts)
    np.testing.assert_allclose(m.density(pts), ref, rtol=1e-12)
    total = integrate.dblquad(lambda y, x: m.density([x, y]), -12, 12, -12, 12, epsabs=1e-10)[0]
    assert total == pytest.approx(1.0, abs=1e-8)


def test_sample_moments_match():
    p = appendix_a_mixture()
    x = p.sample(200_000, np.random.default_rng(1))
    n = x.shape[0]
    assert np.all(np.abs(x.mean(0) - p.mean) < 5 * np.sqrt(np.diag(p.covariance) / n))
    np.testing.assert_allclose(np.cov(x.T), p.covariance, atol=0.03)


@given(st.integers(1, 4), st.integers(0, 10**6))
def test_frechet_distance_properties(dim, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(dim, dim))
    b = rng.normal(size=(dim, dim))
    s1, s2 = a @ a.T + 0.1 * np.eye(dim), b @ b.T + 0.1 * np.eye(dim)
    m1, m2 = rng.normal(size=dim), rng.normal(size=dim)
    d12 = frechet_distance(m1, s1, m2, s2)
    assert d12 == pytest.approx(frechet_distance(m2, s2, m1, s1), rel=1e-8, abs=1e-10)
    assert d12 >= -1e-10
    assert abs(frechet_distance(m1, s1, m1, s1)) < 1e-9 * max(1.0, np.trace(s1))
    # commuting case: W2^2 = |m1 - m2|^2 + sum (sqrt(l1) - sqrt(l2))^2 for diagonal covariances
    l1, l2 = rng.uniform(0.1, 3, dim), rng.uniform(0.1, 3, dim)
    ref = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(l1) - np.sqrt(l2)) ** 2)
    assert frechet_distance(m1, np.diag(l1), m2, np.diag(l2)) == pytest.approx(ref, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("call, word", [
    (lambda: frechet_distance([0, 0], np.eye(2), [0, 0, 0], np.eye(2)), "mean2"),
    (lambda: frechet_distance([0, 0], [[1, 2], [0, 1]], [0, 0], np.eye(2)), "symmetric"),
    (lambda: frechet_distance([0, 0], [[1, 0], [0, -1]], [0, 0], np.eye(2)), "semi-definite"),
    (lambda: frechet_distance([0, math.nan], np.eye(2), [0, 0], np.eye(2)), "mean1"),
    (lambda: GaussianMixture([0.5, 0.6], [[0, 0], [1, 1]], [np.eye(2)] * 2), "sum to 1"),
    (lambda: GaussianMixture([1.0], [[0, 0], [1, 1]], [np.eye(2)]), "means"),
    (lambda: GaussianMixture([1.0], [[0, 0]], [np.zeros((2, 2))]), "positive definite"),
    (lambda: appendix_a_mixture().conditional([0.0], given=0, target=0), "different"),
    (lambda: appendix_a_mixture().conditional([0.0], given=2), "given"),
    (lambda: moment_matched_gaussian("p"), "mixture"),
    (lambda: appendix_a_mixture().density([1.0, 2.0, 3.0]), "points"),
])
def test_invalid_inputs(call, word):
    with pytest.raises(ValueError, match=word):
        call()
