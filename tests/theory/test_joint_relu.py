"""theory.population.joint_relu: zeta-averaged Gaussian moments of relu for joint nets (beyond the paper).

References are independent of the module's Price-theorem route: E[relu(z_r) relu(z_s) | zeta] as a scipy
quadrature over z_r of the closed-form E[relu(z_s) | z_r] (split around its kink), then scipy quadrature over
zeta (split where a mean or a_r -+ a_s crosses 0). Pair values are compared per unit sigma_r sigma_s (absolute
1e-12; measured <= 3e-14). The Monte Carlo check uses 2e5 draws and 4 standard errors from the same draws.
"""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

from theory import Discrete, MultiPatchData, ScaledBeta, Uniform, ou_schedule
from theory.population import PopulationObjective, gram_and_projections, joint_relu
from theory.population.joint_relu import relu_gaussian_moments

F64 = torch.float64
ZETAS = {
    "uniform": Uniform(0.2, 0.8),
    "uniform-wide": Uniform(0.05, 3.0),  # several zeta panels at the steepest slopes below
    "beta": ScaledBeta(2.0, 3.0, 0.2, 0.8),
    "discrete": Discrete([0.3, 0.7, 0.9], [0.2, 0.5, 0.3]),
}
# (rho, a0_r, a1_r, a0_s, a1_s): a = a0 + a1 zeta; layers a_r -+ a_s crossing 0 in the support, |a| up to ~9,
# p = 0, q = 0, rho at 0, +-1 and within 1e-6 of +-1
PAIR_CASES = [
    (0.0, 0.3, 1.0, -0.2, 2.0), (0.3, -2.0, 4.0, -1.9, 4.1), (-0.5, 0.0, 7.0, 0.0, 7.0), (0.9, 1.0, 0.0, 1.2, 0.0),
    (-0.97, -3.0, 9.0, 2.0, -5.0), (0.999, 0.5, -0.5, 0.5, -0.5), (-0.9999, 4.0, 2.0, -3.0, 3.0),
    (0.999999, 0.3, 1.0, -0.2, 2.0), (-0.999999, -2.0, 4.0, -1.9, 4.1), (0.999999, -0.6, 1.0, -0.6, 1.0),
    (1.0, -3.0, 9.0, 2.0, -5.0), (-1.0, 0.5, -0.5, 0.5, -0.5), (-0.999999, -5.0, 1.0, 5.0, -1.0),
    (0.6, 0.4, -0.9, -0.3, 0.5), (0.2, -2.0, 4.0, -1.9, 4.1), (-0.25, 4.0, 2.0, -3.0, 3.0), (0.1, 0.0, 7.0, 0.0, 7.0),
    (-0.15, -5.0, 1.0, 5.0, -1.0), (0.25, 9.0, -3.0, -8.0, 5.0),  # nearly orthogonal
]


def _eu(x):
    return x * special.ndtr(x) + np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _fixed_pair(ar, as_, rho):
    """E[(X + ar)_+ (Y + as)_+], corr(X, Y) = rho: quadrature over X of E[(Y + as)_+ | X]."""
    c = math.sqrt(max(1 - rho * rho, 0.0))

    def f(u):
        m = as_ + rho * u
        inner = c * _eu(m / c) if c > 0 else max(m, 0.0)
        return (ar + u) * inner * math.exp(-0.5 * u * u) / math.sqrt(2 * math.pi)

    lo = -ar
    hi = max(lo, 0.0) + 40.0
    pts = []
    if rho != 0:  # E[(Y + as)_+ | X = u] bends over ~c around u = -as / rho
        us = -as_ / rho
        pts = [x for x in (us - 30 * c, us - 3 * c, us, us + 3 * c, us + 30 * c) if lo < x < hi]
    return integrate.quad(f, lo, hi, points=pts or None, epsabs=1e-15, epsrel=1e-13, limit=400)[0]


def _zeta_average(fn, zeta, kinks):
    if isinstance(zeta, Discrete):
        return sum(p * fn(v) for v, p in zip(zeta.values, zeta.probs))
    lo, hi = zeta.lo, zeta.hi
    if isinstance(zeta, Uniform):
        def dens(z):
            return 1 / (hi - lo)
    else:
        def dens(z):
            return stats.beta.pdf((z - lo) / (hi - lo), zeta.a, zeta.b) / (hi - lo)
    pts = sorted(k for k in kinks if lo < k < hi)
    return integrate.quad(lambda z: fn(z) * dens(z), lo, hi, points=pts or None, epsabs=1e-14, epsrel=1e-13,
                          limit=400)[0]


