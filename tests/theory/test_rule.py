"""Def 4.3: psi_t and the rule error (against closed-form moments); Thm 4.4's lower bound."""

import pytest
import torch

from theory import MultiPatchData, ScaledBeta, ou_schedule
from theory.network import TwoLayerScore
from theory.rule import RuleError, psi, rule_error, thm44_lower_bound
from theory.train import TrainConfig, train


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


# ---- Thm 4.4 lower bound -------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["relu", "linear", "quadratic", "cubic"])
def test_thm44_bound_is_below_the_rule_error_of_trained_nets(activation):
    """Trained (Monte Carlo GD) nets: bound <= E, up to 4 combined standard errors."""
    cfg = TrainConfig(activation=activation, t=0.4, d=12, m=3, n=40, n_eps=5, epochs=150, device="cpu")
    res = train(cfg, progress=False)
    alpha, beta = cfg.alpha_beta
    err = rule_error(res.net, cfg.data(), alpha, beta, n=20_000, rng=1)
    bound = thm44_lower_bound(res.net, cfg.data(), alpha, beta, n=4000, rng=2)
    assert bound.value > 0
    assert bound.value - err.total < 4 * (bound.se + err.total_se)
    assert bound.value == pytest.approx(sum(bound.per_patch), rel=1e-12)


def test_thm44_bound_of_linear_net_in_closed_form():
    """Linear sigma: Var(psi^(p) | zeta, eps_-) = beta^2 (sum_r gamma_r^2)^2 exactly, for every draw."""
    torch.manual_seed(0)
    W = torch.randn(2, 3, 5, dtype=torch.float64) * 0.7
    net = TwoLayerScore.from_weights(W, "linear")
    data = MultiPatchData(5, ScaledBeta(2, 3, 0.2, 0.8))
    alpha, beta = ou_schedule(0.3)
    bound = thm44_lower_bound(net, data, alpha, beta, n=50, rng=0)
    g1 = float((W[0] @ torch.tensor(data.u)).pow(2).sum())
    g2 = float((W[1] @ torch.tensor(data.v)).pow(2).sum())
    assert bound.per_patch[0] == pytest.approx(beta**2 * g1**2, rel=1e-12)
    assert bound.per_patch[1] == pytest.approx(beta**2 * g2**2, rel=1e-12)
    assert bound.se < 1e-12


def test_thm44_bound_with_initial_weights():
    """The paper's split (eps_- on span(w^0)) for weights in span(w^0, f); refused otherwise."""
    torch.manual_seed(1)
    d, m = 8, 3
    W0 = torch.randn(2, m, d, dtype=torch.float64) * 0.3
    data = MultiPatchData(d, ScaledBeta(2, 3, 0.2, 0.8))
    feats = torch.tensor(data.features)
    mix = torch.randn(2, m, m, dtype=torch.float64)
    W = torch.einsum("prs,psd->prd", mix, W0) + torch.randn(2, m, 1, dtype=torch.float64) * feats[:, None, :]
    net = TwoLayerScore.from_weights(W, "cubic")
    alpha, beta = ou_schedule(0.5)
    bound = thm44_lower_bound(net, data, alpha, beta, n=4000, rng=3, init_weights=W0)
    err = rule_error(net, data, alpha, beta, n=40_000, rng=4)
    assert bound.subspace == "initial" and 0 < bound.value
    assert bound.value - err.total < 4 * (bound.se + err.total_se)
    with pytest.raises(ValueError, match="not in span"):
        thm44_lower_bound(net, data, alpha, beta, n=100, init_weights=torch.randn(2, m, d, dtype=torch.float64))
