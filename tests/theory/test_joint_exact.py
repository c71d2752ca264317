"""The exact population loss and psi_t moments of joint nets (theory.population.joint; beyond the paper).

Monte Carlo cross-checks use the library's estimators (``MonteCarloLoss`` with ``joint=True``, ``rule_error``)
with the sample size stated in each test and a tolerance of 4 standard errors estimated from the same samples
(per-datum losses / per-sample psi); exact identities are checked at ~1e-10 relative in float64.
"""

import math

import numpy as np
import pytest
import torch

from theory import Discrete, MultiPatchData, ScaledBeta, Uniform, ou_schedule
from theory.exact_gd import exact_gradient_descent
from theory.losses import MonteCarloLoss
from theory.network import ACTIVATIONS, JointTwoLayerScore, TwoLayerScore
from theory.population import (
    JointObjective,
    block_gram_and_projections,
    expected_loss,
    joint_blocks,
    joint_population_loss,
    joint_weights,
    population_rule_error,
    psi_moments,
)
from theory.rule import rule_error
from theory.train import TrainConfig, train, train_many

ACTS = list(ACTIVATIONS)
TARGETS = ["paper", "score"]


def _joint(d, m, activation, P=2, init_std=0.35, seed=1):
    return JointTwoLayerScore(d, m, activation, n_patches=P, init_std=init_std, seed=seed)


def _block_diagonal(W: torch.Tensor) -> torch.Tensor:
    """Per-patch weights (P, m, d) as the joint weights (1, P*m, P*d) of the same function: neuron (p, r)
    is W[p, r] on patch p and 0 elsewhere."""
    P, m, d = W.shape
    J = torch.zeros(1, P * m, P * d, dtype=torch.float64)
    for p in range(P):
        J[0, p * m:(p + 1) * m, p * d:(p + 1) * d] = W[p]
    return J


# ---- exact loss vs Monte Carlo -----------------------------------------------------------------------------
@pytest.mark.parametrize("P", [2, 3])
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("activation", ACTS)
def test_exact_loss_matches_monte_carlo(activation, target, P):
    """n x n_eps = 4000 x 25 = 1e5 samples of App. F's estimator on the joint net (patch 3 N(0, I) for P = 3):
    |exact - MC| < 4 SE, SE = sd(per-datum loss)/sqrt(n)."""
    data = MultiPatchData(4, Uniform(0.2, 0.8), n_patches=P)
    alpha, beta = ou_schedule(0.4)
    net = _joint(4, 3, activation, P=P, seed=P)
    mc = MonteCarloLoss(data, alpha, beta, n=4000, n_eps=25, target=target, seed=5 + P)
    value, _, datum = mc.value_and_grad(net.weights.detach(), activation, need_grad=False, per_datum=True,
                                        joint=True)
    se = float(datum.std(unbiased=True)) / math.sqrt(mc.n)
    exact = float(expected_loss(net, data, alpha, beta, target).detach())
    assert abs(exact - float(value)) < 4 * se, (exact, float(value), se)


@pytest.mark.parametrize("activation", ACTS)
def test_psi_moments_match_monte_carlo(activation):
    """Def 4.3 for a joint net: rule_error over 1e5 fresh x_t (discrete zeta, P = 3); bias and variance within
    4 SE (SE of the variance from the fourth central moment)."""
    data = MultiPatchData(4, Discrete([0.2, 0.5, 0.9], [0.3, 0.3, 0.4]), n_patches=3)
    alpha, beta = ou_schedule(0.3)
    net = _joint(4, 3, activation, P=3, init_std=0.4, seed=7)
    exact = population_rule_error(net, data, alpha, beta)
    mc = rule_error(net, data, alpha, beta, n=100_000, rng=6)
    assert abs(exact.bias - mc.bias) < 4 * mc.bias_se
    assert abs(exact.variance - mc.variance) < 4 * mc.variance_se
    mean, var = psi_moments(net, data, alpha, beta)
    assert (mean - alpha / beta**2, var) == pytest.approx((exact.bias, exact.variance), rel=1e-14, abs=1e-15)