def _pair_reference(rho, a0r, a1r, a0s, a1s, zeta):
    sg = 1 if rho >= 0 else -1
    kinks = [-a0 / a1 for a0, a1 in ((a0r, a1r), (a0s, a1s), (a0r - sg * a0s, a1r - sg * a1s)) if a1 != 0]
    return _zeta_average(lambda z: _fixed_pair(a0r + a1r * z, a0s + a1s * z, rho), zeta, kinks)


def _moments(K, p, q, zeta, **kw):
    return relu_gaussian_moments(torch.tensor(K, dtype=F64), torch.tensor(p, dtype=F64),
                                 torch.tensor(q, dtype=F64), zeta, **kw)


@pytest.mark.parametrize("zeta", ZETAS.values(), ids=ZETAS.keys())
def test_pair_values_match_independent_quadrature(zeta):
    """P2[0, 1] / (sigma_r sigma_s) for every PAIR_CASES entry, at sigma = (1, 1) and (0.01, 100) (P2 scales
    exactly): absolute error <= 1e-12 against the scipy reference (measured <= 3e-14)."""
    worst = 0.0
    for rho, a0r, a1r, a0s, a1s in PAIR_CASES:
        ref = _pair_reference(rho, a0r, a1r, a0s, a1s, zeta)
        for sr, ss in ((1.0, 1.0), (0.01, 100.0)):
            K = [[[sr * sr, rho * sr * ss], [rho * sr * ss, ss * ss]]]
            P2, _, _ = _moments(K, [[a0r * sr, a0s * ss]], [[a1r * sr, a1s * ss]], zeta)
            assert float(P2[0, 0, 1]) == float(P2[0, 1, 0])
            worst = max(worst, abs(float(P2[0, 0, 1]) / (sr * ss) - ref))
    assert worst < 1e-12


def _univariate_reference(a0, a1, zeta):
    """E_zeta of E2(a), Eu(a), zeta Eu(a), Phi(a) at a = a0 + a1 zeta."""
    kinks = [-a0 / a1] if a1 else []

    def e2(z):
        a = a0 + a1 * z
        return (1 + a * a) * special.ndtr(a) + a * math.exp(-0.5 * a * a) / math.sqrt(2 * math.pi)

    return (_zeta_average(e2, zeta, kinks), _zeta_average(lambda z: _eu(a0 + a1 * z), zeta, kinks),
            _zeta_average(lambda z: z * _eu(a0 + a1 * z), zeta, kinks),
            _zeta_average(lambda z: special.ndtr(a0 + a1 * z), zeta, kinks))


@pytest.mark.parametrize("zeta", ZETAS.values(), ids=ZETAS.keys())
def test_parallel_and_antiparallel_neurons_are_exact(zeta):
    """z_s = c z_r exactly (K singular, rho = +-1): E[relu(z_r) relu(z_s)] = c E[relu(z_r)^2] for c > 0 and 0 for
    c < 0, to 1e-13 per unit sigma_r sigma_s; the gradient stays finite."""
    for c in (1.7, -0.6):
        L = torch.tensor([[[1.3, 0.4, -0.2]]], dtype=F64)
        L = torch.cat([L, c * L], 1)
        p = torch.tensor([[0.5, 0.5 * c]], dtype=F64)
        q = torch.tensor([[-1.2, -1.2 * c]], dtype=F64)
        args = [v.clone().requires_grad_(True) for v in (L, p, q)]
        P2, _, _ = relu_gaussian_moments(args[0] @ args[0].transpose(1, 2), args[1], args[2], zeta)
        grads = torch.autograd.grad(P2.sum(), args)
        P2 = P2.detach()
        expected = c * float(P2[0, 0, 0]) if c > 0 else 0.0
        sig_rs = abs(c) * float(L[0, 0].norm() ** 2)
        assert abs(float(P2[0, 0, 1]) - expected) < 1e-13 * sig_rs
        assert all(bool(torch.isfinite(g).all()) for g in grads)


