"""Def 4.3: psi_t and the rule error, against a net whose psi has closed-form moments."""

import pytest
import torch

from theory import MultiPatchData, ScaledBeta, ou_schedule
from theory.network import TwoLayerScore
from theory.rule import RuleError, psi, rule_error


def _aligned_linear_net(d, gamma, delta):
    """w^(1) = gamma u, w^(2) = delta v: psi = gamma^2 <x1,u> + delta^2 <x2,v>."""
    W = torch.zeros(2, 1, d, dtype=torch.float64)
    W[0, 0, 0], W[1, 0, 1] = gamma, delta
    return TwoLayerScore.from_weights(W, "linear")


def test_psi_of_aligned_linear_net():
    data = MultiPatchData(4, ScaledBeta(2, 3, 0.2, 0.8))
    net = _aligned_linear_net(4, 1.5, 0.5)
    x = torch.randn(10, 2, 4, dtype=torch.float64)
    torch.testing.assert_close(psi(net, x, data), 2.25 * x[:, 0, 0] + 0.25 * x[:, 1, 1], rtol=1e-14, atol=1e-14)


def test_rule_error_matches_closed_form_within_standard_errors():
    zeta = ScaledBeta(2, 3, 0.2, 0.8)
    data = MultiPatchData(4, zeta)
    g2, d2 = 2.25, 0.25
    net = _aligned_linear_net(4, 1.5, 0.5)
    alpha, beta = ou_schedule(0.4)
    # psi = alpha (g2 zeta + d2 (1 - zeta)) + beta (g2 e1 + d2 e2)
    mean = alpha * (g2 * zeta.mean + d2 * (1 - zeta.mean))
    var = alpha**2 * (g2 - d2) ** 2 * zeta.var + beta**2 * (g2**2 + d2**2)
    exact = RuleError.from_moments(mean, var, alpha / beta**2)
    est = rule_error(net, data, alpha, beta, n=40_000, rng=3)
    assert est.total == pytest.approx(est.bias**2 + est.variance, rel=1e-12)
    assert abs(est.bias - exact.bias) < 4 * est.bias_se
    assert abs(est.variance - exact.variance) < 4 * est.variance_se
    assert abs(est.total - exact.total) < 4 * est.total_se


def test_rule_error_is_reproducible():
    data = MultiPatchData(4, ScaledBeta(2, 3, 0.2, 0.8))
    net = TwoLayerScore(4, 3, "relu", init_std=0.5)
    alpha, beta = ou_schedule(0.4)
    assert rule_error(net, data, alpha, beta, n=1000, rng=5) == rule_error(net, data, alpha, beta, n=1000, rng=5)
