"""theory.population: the exact eq. (2) loss, its hand-written gradient, the exact moments of psi_t (Def 4.3).

Monte Carlo cross-checks use the library's own estimators (``MonteCarloLoss``, ``rule_error``) with at least
1e5 samples and a tolerance of 4 standard errors derived from the same samples; exact identities are checked
at ~1e-10 in float64.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, special

from tests.strategies import zetas
from theory import Discrete, MultiPatchData, ScaledBeta, Uniform, ou_schedule
from theory.losses import MonteCarloLoss
from theory.network import ACTIVATIONS, JointTwoLayerScore, TwoLayerScore
from theory.population import (
    PopulationObjective,
    expected_loss,
    gram_and_projections,
    population_loss,
    population_rule_error,
    psi_moments,
    quadrature_error_estimate,
)
from theory.rule import rule_error

ACTS = list(ACTIVATIONS)
ZETAS = {
    "uniform": Uniform(0.2, 0.8),
    "beta-straddling": ScaledBeta(2.0, 3.0, 0.3, 1.4),  # 1 - zeta changes sign: split c-quadrature
    "discrete": Discrete([0.2, 0.5, 0.9], [0.3, 0.3, 0.4]),
}


def _net(d, m, activation, P=2, init_std=0.5, seed=3):
    return TwoLayerScore(d, m, activation, n_patches=P, init_std=init_std, seed=seed)


def _reference_grad(W, acts, data, alphas, betas, targets):
    """Autograd through the differentiable forward code (independent of the hand-written backward)."""
    obj = PopulationObjective(acts, data, alphas, betas, targets, W.device)
    Wr = W.detach().clone().requires_grad_(True)
    L = obj.value(*gram_and_projections(Wr, data))
    (g,) = torch.autograd.grad(L.sum(), Wr)
    return L.detach(), g


# ---- exact loss vs Monte Carlo -----------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["paper", "score"])
@pytest.mark.parametrize("activation", ACTS)
def test_exact_loss_matches_monte_carlo(activation, target):
    """n x n_eps = 4000 x 25 = 1e5 samples (MonteCarloLoss, App. F estimator): |exact - MC| < 4 SE."""
    data = MultiPatchData(6, Uniform(0.2, 0.8))
    alpha, beta = ou_schedule(0.4)
    net = _net(6, 3, activation)
    mc = MonteCarloLoss(data, alpha, beta, n=4000, n_eps=25, target=target, seed=5)
    exact = float(expected_loss(net, data, alpha, beta, target).detach())
    assert abs(exact - mc.value(net)) < 4 * mc.standard_error(net)


@pytest.mark.parametrize("zeta", list(ZETAS), ids=list(ZETAS))
@pytest.mark.parametrize("activation", ["relu", "cubic"])
def test_exact_loss_matches_monte_carlo_with_noise_patches(activation, zeta):
    """P = 3 (patch 3 is N(0, I), as in MultiPatchData), other zeta laws; 1e5 samples, 4 SE."""
    data = MultiPatchData(5, ZETAS[zeta], n_patches=3)
    alpha, beta = ou_schedule(0.6)
    net = _net(5, 3, activation, P=3, init_std=0.4, seed=8)
    for target in ("paper", "score"):
        mc = MonteCarloLoss(data, alpha, beta, n=4000, n_eps=25, target=target, seed=9)
        exact = float(expected_loss(net, data, alpha, beta, target).detach())
        assert abs(exact - mc.value(net)) < 4 * mc.standard_error(net)


@pytest.mark.parametrize("target", ["paper", "score"])
@pytest.mark.parametrize("activation", ACTS)
def test_exact_gradient_matches_monte_carlo(activation, target):
    """Directional derivatives <grad L, V> (V random, and V = the exact gradient): exact vs the mean of 20
    independent MonteCarloLoss gradients of 5e3 samples each (1e5 in all); |diff| < 4 SE of that mean."""
    data = MultiPatchData(5, Uniform(0.2, 0.8))
    alpha, beta = ou_schedule(0.5)
    net = _net(5, 3, activation, init_std=0.45, seed=11)
    W = net.weights.detach().clone().requires_grad_(True)
    (g_exact,) = torch.autograd.grad(population_loss(W[None], activation, data, alpha, beta, target).sum(), W)
    V = torch.randn(W.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    proj = []
    for seed in range(20):
        mc = MonteCarloLoss(data, alpha, beta, n=250, n_eps=20, target=target, seed=100 + seed)
        _, g = mc.value_and_grad(W.detach(), activation)
        proj.append([float((g * V).sum()), float((g * g_exact).sum())])
    proj = np.array(proj)
    mean, se = proj.mean(0), proj.std(0, ddof=1) / math.sqrt(len(proj))
    exact = np.array([float((g_exact * V).sum()), float((g_exact * g_exact).sum())])
    assert np.all(np.abs(exact - mean) < 4 * se), (exact, mean, se)


# ---- psi_t moments (Def 4.3) -------------------------------------------------------------------------
@pytest.mark.parametrize("zeta", list(ZETAS), ids=list(ZETAS))
@pytest.mark.parametrize("activation", ACTS)
def test_psi_moments_match_monte_carlo(activation, zeta):
    """rule_error over 2e5 fresh x_t: exact bias and variance within 4 SE (the patches share zeta)."""
    data = MultiPatchData(5, ZETAS[zeta])
    alpha, beta = ou_schedule(0.3)
    net = _net(5, 3, activation, init_std=0.5, seed=4)
    exact = population_rule_error(net, data, alpha, beta)
    mc = rule_error(net, data, alpha, beta, n=200_000, rng=6)
    assert abs(exact.bias - mc.bias) < 4 * mc.bias_se
    assert abs(exact.variance - mc.variance) < 4 * mc.variance_se
    assert exact.total == pytest.approx(exact.bias**2 + exact.variance, rel=1e-14)
    mean, var = psi_moments(net, data, alpha, beta)
    assert mean - alpha / beta**2 == pytest.approx(exact.bias, rel=1e-14, abs=1e-14)


def test_psi_moments_of_aligned_linear_net_in_closed_form():
    """w^(1) = g u, w^(2) = h v: psi = alpha (g^2 zeta + h^2 (1 - zeta)) + beta (g^2 e1 + h^2 e2)."""
    zeta = ScaledBeta(2, 3, 0.2, 0.8)
    data = MultiPatchData(4, zeta)
    W = torch.zeros(2, 1, 4, dtype=torch.float64)
    W[0, 0, 0], W[1, 0, 1] = 1.5, 0.5
    net = TwoLayerScore.from_weights(W, "linear")
    alpha, beta = ou_schedule(0.4)
    g2, h2 = 2.25, 0.25
    mean, var = psi_moments(net, data, alpha, beta)
    assert mean == pytest.approx(alpha * (g2 * zeta.mean + h2 * (1 - zeta.mean)), rel=1e-13)
    assert var == pytest.approx(alpha**2 * (g2 - h2) ** 2 * zeta.var + beta**2 * (g2**2 + h2**2), rel=1e-13)


# ---- closed forms and exactness ----------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["paper", "score"])
def test_linear_single_neuron_closed_form(target):
    """sigma(z) = z, m = 1, per rule patch (E_2 = E[c^2], kappa = 1 + beta for paper, 0 for score):
    L = D (alpha^2 E_2 gamma^2 + beta^2 D) - 2 alpha^2 E_2 gamma^2/beta^2 - 2 kappa D + alpha^2 E_2/beta^4
    + [paper] d (1 + 1/beta)^2."""
    zeta = Uniform(0.25, 0.7)
    d = 7
    data = MultiPatchData(d, zeta)
    alpha, beta = ou_schedule(0.35)
    net = _net(d, 1, "linear", init_std=0.6, seed=2)
    W = net.weights.detach()
    paper = target == "paper"
    total = 0.0
    for p, ec2 in ((0, zeta.moment(2)), (1, zeta.mixed_moment(0, 2))):
        D, gamma = float(W[p, 0] @ W[p, 0]), float(W[p, 0, p])
        total += (D * (alpha**2 * ec2 * gamma**2 + beta**2 * D) - 2 * alpha**2 * ec2 * gamma**2 / beta**2
                  - 2 * (1 + beta) * D * paper + alpha**2 * ec2 / beta**4 + paper * d * (1 + 1 / beta) ** 2)
    assert float(expected_loss(net, data, alpha, beta, target).detach()) == pytest.approx(total, rel=1e-13)


def test_zero_network_loss_is_the_target_energy():
    """g = 0: the loss is E||y||^2, computed from the definitions of the targets (theory.losses)."""
    data = MultiPatchData(5, Uniform(0.2, 0.8), n_patches=3)
    alpha, beta = ou_schedule(0.7)
    net = TwoLayerScore(5, 2, "relu", n_patches=3, init_std=0.0)
    ec2 = Uniform(0.2, 0.8).moment(2)
    score = 2 * alpha**2 * ec2 / beta**4 + 5 * alpha**2 / beta**4
    paper = score + 3 * 5 * (1 + 1 / beta) ** 2
    for target, value in (("paper", paper), ("score", score)):
        loss = expected_loss(net, data, alpha, beta, target)
        assert float(loss.detach()) == pytest.approx(value, rel=1e-14)
        (g,) = torch.autograd.grad(loss, net.weights)
        assert torch.equal(g, torch.zeros_like(g))  # W = 0 is a critical point (every term is >= quadratic)


def _relu_pair_reference(a_coef, b_coef, rho, c_nodes, c_weights):
    """E_c E[(X + c A)_+ (Y + c B)_+], corr(X, Y) = rho: scipy quadrature over X of the closed-form
    E[(Y + b)_+ | X] (split at its kink), then the given quadrature in c."""
    s = math.sqrt(max(1 - rho * rho, 0.0))
    total = 0.0
    for c, w in zip(c_nodes, c_weights):
        a, b = c * a_coef, c * b_coef

        def inner(x, a=a, b=b):
            mm = b + rho * x
            if s == 0:
                cond = max(mm, 0.0)
            else:
                cond = mm * special.ndtr(mm / s) + s * math.exp(-0.5 * (mm / s) ** 2) / math.sqrt(2 * math.pi)
            return (x + a) * cond * math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)

        kink = [-b / rho + k * s / abs(rho) for k in (-16, -4, -1, 0, 1, 4, 16)] if rho != 0 else []
        pts = sorted({-a, *(x for x in kink if x > -a)})  # E[(Y + b)_+ | X] bends over ~s around -b/rho
        edges = [*pts, np.inf]
        total += w * sum(integrate.quad(inner, lo, hi, epsabs=1e-15, epsrel=1e-13, limit=200)[0]
                         for lo, hi in zip(edges[:-1], edges[1:]))
    return total


@pytest.mark.parametrize("zeta", [Uniform(0.2, 0.8), Uniform(0.05, 1.0), ScaledBeta(2.0, 3.0, 0.3, 1.4),
                                  Discrete([0.2, 0.5, 0.9], [0.3, 0.3, 0.4])],
                         ids=["uniform", "uniform-to-zero", "beta-straddling", "discrete"])
def test_relu_pair_expectations_match_quadrature_reference(zeta):
    """E_c E[relu(z_r) relu(z_s)] per unit sigma_r sigma_s for angles omega = arccos|rho| from 1e-6 to pi/2
    (every branch and node bucket of the angular integral), both signs of rho, boundary layers
    (a_r - a_s)^2 / omega^2 from 0 to ~4, coefficients c reaching or crossing 0: absolute error <= 1e-12
    against scipy quadrature."""
    data = MultiPatchData(3, zeta)
    alpha, beta = ou_schedule(0.1)
    obj = PopulationObjective(["relu"], data, [alpha], [beta], ["paper"], torch.device("cpu"))
    ev = obj.relu_evaluator
    f = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    ref_nodes = []
    for p in range(2):
        if isinstance(zeta, Discrete):
            ref_nodes.append((zeta.values if p == 0 else 1 - zeta.values, zeta.probs))
        elif isinstance(zeta, ScaledBeta):  # smooth in c: the plain Gauss-Jacobi rule suffices
            z, w = zeta.quadrature(24)
            ref_nodes.append((z if p == 0 else 1 - z, w))
        else:
            lo, hi = (zeta.lo, zeta.hi) if p == 0 else (1 - zeta.hi, 1 - zeta.lo)
            x, w = np.polynomial.legendre.leggauss(24)
            ref_nodes.append((lo + (hi - lo) * (x + 1) / 2, w / 2))
    worst = 0.0
    for omega in (1e-6, 5e-4, 2e-3, 0.015, 0.15, 0.29, 0.4, 0.7, 1.0, 1.3, 1.55):
        for cos_f, layer in ((0.95, 1.0), (0.4, 0.1), (-0.6, 0.0), (0.0, 0.03)):
            u = np.array([cos_f, math.sqrt(1 - cos_f**2), 0.0])
            # rotate u by omega towards a unit vector with f-component layer * u_1: a_r - a_s ~ layer * omega
            w = layer * np.array([-u[1], u[0], 0.0]) + math.sqrt(1 - layer**2) * np.array([0.0, 0.0, 1.0])
            for sign in (1, -1):
                v = sign * (math.cos(omega) * u + math.sin(omega) * w)
                W = torch.tensor(np.stack([1.3 * u, 0.7 * v]))[None, None].expand(1, 2, 2, 3)
                G = W @ W.transpose(-1, -2)
                U = ev.pair_expectations(G, W @ f)
                rho = float(u @ v)
                A, B = alpha / beta * u[0], alpha / beta * v[0]
                for p in range(2):
                    ref = _relu_pair_reference(A, B, rho, *ref_nodes[p])
                    worst = max(worst, abs(float(U[0, p, 0]) - ref))
    assert worst < 1e-12


@pytest.mark.parametrize("activation", ["linear", "quadratic", "cubic"])
def test_polynomial_loss_does_not_depend_on_quadrature_orders(activation):
    """Polynomial activations are exact: the (unused) ReLU orders cannot change them."""
    data = MultiPatchData(6, ScaledBeta(2, 5, 0.1, 0.9))
    net = _net(6, 4, activation, init_std=0.3)
    a = expected_loss(net, data, *ou_schedule(0.3), "score")
    b = expected_loss(net, data, *ou_schedule(0.3), "score", zeta_order=7, angle_scale=3)
    assert float(a.detach()) == float(b.detach())


@pytest.mark.parametrize("t", [0.02, 0.4, 1.5])
def test_relu_quadrature_is_converged_at_default_orders(t):
    """Default orders vs (4 x zeta nodes, 4 x angular nodes): the loss minus its constant, and the gradient,
    agree to 1e-11 relative on random nets of small, unit and large weights (the stated bound is 1e-8)."""
    data = MultiPatchData(30, Uniform(0.2, 0.8))
    alpha, beta = ou_schedule(t)
    gen = torch.Generator().manual_seed(7)
    scales = torch.tensor([0.05, 0.3, 1.5], dtype=torch.float64)[:, None, None, None]
    W = torch.randn((3, 2, 8, 30), generator=gen, dtype=torch.float64) * scales
    W[:, :, :4, :2] *= 6  # neurons along the features: large a = c alpha gamma / sigma
    out = []
    for kw in ({}, {"zeta_order": 128, "angle_scale": 4}):
        obj = PopulationObjective(["relu"] * 3, data, [alpha] * 3, [beta] * 3, ["score"] * 3, W.device, **kw)
        L, S, g = obj.value_and_grad(*gram_and_projections(W, data))
        out.append((L - obj.constant_terms(), S, g))
    (v0, S0, g0), (v1, S1, g1) = out
    assert torch.allclose(v0, v1, rtol=1e-11, atol=0)
    assert torch.allclose(S0, S1, rtol=1e-10, atol=1e-11 * float(S1.abs().max()))
    assert torch.allclose(g0, g1, rtol=1e-10, atol=1e-11 * float(g1.abs().max()))


def test_quadrature_error_estimate():
    data = MultiPatchData(10, Uniform(0.2, 0.8))
    relu = _net(10, 5, "relu", init_std=0.4)
    assert quadrature_error_estimate(relu, data, *ou_schedule(0.3), "score") < 1e-12
    assert quadrature_error_estimate(_net(10, 5, "cubic", init_std=0.4), data, *ou_schedule(0.3)) < 1e-14


# ---- hand-written gradient ---------------------------------------------------------------------------
@pytest.mark.parametrize("zeta", list(ZETAS), ids=list(ZETAS))
def test_hand_written_gradient_equals_autograd(zeta):
    """All activations and both targets in one batch, P = 3, with nearly parallel (1e-4), antiparallel and
    moderately correlated ReLU neurons (every angular branch) and a zero neuron: the Price/Stein gradient
    equals autograd through the forward code (ReLU: to the angular quadrature error, 1e-9 relative)."""
    data = MultiPatchData(7, ZETAS[zeta], n_patches=3)
    acts = ["relu", "linear", "quadratic", "cubic", "relu", "cubic", "relu"]
    ts = [0.3, 0.3, 0.5, 0.5, 0.05, 1.2, 0.8]
    targets = ["paper", "score", "paper", "score", "score", "paper", "paper"]
    alphas, betas = zip(*(ou_schedule(t) for t in ts))
    gen = torch.Generator().manual_seed(0)
    W = torch.randn((7, 3, 4, 7), generator=gen, dtype=torch.float64) * 0.5
    W[0, 0, 1] = 1.3 * W[0, 0, 0] + 1e-4 * torch.randn(7, generator=gen, dtype=torch.float64)
    W[4, 1, 2] = -0.7 * W[4, 1, 0] + 3e-3 * torch.randn(7, generator=gen, dtype=torch.float64)
    W[0, 1, 3] = 0.9 * W[0, 1, 2] + 0.05 * torch.randn(7, generator=gen, dtype=torch.float64)
    W[6, 0, 3] = 0.0
    Wr = W.clone().requires_grad_(True)
    L = population_loss(Wr, acts, data, alphas, betas, targets)
    (g,) = torch.autograd.grad(L.sum(), Wr)
    L_ref, g_ref = _reference_grad(W, acts, data, alphas, betas, targets)
    torch.testing.assert_close(L.detach(), L_ref, rtol=1e-13, atol=0)
    for c, act in enumerate(acts):
        rtol = 1e-9 if act == "relu" else 1e-12
        torch.testing.assert_close(g[c], g_ref[c], rtol=rtol, atol=rtol * float(g_ref[c].abs().max()))


def test_gradient_matches_central_differences():
    """An implementation-free check: (L(W + hE) - L(W - hE)) / 2h along random E, h = 1e-5."""
    data = MultiPatchData(6, Uniform(0.2, 0.8), n_patches=3)
    alphas, betas = zip(*(ou_schedule(t) for t in (0.3, 0.6, 0.9, 0.4)))
    acts, targets = ["relu", "cubic", "quadratic", "relu"], ["paper", "score", "paper", "score"]
    gen = torch.Generator().manual_seed(4)
    W = torch.randn((4, 3, 3, 6), generator=gen, dtype=torch.float64) * 0.5
    Wr = W.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(population_loss(Wr, acts, data, alphas, betas, targets).sum(), Wr)
    for _ in range(3):
        E = torch.randn(W.shape, generator=gen, dtype=torch.float64)
        h = 1e-5
        with torch.no_grad():
            diff = (population_loss(W + h * E, acts, data, alphas, betas, targets)
                    - population_loss(W - h * E, acts, data, alphas, betas, targets)) / (2 * h)
        torch.testing.assert_close(diff, (g * E).flatten(1).sum(1), rtol=1e-7, atol=1e-8)


def _relu_net_with_every_angular_rule(d=12, m=14, C=3, seed=5):
    """Random neurons plus, per config and patch, neurons at angles omega = arccos|rho| in every bucket of the
    angular integral (near rho = +-1, log, the far buckets), both signs of rho, and one zero neuron."""
    gen = torch.Generator().manual_seed(seed)
    W = torch.randn((C, 2, m, d), generator=gen, dtype=torch.float64) * 0.4
    W[:, :, :3, :2] *= 5  # along the features: large a = c alpha gamma / sigma
    base = W[:, :, 0]
    perp = torch.randn(base.shape, generator=gen, dtype=torch.float64)
    perp = perp - (perp * base).sum(-1, keepdim=True) / (base * base).sum(-1, keepdim=True) * base
    perp = perp / perp.norm(dim=-1, keepdim=True) * base.norm(dim=-1, keepdim=True)
    for k, omega in enumerate((1e-6, 4e-4, 0.01, 0.2, 0.4, 0.6, 1.0, 1.4)):
        W[:, :, 4 + k] = (-1) ** k * (1 + 0.1 * k) * (math.cos(omega) * base + math.sin(omega) * perp)
    W[-1, 1, -1] = 0.0
    return W


@pytest.mark.parametrize("zeta", [Uniform(0.2, 0.8), Uniform(0.05, 0.7), ScaledBeta(2.0, 3.0, 0.3, 1.4),
                                  Discrete([0.2, 1.0, 1.3], [0.3, 0.3, 0.4])],
                         ids=["uniform", "uniform-asymmetric", "beta-straddling", "discrete-reaching-zero"])
def test_relu_kernel_is_the_same_in_numpy_and_torch(zeta):
    """value_and_grad runs the ReLU kernel in numpy on the CPU and in torch on other devices: both array
    backends give the same losses, S and dL/dgamma (to rounding), with pairs in every angular bucket."""
    from theory.population.ops import NUMPY_OPS, TORCH_OPS

    data = MultiPatchData(12, zeta)
    alphas, betas = zip(*(ou_schedule(t) for t in (0.02, 0.3, 1.5)))
    obj = PopulationObjective(["relu"] * 3, data, alphas, betas, ["paper", "score", "paper"], torch.device("cpu"))
    ev = obj.relu_evaluator
    G, gamma = gram_and_projections(_relu_net_with_every_angular_rule(), data)
    out_np = ev.rule_patch_losses(G.numpy(), gamma.numpy(), NUMPY_OPS)
    out_torch = ev.rule_patch_losses(G, gamma, TORCH_OPS)
    for a, b in zip(out_np, out_torch):
        torch.testing.assert_close(torch.from_numpy(a), b, rtol=0, atol=1e-14 * float(b.abs().max()))


def test_relu_angular_layout_follows_pairs_between_buckets():
    """The (pair, node) layout is cached while no pair changes bucket: one objective evaluated at a net with
    every bucket, a random net (one bucket) and the first again equals fresh objectives at each."""
    data = MultiPatchData(12, Uniform(0.2, 0.8))
    alphas, betas = zip(*(ou_schedule(t) for t in (0.1, 0.5, 1.0)))
    W_all = _relu_net_with_every_angular_rule()
    W_far = torch.randn(W_all.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.3
    obj = PopulationObjective(["relu"] * 3, data, alphas, betas, "score", torch.device("cpu"))
    for W in (W_all, W_far, W_all):
        fresh = PopulationObjective(["relu"] * 3, data, alphas, betas, "score", torch.device("cpu"))
        for a, b in zip(obj.value_and_grad(*gram_and_projections(W, data)),
                        fresh.value_and_grad(*gram_and_projections(W, data))):
            assert torch.equal(a, b)


@settings(max_examples=15, deadline=None)
@given(zeta=zetas(), t=st.one_of(st.just(0.4), st.floats(0.05, 2.0)), seed=st.integers(0, 2**31 - 1))
def test_relu_gradient_equals_autograd_for_any_zeta(zeta, t, seed):
    """Property: any zeta law of tests.strategies (uniform / beta / discrete, supports crossing zeta = 1)."""
    data = MultiPatchData(4, zeta)
    alpha, beta = ou_schedule(t)
    W = torch.randn((2, 2, 3, 4), generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 0.6
    Wr = W.clone().requires_grad_(True)
    L = population_loss(Wr, "relu", data, [alpha] * 2, [beta] * 2, ["paper", "score"])
    (g,) = torch.autograd.grad(L.sum(), Wr)
    L_ref, g_ref = _reference_grad(W, ["relu"] * 2, data, [alpha] * 2, [beta] * 2, ["paper", "score"])
    assert torch.isfinite(L).all() and bool((L > 0).all())
    torch.testing.assert_close(L.detach(), L_ref, rtol=1e-12, atol=0)
    torch.testing.assert_close(g, g_ref, rtol=1e-8, atol=1e-9 * float(g_ref.abs().max()))


# ---- API and validation ------------------------------------------------------------------------------
def test_batched_loss_equals_single_configurations():
    data = MultiPatchData(5, Uniform(0.2, 0.8))
    nets = [_net(5, 3, a, seed=i) for i, a in enumerate(ACTS)]
    W = torch.stack([n.weights.detach() for n in nets])
    alphas, betas = zip(*(ou_schedule(t) for t in (0.2, 0.4, 0.6, 0.8)))
    batched = population_loss(W, ACTS, data, alphas, betas, ["paper", "score", "score", "paper"])
    for i, net in enumerate(nets):
        single = expected_loss(net, data, alphas[i], betas[i], ["paper", "score", "score", "paper"][i])
        assert float(batched[i].detach()) == pytest.approx(float(single.detach()), rel=1e-14)


def test_inputs_are_validated():
    data = MultiPatchData(5, Uniform(0.2, 0.8))
    net = _net(5, 2, "relu")
    with pytest.raises(ValueError, match="data must be a MultiPatchData"):
        expected_loss(net, "data", 0.5, 0.5)
    with pytest.raises(ValueError, match="net must be a TwoLayerScore"):
        expected_loss("net", data, 0.5, 0.5)
    with pytest.raises(ValueError, match="joint net .*does not fit data"):  # more in test_joint_exact.py
        expected_loss(JointTwoLayerScore(4, 2, "relu"), data, 0.5, 0.5)
    with pytest.raises(ValueError, match="does not fit data"):
        expected_loss(_net(6, 2, "relu"), data, 0.5, 0.5)
    with pytest.raises(ValueError, match="beta must be > 0"):
        expected_loss(net, data, 0.5, 0.0)
    with pytest.raises(ValueError, match="target must be one of"):
        expected_loss(net, data, 0.5, 0.5, target="eps")
    with pytest.raises(ValueError, match="zeta_order must be an integer >= 2"):
        expected_loss(net, data, 0.5, 0.5, zeta_order=1)
    with pytest.raises(ValueError, match="angle_scale"):
        expected_loss(net, data, 0.5, 0.5, angle_scale=0)
    with pytest.raises(ValueError, match=r"W must have shape \(C, 2, m, 5\)"):
        population_loss(torch.zeros(2, 3, 5, dtype=torch.float64), "relu", data, 0.5, 0.5)
    with pytest.raises(ValueError, match="W must be a float64"):
        population_loss(torch.zeros(1, 2, 3, 5), "relu", data, 0.5, 0.5)
    with pytest.raises(ValueError, match="alphas must be a scalar or a sequence of 2"):
        population_loss(torch.zeros(2, 2, 3, 5, dtype=torch.float64), "relu", data, [0.5, 0.4, 0.3], 0.5)
    with pytest.raises(ValueError, match="activation must be one name or a sequence of 2"):
        population_loss(torch.zeros(2, 2, 3, 5, dtype=torch.float64), ["relu"] * 3, data, 0.5, 0.5)
    with pytest.raises(ValueError, match="unknown activation"):
        population_loss(torch.zeros(1, 2, 3, 5, dtype=torch.float64), "tanh", data, 0.5, 0.5)
    with pytest.raises(ValueError, match="NaN"):
        population_loss(torch.full((1, 2, 3, 5), float("nan"), dtype=torch.float64), "relu", data, 0.5, 0.5)