@pytest.mark.parametrize("zeta", ZETAS.values(), ids=ZETAS.keys())
def test_univariate_moments_match_quadrature(zeta):
    """Diagonal of P2, P1 (k = 0, 1) and D1 for m = 1 (no pairs) at slopes up to 9: relative 1e-12, or absolute
    1e-14 per unit sigma (deep in the lower tail both sides lose digits to a Phi + phi cancellation)."""
    for a0, a1, sig in ((0.3, 1.0, 1.0), (-3.0, 9.0, 0.2), (2.0, 0.0, 5.0), (0.0, -4.0, 1.0), (-8.0, 1.0, 1.0)):
        P2, P1, D1 = _moments([[[sig * sig]]], [[a0 * sig]], [[a1 * sig]], zeta)
        e2, e1, z_e1, d1 = _univariate_reference(a0, a1, zeta)
        e1 = [e1, z_e1]
        assert P2.shape == (1, 1, 1) and P1.shape == (1, 2, 1) and D1.shape == (1, 1)
        assert float(P2[0, 0, 0]) / sig**2 == pytest.approx(e2, rel=1e-12, abs=1e-14)
        for k in (0, 1):
            assert float(P1[0, k, 0]) / sig == pytest.approx(e1[k], rel=1e-12, abs=1e-14)
        assert float(D1[0, 0]) == pytest.approx(d1, rel=1e-12, abs=1e-14)


def _random_gaussian(C, m, seed, parallel=True):
    """K = L L^T (two nearly parallel neurons when ``parallel``), p, q of order 1-3."""
    g = torch.Generator().manual_seed(seed)
    L = torch.randn(C, m, m + 1, generator=g, dtype=F64)
    if parallel:
        L[:, 1] = L[:, 0] + 1e-3 * L[:, 1]
        L[:, 2] = -L[:, 0] + 0.1 * L[:, 2]
    p = 1.5 * torch.randn(C, m, generator=g, dtype=F64)
    q = 3.0 * torch.randn(C, m, generator=g, dtype=F64)
    return L, p, q


@pytest.mark.parametrize("zeta", [ZETAS["uniform"], ZETAS["beta"], ZETAS["discrete"]], ids=["uniform", "beta",
                                                                                          "discrete"])
def test_moments_match_monte_carlo(zeta):
    """P2, P1, D1 at random K, p, q (C = 2, m = 4) against 2e5 draws of (zeta, z): every entry within 4 standard
    errors of the sample mean."""
    C, m, n = 2, 4, 200_000
    L, p, q = _random_gaussian(C, m, seed=1, parallel=False)  # (anti)parallel pairs: rare events, unreliable SE
    P2, P1, D1 = relu_gaussian_moments(L @ L.transpose(1, 2), p, q, zeta)
    rng = np.random.default_rng(7)
    z = torch.as_tensor(zeta.sample(n, rng))
    eps = torch.as_tensor(rng.standard_normal((n, C, m + 1)))
    x = p + q * z[:, None, None] + torch.einsum("cij,ncj->nci", L, eps)  # (n, C, m)
    r = torch.relu(x)
    samples = [(r[:, :, :, None] * r[:, :, None, :], P2), (r, P1[:, 0]), (r * z[:, None, None], P1[:, 1]),
               ((x > 0).to(F64), D1)]
    for draws, exact in samples:
        mean, se = draws.mean(0), draws.std(0) / math.sqrt(n)
        assert bool(((mean - exact).abs() <= 4 * se + 1e-12).all()), float(((mean - exact).abs() / se).max())


@pytest.mark.parametrize("zeta", [ZETAS["uniform"], ZETAS["beta"], ZETAS["discrete"]], ids=["uniform", "beta",
                                                                                          "discrete"])
def test_gradient_matches_finite_differences(zeta):
    """The (hand-written) gradient in (L, p, q) of a fixed linear functional of (P2, P1, D1), K = L L^T with
    nearly (anti)parallel neurons, along random directions: central differences (h = 1e-5) agree to 1e-8
    relative."""
    C, m = 1, 4
    L, p, q = _random_gaussian(C, m, seed=2)
    g = torch.Generator().manual_seed(5)
    R2, R1, R0 = (torch.randn(*s, generator=g, dtype=F64) for s in ((C, m, m), (C, 2, m), (C, m)))

    def f(L, p, q):
        P2, P1, D1 = relu_gaussian_moments(L @ L.transpose(1, 2), p, q, zeta)
        return (P2 * R2).sum() + (P1 * R1).sum() + (D1 * R0).sum()

    args = [v.clone().requires_grad_(True) for v in (L, p, q)]
    grads = torch.autograd.grad(f(*args), args)
    h = 1e-5
    for _ in range(3):
        dirs = [torch.randn(v.shape, generator=g, dtype=F64) for v in (L, p, q)]
        plus = f(*(v + h * d for v, d in zip((L, p, q), dirs)))
        minus = f(*(v - h * d for v, d in zip((L, p, q), dirs)))
        fd = float((plus - minus) / (2 * h))
        ad = float(sum((gr * d).sum() for gr, d in zip(grads, dirs)))
        assert ad == pytest.approx(fd, rel=1e-8, abs=1e-8)