# ---- gradient --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("activation", ACTS)
def test_gradient_matches_finite_differences(activation, target):
    """Autograd of the exact loss against central differences (h = 1e-5, float64) along 3 random directions,
    and the block form 2 S_p W_p + dL/dgamma_p f_p^T of ``JointObjective.value_and_grad`` (what exact GD
    uses) against the autograd gradient."""
    data = MultiPatchData(4, Uniform(0.2, 0.8), n_patches=3)
    alpha, beta = ou_schedule(0.5)
    W = _joint(4, 3, activation, P=3, init_std=0.4, seed=11).weights.detach().clone()
    Wr = W.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(joint_population_loss(Wr, activation, data, alpha, beta, target).sum(), Wr)
    gen = torch.Generator().manual_seed(4)
    h = 1e-5
    for _ in range(3):
        V = torch.randn(W.shape, generator=gen, dtype=torch.float64)
        plus, minus = (float(joint_population_loss(W + s * h * V, activation, data, alpha, beta, target)[0])
                       for s in (1, -1))
        assert (plus - minus) / (2 * h) == pytest.approx(float((g * V).sum()), rel=1e-7, abs=1e-8)
    obj = JointObjective([activation], data, [alpha], [beta], [target], W.device)
    blocks = joint_blocks(W, 3)
    _, S, g_gamma = obj.value_and_grad(*block_gram_and_projections(blocks, data))
    grad_blocks = 2 * S @ blocks
    grad_blocks[:, :2] += g_gamma[..., None] * torch.as_tensor(data.features)[None, :, None, :]
    torch.testing.assert_close(joint_weights(grad_blocks)[0], g[0], rtol=1e-12, atol=1e-12)


def test_hand_written_polynomial_derivatives_equal_autograd():
    """PolynomialMoments' backward (d/d(K, p, q) of random linear functionals of P2, P1, D1) against autograd
    through its differentiable ``reference``; mixed degrees, a skewed zeta law; 1e-12 relative."""
    from theory.population.joint_polynomial import PolynomialMoments

    gen = torch.Generator().manual_seed(0)
    C, m = 3, 4
    A = torch.randn(C, m, m, generator=gen, dtype=torch.float64)
    K = A @ A.transpose(-1, -2) + 0.1 * torch.eye(m, dtype=torch.float64)
    p, q = (torch.randn(C, m, generator=gen, dtype=torch.float64) for _ in range(2))
    up = [torch.randn(s, generator=gen, dtype=torch.float64) for s in ((C, m, m), (C, 2, m), (C, m))]
    mom = PolynomialMoments([(0.0, 1.0), (0.0, 0.0, 1.0), (0.3, -0.2, 0.5, 1.0)], ScaledBeta(2, 3, 0.2, 0.8), "cpu")
    grads = []
    for fn in (mom, mom.reference):
        X = [x.clone().requires_grad_(True) for x in (K, p, q)]
        out = fn(*X)
        grads.append(torch.autograd.grad(sum((o * u).sum() for o, u in zip(out, up)), X))
    for hand, ref in zip(*grads):
        torch.testing.assert_close(hand, ref, rtol=1e-12, atol=1e-12 * float(ref.abs().max()))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("activation", ACTS)
