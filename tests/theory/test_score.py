"""Thm 4.2 (exact score) against autograd of log p_t, and identity (*)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.strategies import times, zetas
from theory import Discrete, MultiPatchData, Uniform, ou_schedule
from theory.score import log_density, rule_identity_residual, true_score


def _inputs(data, alpha, beta, scale, seed):
    rng = np.random.default_rng(seed)
    x = data.sample_xt(6, alpha, beta, rng)
    if scale > 0:  # far-away points, |x| up to scale
        x = x + rng.uniform(-scale, scale, size=x.shape)
    return x


@given(zetas(), st.integers(2, 6), times, st.sampled_from([0.0, 10.0, 1e3]), st.integers(0, 10**6),
       st.integers(2, 3))
def test_score_equals_autograd_of_log_density(zeta, d, t, scale, seed, n_patches):
    data = MultiPatchData(d, zeta, n_patches=n_patches)
    alpha, beta = ou_schedule(t)
    x = torch.tensor(_inputs(data, alpha, beta, scale, seed), requires_grad=True)
    lp = log_density(x, data, alpha, beta)
    assert torch.isfinite(lp).all()
    (grad,) = torch.autograd.grad(lp.sum(), x)
    s = true_score(x.detach(), data, alpha, beta)
    assert torch.isfinite(s).all()
    # Both sides are O(|x|/beta^2); the posterior mean's accuracy is 1e-10 relative.
    scale_ref = (x.detach().abs().max() + 1.0) / beta**2
    assert torch.allclose(s, grad, rtol=1e-9, atol=1e-9 * float(scale_ref))


@given(zetas(), st.integers(2, 5), times, st.sampled_from([0.0, 1e3]), st.integers(0, 10**6))
def test_identity_star_holds_to_1e12(zeta, d, t, scale, seed):
    data = MultiPatchData(d, zeta)
    alpha, beta = ou_schedule(t)
    x = _inputs(data, alpha, beta, scale, seed)
    res = rule_identity_residual(x, data, alpha, beta)
    # psi is recovered from s + x/beta^2, so rounding of x/beta^2 enters: bound relative to it.
    tol = 1e-12 * max(1.0, float(np.abs(x).max()) / alpha)
    assert np.all(np.abs(res) < tol)


def test_discrete_score_matches_explicit_mixture():
    zeta = Discrete([0.2, 0.5, 0.9], [0.3, 0.3, 0.4])
    d = 3
    data = MultiPatchData(d, zeta)
    alpha, beta = ou_schedule(0.3)
    x = torch.tensor(_inputs(data, alpha, beta, 2.0, 3), requires_grad=True)
    comps = []
    for z, p in zip(zeta.values, zeta.probs):
        mu = torch.zeros(2, d, dtype=torch.float64)
        mu[0, 0], mu[1, 1] = alpha * z, alpha * (1 - z)
        q = -((x - mu) ** 2).sum((1, 2)) / (2 * beta**2) - d * math.log(2 * math.pi * beta**2)
        comps.append(q + math.log(p))
    lp_ref = torch.logsumexp(torch.stack(comps), 0)
    assert torch.allclose(log_density(x, data, alpha, beta), lp_ref, rtol=1e-13, atol=1e-12)
    (g,) = torch.autograd.grad(lp_ref.sum(), x)
    assert torch.allclose(true_score(x.detach(), data, alpha, beta), g, rtol=1e-12, atol=1e-10)


def test_flat_and_numpy_inputs_round_trip():
    data = MultiPatchData(4, Uniform(0.2, 0.8))
    alpha, beta = ou_schedule(0.5)
    x = _inputs(data, alpha, beta, 0.0, 0)
    s = true_score(x, data, alpha, beta)
    assert isinstance(s, np.ndarray) and s.shape == x.shape
    s_flat = true_score(x.reshape(len(x), -1), data, alpha, beta)
    assert s_flat.shape == (len(x), 8)
    np.testing.assert_allclose(s_flat.reshape(s.shape), s, rtol=0, atol=0)


def test_pi_weights_far_from_support_stay_finite():
    data = MultiPatchData(2, Uniform(0.2, 0.8))
    alpha, beta = ou_schedule(1e-3)
    x = np.array([[[1e3, -1e3], [-1e3, -1e3]], [[-1e3, 0.0], [5.0, 1e3]]])
    s = true_score(x, data, alpha, beta)
    assert np.all(np.isfinite(s))
    # posterior mean of zeta sits at the support boundary nearest the data
    psi_u = (s[:, 0, 0] + x[:, 0, 0] / beta**2) * beta**2 / alpha
    assert psi_u[0] == pytest.approx(0.8, abs=1e-3) and psi_u[1] == pytest.approx(0.2, abs=1e-3)