@pytest.mark.parametrize("zeta", [ZETAS["uniform"], ZETAS["discrete"]], ids=["uniform", "discrete"])
def test_gradient_in_every_branch_matches_finite_differences(zeta):
    """Two neurons at each PAIR_CASES entry with |rho| < 1 (flat / one-sided / inside closed forms, erfc and
    erfcx tails, both signs of rho) and at q = 0: the hand-written gradient of a random linear functional of
    (P2, P1, D1) along random symmetric directions in (K, p, q) against central differences (h = 1e-6),
    relative 1e-6."""
    g = torch.Generator().manual_seed(11)
    cases = [c for c in PAIR_CASES if abs(c[0]) < 1] + [(0.7, 0.4, 0.0, -0.3, 0.0)]
    for rho, a0r, a1r, a0s, a1s in cases:
        sig = torch.tensor([[0.7, 1.9]], dtype=F64)
        K = torch.tensor([[[1.0, rho], [rho, 1.0]]], dtype=F64) * sig[:, :, None] * sig[:, None, :]
        p = torch.tensor([[a0r, a0s]], dtype=F64) * sig
        q = torch.tensor([[a1r, a1s]], dtype=F64) * sig
        R = [torch.randn(*s, generator=g, dtype=F64) for s in ((1, 2, 2), (1, 2, 2), (1, 2))]

        def f(K, p, q, R=R):
            return sum((out * r).sum() for out, r in zip(relu_gaussian_moments(K, p, q, zeta), R))

        args = [v.clone().requires_grad_(True) for v in (K, p, q)]
        grads = torch.autograd.grad(f(*args), args)
        dK = torch.randn(1, 2, 2, generator=g, dtype=F64) * (1 - rho * rho) * 0.1
        dK = (dK + dK.transpose(1, 2)) / 2 * sig[:, :, None] * sig[:, None, :]  # keeps K positive definite
        dirs = [dK, torch.randn(1, 2, generator=g, dtype=F64), torch.randn(1, 2, generator=g, dtype=F64)]
        h = 1e-6
        fd = float((f(*(v + h * d for v, d in zip((K, p, q), dirs)))
                    - f(*(v - h * d for v, d in zip((K, p, q), dirs)))) / (2 * h))
        ad = float(sum((gr * d).sum() for gr, d in zip(grads, dirs)))
        assert ad == pytest.approx(fd, rel=1e-6, abs=1e-9), (rho, a0r, a1r, a0s, a1s)


@pytest.mark.parametrize("zeta", [ZETAS["uniform"], ZETAS["discrete"]], ids=["uniform", "discrete"])
def test_torch_backend_matches_numpy_backend(zeta, monkeypatch):
    """The kernel runs in numpy on the CPU and in torch elsewhere: run the torch one on the CPU and compare
    values and gradients (relative 1e-12)."""
    L, p, q = _random_gaussian(2, 5, seed=6)
    K = L @ L.transpose(1, 2)

    def run():
        args = [v.clone().requires_grad_(True) for v in (K, p, q)]
        outs = relu_gaussian_moments(*args, zeta)
        grads = torch.autograd.grad(sum((o * (k + 1)).sum() for k, o in enumerate(outs)), args)
        return [o.detach() for o in outs] + list(grads)

    base = run()
    monkeypatch.setattr(joint_relu, "backend_for", joint_relu.torch_xp)
    other = run()
    for a, b in zip(base, other):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("zeta", [Uniform(0.2, 0.8), Discrete([0.2, 0.5, 0.9], [0.3, 0.3, 0.4]),
                                  ScaledBeta(2.0, 3.0, 0.2, 0.8)], ids=["uniform", "discrete", "beta"])