def test_gradient_matches_monte_carlo(activation, target):
    """Directional derivatives <grad L, V> (V random, and V = the exact gradient): exact vs the mean of 20
    independent MonteCarloLoss gradients (joint=True) of 250 x 20 samples each (1e5 in all); < 4 SE."""
    data = MultiPatchData(4, Uniform(0.2, 0.8))
    alpha, beta = ou_schedule(0.5)
    net = _joint(4, 3, activation, init_std=0.45, seed=12)
    W = net.weights.detach().clone().requires_grad_(True)
    (g_exact,) = torch.autograd.grad(joint_population_loss(W, activation, data, alpha, beta, target).sum(), W)
    V = torch.randn(W.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    proj = []
    for seed in range(20):
        mc = MonteCarloLoss(data, alpha, beta, n=250, n_eps=20, target=target, seed=200 + seed)
        _, g = mc.value_and_grad(W.detach(), activation, joint=True)
        proj.append([float((g * V).sum()), float((g * g_exact).sum())])
    proj = np.array(proj)
    mean, se = proj.mean(0), proj.std(0, ddof=1) / math.sqrt(len(proj))
    exact = np.array([float((g_exact * V).sum()), float((g_exact * g_exact).sum())])
    assert np.all(np.abs(exact - mean) < 4 * se), (exact, mean, se)


def test_batched_mixed_configurations_equal_single_ones():
    """joint_population_loss of C weight sets with mixed activations (ReLU and polynomial groups), schedules and
    targets equals each configuration alone (1e-14), and its autograd gradient is per configuration."""
    data = MultiPatchData(4, Uniform(0.2, 0.8), n_patches=3)
    acts = ["cubic", "relu", "linear", "relu", "quadratic"]
    targets = ["paper", "score", "score", "paper", "score"]
    alphas, betas = zip(*(ou_schedule(t) for t in (0.2, 0.4, 0.6, 0.8, 0.5)))
    W = torch.stack([_joint(4, 3, a, P=3, seed=i).weights.detach()[0] for i, a in enumerate(acts)])
    Wr = W.clone().requires_grad_(True)
    batched = joint_population_loss(Wr, acts, data, alphas, betas, targets)
    (g,) = torch.autograd.grad(batched.sum(), Wr)
    for i, a in enumerate(acts):
        Wi = W[i:i + 1].clone().requires_grad_(True)
        single = joint_population_loss(Wi, a, data, alphas[i], betas[i], targets[i])
        (gi,) = torch.autograd.grad(single.sum(), Wi)
        assert float(batched[i].detach()) == pytest.approx(float(single.detach()[0]), rel=1e-14)
        torch.testing.assert_close(g[i], gi[0], rtol=1e-12, atol=1e-13)


# ---- the per-patch net as a block-diagonal joint net ------------------------------------------------------
@pytest.mark.parametrize("P", [2, 3])
@pytest.mark.parametrize("activation", ACTS)
def test_block_diagonal_joint_net_is_the_per_patch_net(activation, P):
    """A per-patch net with m neurons per patch is the joint net with P*m neurons each supported on one patch:
    the same loss (both targets) and psi moments to 1e-10 relative, from two independent exact evaluators."""
    data = MultiPatchData(4, Uniform(0.25, 0.75), n_patches=P)
    alpha, beta = ou_schedule(0.35)
    per_patch = TwoLayerScore(4, 2, activation, n_patches=P, init_std=0.45, seed=3 + P)
    joint = JointTwoLayerScore.from_weights(_block_diagonal(per_patch.weights.detach()), activation, n_patches=P)
    for target in TARGETS:
        a, b = (float(expected_loss(n, data, alpha, beta, target).detach()) for n in (per_patch, joint))
        assert b == pytest.approx(a, rel=1e-10)
    mp, mj = psi_moments(per_patch, data, alpha, beta), psi_moments(joint, data, alpha, beta)
    assert mj == pytest.approx(mp, rel=1e-10, abs=1e-12)


# ---- bad input ----------------------------------------------------------------------------------------------
def test_joint_net_that_does_not_fit_the_data_is_refused():
    data = MultiPatchData(4, Uniform(0.2, 0.8))
    alpha, beta = ou_schedule(0.4)
    for net in (_joint(5, 2, "cubic"), _joint(4, 2, "cubic", P=3), _joint(2, 2, "cubic", P=4)):
        for fn in (expected_loss, psi_moments, population_rule_error):
            with pytest.raises(ValueError, match=r"joint net .*does not fit data \(d=4, n_patches=2\)"):
                fn(net, data, alpha, beta)
    with pytest.raises(ValueError, match=r"joint weights must have shape \(C, m, 8\)"):
        joint_population_loss(torch.zeros(1, 2, 12, dtype=torch.float64), "linear", data, alpha, beta)
    with pytest.raises(ValueError, match="unknown activation"):
        JointObjective(["tanh"], data, [alpha], [beta], ["paper"], "cpu")


# ---- training -------------------------------------------------------------------------------------------
EXACT_JOINT = dict(d=8, m=3, epochs=120, estimator="exact", device="cpu", log_every=40, architecture="joint")


@pytest.mark.parametrize("activation", ACTS)
def test_exact_joint_training_decreases_the_exact_loss(activation):
    """TrainConfig(architecture="joint", estimator="exact"): GD on the exact loss; its logged losses are the
    exact losses of the weights and decrease; the trained net is a JointTwoLayerScore."""
    cfg = TrainConfig(activation=activation, target="score", t=0.4, **EXACT_JOINT)
    res = train(cfg, progress=False)
    assert res.net.joint and tuple(res.net.weights.shape) == (1, 3, 16)
    loss = res.history["loss"]
    assert all(b < a for a, b in zip(loss, loss[1:])), loss
    exact = float(expected_loss(res.net, cfg.data(), *cfg.alpha_beta, cfg.target).detach())
    assert exact == pytest.approx(loss[-1], rel=1e-12)


def test_batched_joint_training_equals_one_by_one():
    """train_many runs joint and per-patch configs in separate lock-step batches; each joint config ends where
    its own run does (1e-13), and the per-patch configs are untouched by the joint ones (bit-identical)."""
    joint = [TrainConfig(activation=a, target=tg, t=t, **EXACT_JOINT) for a, tg, t in
             [("linear", "paper", 0.3), ("cubic", "score", 0.6), ("quadratic", "paper", 0.5)]]
    per_patch = [TrainConfig(**{**EXACT_JOINT, "architecture": "per_patch"}, activation="cubic", target="score")]
    batch = train_many(joint + per_patch, progress=False)
    for c, r in zip(joint, batch):
        one = train(c, progress=False)
        torch.testing.assert_close(r.net.weights.detach(), one.net.weights.detach(), rtol=0, atol=1e-13)
        assert r.history["loss"] == pytest.approx(one.history["loss"], rel=1e-13)
    alone = train(per_patch[0], progress=False)
    assert torch.equal(batch[-1].net.weights.detach(), alone.net.weights.detach())


def test_joint_exact_gd_in_span_coordinates_equals_full_gd():
    """Each block W_p of a joint net stays in span(W_p(0), f_p) under exact GD (the loss is F(G_p, gamma)): the
    reduced run equals GD on all P*d coordinates (P = 3, every activation, both targets) to 1e-11."""
    data = MultiPatchData(4, Uniform(0.2, 0.8), n_patches=3)
    acts = [a for a in ACTS for _ in TARGETS]
    targets = TARGETS * len(ACTS)
    W0 = joint_blocks(torch.stack([_joint(4, 2, a, P=3, init_std=0.2, seed=i).weights.detach()[0]
                                   for i, a in enumerate(acts)]), 3)
    alpha, beta = ou_schedule(0.45)
    runs = [exact_gradient_descent(W0, acts, data, alpha, beta, targets, 0.005, epochs=40, log_every=20, joint=True,
                                   reduced=r) for r in (True, False)]
    torch.testing.assert_close(runs[0].weights, runs[1].weights, rtol=0, atol=1e-11)
    final = joint_population_loss(joint_weights(runs[0].weights), acts, data, alpha, beta, targets).detach()
    torch.testing.assert_close(runs[0].history["loss"][:, -1], final, rtol=1e-12, atol=0)


def test_exact_joint_divergence_reports_joint_weights():
    """A too large step: TrainingDiverged carries the joint net's last finite weights (1, m, P*d), not blocks."""
    from theory.divergence import TrainingDiverged

    cfg = TrainConfig(activation="cubic", t=0.4, lr=50.0, init_std=0.5, **{**EXACT_JOINT, "epochs": 20})
    with pytest.raises(TrainingDiverged) as info:
        train(cfg, progress=False)
    assert tuple(info.value.weights.shape) == (1, 3, 16)
    assert info.value.result.net.joint and torch.equal(info.value.result.net.weights.detach(), info.value.weights)