def test_block_diagonal_case_is_the_per_patch_evaluator(zeta):
    """A patch-p neuron of eq. (1) is a joint neuron with no weight on the other patches: z | zeta ~
    N(alpha c gamma, beta^2 G_p) with c = zeta (p = 0, q = alpha gamma) or 1 - zeta (p = alpha gamma,
    q = -alpha gamma). Pair terms, E[relu^2] and E[relu] per unit sigma equal the per-patch ReLU evaluator's
    (theory.population.relu) to 1e-12, trained-like weights (aligned with the features) included."""
    d, m = 6, 5
    data = MultiPatchData(d, zeta)
    alpha, beta = ou_schedule(0.1)
    g = torch.Generator().manual_seed(3)
    W = 0.5 * torch.randn(1, 2, m, d, generator=g, dtype=F64)
    feats = torch.as_tensor(data.features, dtype=F64)
    W[0, :, :3] += 1.5 * feats[:, None, :]  # three neurons per patch nearly along the feature
    W[0, 0, 4] = -0.999 * W[0, 0, 0] + 1e-3 * W[0, 0, 4]  # an anti-parallel pair
    G, gamma = gram_and_projections(W, data)
    ev = PopulationObjective(["relu"], data, [alpha], [beta], ["paper"], torch.device("cpu")).relu_evaluator
    terms = ev.rule_terms(G[:, :2], gamma, partials=False)
    r, s = np.triu_indices(m, 1)
    for patch in range(2):
        K = beta**2 * G[:, patch]
        mean = alpha * gamma[:, patch]
        p, q = (torch.zeros_like(mean), mean) if patch == 0 else (mean, -mean)
        P2, P1, _ = relu_gaussian_moments(K, p, q, zeta)
        sig = torch.sqrt(torch.diagonal(K, dim1=-2, dim2=-1))
        U = P2[0, r, s] / (sig[0, r] * sig[0, s])
        assert torch.allclose(U, terms.U[0, patch], rtol=0, atol=1e-12)
        assert torch.allclose(torch.diagonal(P2[0]) / sig[0] ** 2, terms.e2[0, patch], rtol=1e-12, atol=0)
        assert torch.allclose(P1[0, 0] / sig[0], terms.relu_mean[0, patch], rtol=1e-12, atol=0)


def test_quadrature_orders_are_converged():
    """Doubling the zeta nodes and the s-integral nodes moves no moment by more than 1e-13 (relative to
    sigma_r sigma_s) at random and nearly parallel neurons."""
    L, p, q = _random_gaussian(3, 6, seed=4)
    K = L @ L.transpose(1, 2)
    for zeta in (ZETAS["uniform"], ZETAS["beta"]):
        base = relu_gaussian_moments(K, p, q, zeta)
        fine = relu_gaussian_moments(K, p, q, zeta, zeta_order=64, angle_scale=2)
        sig = torch.sqrt(torch.diagonal(K, dim1=-2, dim2=-1))
        assert float(((base[0] - fine[0]) / (sig[:, :, None] * sig[:, None, :])).abs().max()) < 1e-13
        assert float(((base[1] - fine[1]) / sig[:, None, :]).abs().max()) < 1e-13
        assert float((base[2] - fine[2]).abs().max()) < 1e-13


def test_bad_input_raises_value_error():
    zeta = Uniform(0.2, 0.8)
    K = torch.eye(2, dtype=F64)[None]
    p = torch.zeros(1, 2, dtype=F64)
    cases = [
        ((K.float(), p, p, zeta), "float64"),
        ((K[0], p, p, zeta), "shape \\(C, m, m\\)"),
        ((K, p[:, :1], p, zeta), "p must have shape"),
        ((K, p, torch.zeros(2, 2, dtype=F64), zeta), "q must have shape"),
        ((K * float("nan"), p, p, zeta), "NaN"),
        ((torch.diag_embed(torch.tensor([[1.0, 0.0]], dtype=F64)), p, p, zeta), "positive diagonal"),
        ((torch.tensor([[[1.0, 0.5], [0.4, 1.0]]], dtype=F64), p, p, zeta), "symmetric"),
        ((torch.tensor([[[1.0, 1.5], [1.5, 1.0]]], dtype=F64), p, p, zeta), "rho"),
        ((K, p, p, "uniform"), "ZetaDistribution"),
        ((K.numpy(), p, p, zeta), "torch tensor"),
    ]
    for args, match in cases:
        with pytest.raises(ValueError, match=match):
            relu_gaussian_moments(*args)
    with pytest.raises(ValueError, match="zeta_order"):
        relu_gaussian_moments(K, p, p, zeta, zeta_order=1)
    with pytest.raises(ValueError, match="angle_scale"):
        relu_gaussian_moments(K, p, p, zeta, angle_scale=0)
