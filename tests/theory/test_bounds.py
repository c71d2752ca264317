"""theory.bounds: hand-written closed forms equal the sympy derivation (1e-12 relative), agree with Monte
Carlo and with gradient descent, and the separable floor agrees with independent nested quadrature."""

import math

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, special

from derivations import linear_stationary as LS
from tests.strategies import times, zetas
from theory import Discrete, MultiPatchData, ScaledBeta, Uniform, ou_schedule
from theory.bounds import (
    StationaryPoint,
    bayes_optimal_rule_error,
    linear_gd_point,
    linear_psi_moments,
    linear_rule_error,
    linear_stationary_points,
    separable_floor,
)
from theory.network import TwoLayerScore
from theory.rule import rule_error

RTOL = 1e-12

schedules = st.one_of(times.map(ou_schedule), st.tuples(st.floats(0.05, 3.0), st.floats(0.05, 3.0)))


def _close(a, b, rtol=RTOL, scale=0.0):
    a, b = complex(a), complex(b)
    return abs(a - b) <= rtol * max(abs(a), abs(b), scale)


def _sympy_families(target, alpha, beta, c2):
    """Existing families from the sympy derivation, evaluated at 30 digits."""
    funcs = LS.lambdified(target, "mpmath")["families"]
    out = {}
    with mpmath.workdps(30):
        for kind, fs in funcs.items():
            for fn in fs:
                vals = fn(alpha, beta, c2)
                G, N, h1, h2, trans, offset, *conds = vals
                if all(complex(c).imag == 0 and complex(c).real > 0 for c in conds):
                    out[kind] = (G, N, (h1, h2), trans, offset)
    return out


@given(zetas(), schedules, st.sampled_from(LS.TARGETS))
def test_stationary_points_equal_sympy(zeta, ab, target):
    alpha, beta = ab
    per_patch = linear_stationary_points(zeta, alpha, beta, target)
    for patch, c2 in enumerate((zeta.moment(2), zeta.mixed_moment(0, 2))):
        ref = _sympy_families(target, alpha, beta, c2)
        pts = {p.kind: p for p in per_patch[patch]}
        assert set(pts) == set(ref), (set(pts), set(ref))
        for kind, (G, N, inplane, trans, offset) in ref.items():
            p = pts[kind]
            scale = max(abs(complex(e)) for e in (*inplane, trans))
            assert p.patch == patch
            assert _close(p.proj_sq, G) and _close(p.norm_sq, N), kind
            assert all(_close(a, b, scale=scale * 1e-3) for a, b in zip(p.hessian_in_plane, inplane)), kind
            assert _close(p.hessian_transverse, trans, scale=scale * 1e-3), kind
            assert _close(p.loss_offset, offset), kind


@given(zetas(), times, st.sampled_from(LS.TARGETS))
def test_rule_error_equals_sympy(zeta, t, target):
    alpha, beta = ou_schedule(t)
    err = linear_rule_error(zeta, alpha, beta, target)
    f = LS.lambdified(target, "mpmath")
    with mpmath.workdps(30):
        args = (alpha, beta, zeta.mean, zeta.moment(2))
        bias, var, total = f["bias"](*args), f["variance"](*args), f["total"](*args)
    assert _close(err.bias, bias) and _close(err.variance, var) and _close(err.total, total)
    # Thm 4.5: C1 > 0; C0 > 0 when E[zeta] is in [0, 1] (the printed loss over-shoots, the score loss
    # under-shoots). Def 4.1 also allows zeta > 1, where the bias can change sign (ERRATA, Thm 4.5).
    assert err.variance > 0
    if 0 <= zeta.mean <= 1:
        assert err.bias > 0 if target == "paper" else err.bias < 0


@given(zetas(), schedules, *[st.floats(0, hi, allow_subnormal=False) for hi in (3, 1, 3, 1)])
def test_psi_moments_equal_sympy(zeta, ab, n1, f1, n2, f2):
    alpha, beta = ab
    G1, G2 = n1 * f1, n2 * f2
    mean, var = linear_psi_moments(zeta, alpha, beta, (G1, n1), (G2, n2))
    psi = LS.derive_psi()
    sub = {LS.alpha: alpha, LS.beta: beta, LS.m1: zeta.mean, LS.m2: zeta.moment(2), LS.G1: G1, LS.G2: G2,
           LS.N1: n1, LS.N2: n2}
    ref_mean = psi.mean.evalf(30, subs=sub)
    ref_var = psi.variance.evalf(30, subs=sub)
    scale = alpha * (abs(G1) + abs(G2)) * zeta.hi
    assert _close(mean, ref_mean, scale=scale * 1e-2)
    var_scale = alpha**2 * zeta.var * (G1 + G2) ** 2 + beta**2 * (G1 * n1 + G2 * n2)
    assert _close(var, ref_var, scale=1e-3 * var_scale)


@pytest.mark.parametrize("target", LS.TARGETS)
@pytest.mark.parametrize("t", [0.2, 0.8])
def test_rule_error_matches_monte_carlo(target, t):
    """The network of eq. (1) with the GD-limit weights, evaluated by theory.rule.rule_error (5 SE)."""
    zeta = Uniform(0.2, 0.8)
    data = MultiPatchData(4, zeta)
    alpha, beta = ou_schedule(t)
    p1, p2 = linear_gd_point(zeta, alpha, beta, target)
    e = np.eye(4)
    W = np.stack([p1.weights(data.u, e[2]), p2.weights(data.v, e[3])])[:, None, :]
    net = TwoLayerScore.from_weights(W, "linear", device="cpu")
    mc = rule_error(net, data, alpha, beta, n=200_000, rng=11)
    exact = linear_rule_error(zeta, alpha, beta, target)
    assert abs(mc.bias - exact.bias) < 5 * mc.bias_se
    assert abs(mc.variance - exact.variance) < 5 * mc.variance_se


@given(st.floats(1.0001, 3.0), st.floats(0.05, 2.0),
       st.sampled_from([Uniform(0.2, 0.8), Discrete([0.3, 0.9])]))
def test_printed_loss_with_beta_above_one_is_undetermined(beta, alpha, zeta):
    """For beta > 1 the orthogonal sphere of eq. (2) as printed is a minimum too: no GD limit is claimed."""
    pts = linear_stationary_points(zeta, alpha, beta, "paper")
    for patch in pts:
        kinds = {p.kind: p for p in patch}
        assert kinds["orthogonal"].nature == "minimum"
        if kinds["aligned"].nature == "minimum":
            assert not any(p.reached_by_gd for p in patch)
    if any(not any(p.reached_by_gd for p in patch) for patch in pts):
        with pytest.raises(ValueError, match="not determined"):
            linear_rule_error(zeta, alpha, beta, "paper")
    # the score target is unaffected
    score_pts = linear_stationary_points(zeta, alpha, beta, "score")
    assert all(sum(p.reached_by_gd for p in patch) == 1 for patch in score_pts)


def test_mixed_points_are_saddles_where_they_exist():
    zeta = Uniform(0.2, 0.8)
    pts = linear_stationary_points(zeta, 3.0, 1.5, "paper")[0]  # A = 9 E[zeta^2] > beta^2 (beta - 1)
    kinds = {p.kind: p for p in pts}
    assert kinds["mixed"].nature == "saddle" and kinds["aligned"].nature == "minimum"
    assert kinds["mixed"].norm_sq == pytest.approx(2 / 1.5**2, rel=RTOL)


def _full_gradient(target, alpha, beta, c2):
    der = LS.derive_loss(target)
    gf = LS.sp.lambdify((LS.alpha, LS.beta, LS.c2, LS.gamma, LS.N), [der.grad_f, der.grad_w], "numpy")
    return lambda w, f: (lambda g: g[0] * f + g[1] * w)(gf(alpha, beta, c2, w @ f, w @ w))


@pytest.mark.parametrize("target, lr, steps", [("score", 0.1, 3000), ("paper", 0.03, 6000)])
@pytest.mark.parametrize("t", [0.2, 0.4])
def test_gradient_descent_in_r_d_reaches_the_marked_point(target, lr, steps, t):
    """GD in R^d (d = 40) on the derived gradient, from N(0, sigma0^2 I) with sigma0 = 0.1/sqrt(d),
    converges to the point ``reached_by_gd`` marks (both patches), and matches the reduced path."""
    zeta = Uniform(0.2, 0.8)
    alpha, beta = ou_schedule(t)
    d = 40
    rng = np.random.default_rng(3)
    for patch, (point, c2) in enumerate(zip(linear_gd_point(zeta, alpha, beta, target),
                                            (zeta.moment(2), zeta.mixed_moment(0, 2)))):
        f = np.eye(d)[patch]
        grad = _full_gradient(target, alpha, beta, c2)
        w = rng.normal(scale=0.1 / math.sqrt(d), size=d)
        w0 = w.copy()
        for _ in range(steps):
            w = w - lr * grad(w, f)
        assert point.reached_by_gd and point.kind == "aligned"
        assert (w @ f) ** 2 == pytest.approx(point.proj_sq, rel=1e-9)
        assert w @ w == pytest.approx(point.norm_sq, rel=1e-9)
        e = w0 - (w0 @ f) * f
        _, g_hist, r_hist = LS.gd_path(alpha, beta, c2, w0 @ f, np.linalg.norm(e), lr, steps, target,
                                       record_every=steps)
        assert g_hist[-1] == pytest.approx(w @ f, rel=1e-9)
        assert abs(r_hist[-1] - w @ e / np.linalg.norm(e)) < 1e-9


def test_full_hessian_spectrum_is_in_plane_plus_transverse():
    """The Hessian of the per-patch loss in R^5, from (gamma, N) calculus, has the eigenvalues reported
    per point: the two in-plane ones and the transverse one with multiplicity d - 2 (d - 1 if w || f)."""
    sp = LS.sp
    d = 5
    zeta = Uniform(0.2, 0.8)
    cases = (("paper", ou_schedule(0.4)), ("score", ou_schedule(0.4)), ("paper", (3.0, 1.5)))
    for target, (alpha, beta) in cases:
        der = LS.derive_loss(target)
        L = der.loss_GN.subs(LS.G, LS.gamma**2)
        second = [sp.diff(L, LS.gamma, 2), sp.diff(L, LS.gamma, LS.N), sp.diff(L, LS.N, 2), sp.diff(L, LS.N)]
        hf = sp.lambdify((LS.alpha, LS.beta, LS.c2, LS.d, LS.gamma, LS.N), second)
        c2 = zeta.moment(2)
        f, e = np.eye(d)[0], np.eye(d)[1]
        for p in linear_stationary_points(zeta, alpha, beta, target)[0]:
            w = p.weights(f, e)
            Lgg, LgN, LNN, LN = hf(alpha, beta, c2, d, w @ f, w @ w)
            H = Lgg * np.outer(f, f) + 2 * LgN * (np.outer(f, w) + np.outer(w, f)) \
                + 4 * LNN * np.outer(w, w) + 2 * LN * np.eye(d)
            got = np.sort(np.linalg.eigvalsh(H))
            mult = d - 2 if p.norm_sq > p.proj_sq else d - 1
            expect = np.sort([*p.hessian_in_plane, *([p.hessian_transverse] * mult)][:d])
            if p.norm_sq == p.proj_sq:  # w || f or w = 0: in-plane second value is the transverse one
                expect = np.sort([p.hessian_in_plane[0], *([p.hessian_transverse] * (d - 1))])
            np.testing.assert_allclose(got, expect, rtol=1e-10, atol=1e-10 * np.abs(got).max())


# ---- Bayes-optimal and separable floor ----------------------------------------------------------
@given(times)
def test_bayes_optimal_rule_error(t):
    alpha, beta = ou_schedule(t)
    assert bayes_optimal_rule_error(alpha, beta, "score").total == 0.0
    err = bayes_optimal_rule_error(alpha, beta, "paper")
    assert err.bias == 0.0 and err.variance == pytest.approx(2 * (1 + beta) ** 2 / beta**2, rel=1e-15)


_GL = np.polynomial.legendre.leggauss(200)


def _uniform_posterior_mean(mode, sd, lo, hi):
    """E[zeta | mode, sd] - (lo + hi)/2 under U[lo, hi] by 200-point Gauss-Legendre, the exponent shifted by
    its maximum on [lo, hi] (independent of theory.zeta; from the centre: only variances are used)."""
    z = lo + (hi - lo) * (_GL[0] + 1) / 2
    near = min(max(mode, lo), hi)
    k = _GL[1] * np.exp(-((z - mode) ** 2 - (near - mode) ** 2) / (2 * sd * sd))
    return float(k @ (z - (lo + hi) / 2) / k.sum())


def _discrete_posterior_mean(mode, sd, values, probs):
    logw = np.log(probs) - (np.asarray(values) - mode) ** 2 / (2 * sd**2)
    w = np.exp(logw - logw.max())
    return float(w @ values / w.sum())


def _nested_floor(post, zeta_integral, alpha, beta):
    """Var(psi) = 2 (alpha/beta^2)^2 E_zeta Var_eps(m(zeta + s eps)), independently by scipy quad."""
    sd = beta / alpha
    phi = lambda e: math.exp(-e * e / 2) / math.sqrt(2 * math.pi)  # noqa: E731

    def cond_var(z):
        m1 = integrate.quad(lambda e: post(z + sd * e, sd) * phi(e), -10, 10, epsabs=1e-15, epsrel=1e-12,
                            limit=200)[0]
        return integrate.quad(lambda e: (post(z + sd * e, sd) - m1) ** 2 * phi(e), -10, 10, epsabs=0,
                              epsrel=1e-11, limit=200)[0]

    return 2 * (alpha / beta**2) ** 2 * zeta_integral(cond_var)


@pytest.mark.parametrize("t, lo, hi", [(0.05, 0.2, 0.8), (0.4, 0.2, 0.8), (2.0, 0.2, 0.8),
                                        (4.0, 0.3717941997058327, 0.4217941997058327)])  # shrunk regression
def test_separable_floor_uniform_against_nested_quad(t, lo, hi):
    alpha, beta = ou_schedule(t)
    ref = _nested_floor(lambda m, s: _uniform_posterior_mean(m, s, lo, hi),
                        lambda f: integrate.quad(f, lo, hi, epsabs=0, epsrel=1e-12, limit=200)[0] / (hi - lo),
                        alpha, beta)
    got = separable_floor(Uniform(lo, hi), alpha, beta)
    assert got.bias == 0.0 and got.total == got.variance
    assert got.variance == pytest.approx(ref, rel=1e-8)


@pytest.mark.parametrize("t", [0.01, 0.4, 3.0])
def test_separable_floor_discrete_against_nested_quad(t):
    values, probs = [0.2, 0.45, 0.9], [0.5, 0.2, 0.3]
    alpha, beta = ou_schedule(t)
    ref = _nested_floor(lambda m, s: _discrete_posterior_mean(m, s, values, probs),
                        lambda f: sum(p * f(v) for v, p in zip(values, probs)), alpha, beta)
    assert separable_floor(Discrete(values, probs), alpha, beta).variance == pytest.approx(ref, rel=1e-8)


def test_separable_floor_scaled_beta_against_nested_quad():
    a, b, lo, hi = 1.5, 2.5, 0.2, 0.8
    zeta = ScaledBeta(a, b, lo, hi)
    alpha, beta = ou_schedule(0.3)
    nodes, weights = zeta.quadrature(400)  # inner posterior by 400-point Gauss-Jacobi, exact weight

    def post(m, s):
        k = np.exp(-(nodes - m) ** 2 / (2 * s * s))
        return float((weights * k) @ nodes / (weights @ k))

    def zeta_integral(fn):
        dens = lambda z: ((z - lo) / (hi - lo)) ** (a - 1) * ((hi - z) / (hi - lo)) ** (b - 1) / (  # noqa: E731
            special.beta(a, b) * (hi - lo))
        return integrate.quad(lambda z: dens(z) * fn(z), lo, hi, epsabs=0, epsrel=1e-11, limit=100)[0]

    ref = _nested_floor(post, zeta_integral, alpha, beta)
    assert separable_floor(zeta, alpha, beta).variance == pytest.approx(ref, rel=1e-8)


@settings(max_examples=8)
@given(st.floats(0.05, 0.9), st.floats(0.1, 1.0), times)
def test_separable_floor_generic_path_equals_exact_path(lo, width, t):
    """ScaledBeta(1, 1) is Uniform: the Gauss-Jacobi posterior path equals the truncated-normal one."""
    alpha, beta = ou_schedule(t)
    u = separable_floor(Uniform(lo, lo + width), alpha, beta).variance
    b = separable_floor(ScaledBeta(1.0, 1.0, lo, lo + width), alpha, beta).variance
    assert b == pytest.approx(u, rel=1e-8)


def test_separable_floor_matches_monte_carlo_of_marginal_scores():
    """psi_t = (alpha/beta^2)(E[zeta | x1] + E[1 - zeta | x2]) sampled directly (exact posteriors)."""
    values, probs = np.array([0.2, 0.5, 0.8]), np.array([0.25, 0.5, 0.25])
    alpha, beta = ou_schedule(0.3)
    rng = np.random.default_rng(5)
    n = 200_000
    zeta = rng.choice(values, size=n, p=probs)
    a = alpha * zeta + beta * rng.standard_normal(n)
    b = alpha * (1 - zeta) + beta * rng.standard_normal(n)
    sd = beta / alpha

    def post(mode):
        logw = np.log(probs) - (values[None] - mode[:, None]) ** 2 / (2 * sd**2)
        w = np.exp(logw - logw.max(1, keepdims=True))
        return (w @ values) / w.sum(1)

    psi = alpha / beta**2 * (post(a / alpha) + 1 - post(1 - b / alpha))
    err = separable_floor(Discrete(values, probs), alpha, beta)
    dev = psi - alpha / beta**2
    assert abs(dev.mean()) < 5 * dev.std() / math.sqrt(n)
    m4 = np.mean((dev - dev.mean()) ** 4)
    assert abs(dev.var(ddof=1) - err.variance) < 5 * math.sqrt((m4 - dev.var() ** 2) / n)


def test_separable_floor_far_below_linear_gd_error():
    zeta = Uniform(0.2, 0.8)
    for t in (0.2, 0.4, 0.6, 0.8):
        alpha, beta = ou_schedule(t)
        linear = linear_rule_error(zeta, alpha, beta, "score").total
        assert separable_floor(zeta, alpha, beta).total < 0.05 * linear


# ---- validation --------------------------------------------------------------------------------
@pytest.mark.parametrize("call, word", [
    (lambda: linear_stationary_points("uniform", 0.5, 0.5), "zeta"),
    (lambda: linear_stationary_points(Uniform(), 0.0, 0.5), "alpha"),
    (lambda: linear_stationary_points(Uniform(), 0.5, -1.0), "beta"),
    (lambda: linear_stationary_points(Uniform(), 0.5, 0.5, target="eps"), "target"),
    (lambda: linear_rule_error(Uniform(), 0.5, math.nan), "beta"),
    (lambda: linear_rule_error(Uniform(), 0.5, 0.5, target=None), "target"),
    (lambda: linear_psi_moments(Uniform(), 0.5, 0.5, (2.0, 1.0), (0.0, 0.0)), "point1"),
    (lambda: linear_psi_moments(Uniform(), 0.5, 0.5, (0.0, 1.0), "x"), "point2"),
    (lambda: linear_psi_moments(Uniform(), 0.5, 0.5, (-1.0, 1.0), (0.0, 0.0)), "point1"),
    (lambda: separable_floor(Uniform(), 0.5, 0.5, rtol=0), "rtol"),
    (lambda: separable_floor(None, 0.5, 0.5), "zeta"),
    (lambda: bayes_optimal_rule_error(0.5, 0.0), "beta"),
    (lambda: bayes_optimal_rule_error(0.5, 0.5, "both"), "target"),
])
def test_invalid_inputs(call, word):
    with pytest.raises(ValueError, match=word):
        call()


def test_stationary_point_weights_validation():
    p = StationaryPoint(0, "aligned", 1.0, 1.0, (1.0, 1.0), 1.0, "minimum", -1.0, True)
    with pytest.raises(ValueError, match="orthonormal"):
        p.weights([1.0, 0.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="one length"):
        p.weights([1.0, 0.0], [0.0, 1.0, 0.0])
    assert np.allclose(p.weights([1.0, 0.0], [0.0, 1.0]), [1.0, 0.0])


def test_target_enum_accepted():
    from theory.losses import Target

    a = linear_rule_error(Uniform(), *ou_schedule(0.4), target=Target.SCORE)
    assert a == linear_rule_error(Uniform(), *ou_schedule(0.4), target="score")





@given(zetas(), times, st.sampled_from(LS.TARGETS))
def test_landscape_for_variance_preserving_schedules(zeta, t, target):
    """beta < 1: origin a maximum (paper) / strict saddle (score), orthogonal sphere a strict saddle, aligned
    pair the only minimum and marked as the GD limit, for both patches."""
    for patch in linear_stationary_points(zeta, *ou_schedule(t), target):
        nature = {p.kind: p.nature for p in patch}
        assert nature["origin"] == ("maximum" if target == "paper" else "saddle")
        assert nature.get("orthogonal", "saddle") == "saddle" and "mixed" not in nature
        assert [p.kind for p in patch if p.reached_by_gd] == ["aligned"] and nature["aligned"] == "minimum"


@pytest.mark.parametrize("target", LS.TARGETS)
def test_population_module_agrees_with_the_derivation(target):
    """theory.population (exact Gaussian expectations, written independently) at random linear m = 1
    weights: loss equals the derived loss, psi moments equal linear_psi_moments (1e-12 relative)."""
    population = pytest.importorskip("theory.population")
    d = 5
    zeta = ScaledBeta(2.0, 3.0, 0.1, 0.7)
    data = MultiPatchData(d, zeta)
    alpha, beta = ou_schedule(0.4)
    W = np.random.default_rng(0).normal(scale=0.7, size=(2, 1, d))
    net = TwoLayerScore.from_weights(W, "linear", device="cpu")
    inv = [((W[p, 0] @ f) ** 2, W[p, 0] @ W[p, 0]) for p, f in enumerate(data.features)]
    derived = sum(float(LS.derive_loss(target).loss_GN.evalf(30, subs={
        LS.alpha: alpha, LS.beta: beta, LS.c2: c2, LS.d: d, LS.G: g, LS.N: n}))
        for (g, n), c2 in zip(inv, (zeta.moment(2), zeta.mixed_moment(0, 2))))
    loss = float(population.expected_loss(net, data, alpha, beta, target).detach())
    assert loss == pytest.approx(derived, rel=1e-12)
    mean, var = population.psi_moments(net, data, alpha, beta)
    ref_mean, ref_var = linear_psi_moments(zeta, alpha, beta, *inv)
    assert float(mean) == pytest.approx(ref_mean, rel=1e-12)
    assert float(var) == pytest.approx(ref_var, rel=1e-12)


def test_an_eq1_network_can_go_below_the_separable_floor():
    """Pinned: the floor is the E of the *loss-optimal* per-patch score, not a bound over eq. (1)'s nets.

    m = d ReLU neurons on the rows of the Householder reflection H that maps u to (1, ..., 1)/sqrt(d):
    every row has <h_r, u> = 1/sqrt(d), so psi^(1) = s^2 d^{-1/2} sum_r relu((H x)_r), a sum of d weakly
    dependent terms whose relative spread falls like d^{-1/2}. With the scale s set so that E[psi_t] is
    alpha/beta^2 (from an independent sample), E = O(1/d): at d = 400, t = 0.1 it is ~0.06 against a
    floor of 0.158 (Uniform(0.2, 0.8)). Monte Carlo, 20 000 fresh x_t: E + 5 SE must stay below the floor.
    """
    d, zeta = 400, Uniform(0.2, 0.8)
    alpha, beta = ou_schedule(0.1)
    data = MultiPatchData(d, zeta)
    ones = np.ones(d) / math.sqrt(d)
    n = np.eye(d)[0] - ones
    H = np.eye(d) - 2 * np.outer(n, n) / (n @ n)  # H e_1 = ones; symmetric, orthogonal
    W = np.stack([H, np.roll(H, 1, axis=1)])  # patch 2: the same construction around v = e_2
    assert np.allclose(W[0] @ data.features[0], ones) and np.allclose(W[1] @ data.features[1], ones)
    net = TwoLayerScore.from_weights(W, "relu", beta=beta, device="cpu")
    from theory.rule import psi

    mean_at_unit_scale = float(psi(net, data.sample_xt(20_000, alpha, beta, np.random.default_rng(1)), data).mean())
    net = TwoLayerScore.from_weights(W * math.sqrt(alpha / beta**2 / mean_at_unit_scale), "relu", beta=beta,
                                     device="cpu")
    err = rule_error(net, data, alpha, beta, n=20_000, rng=2)
    floor = separable_floor(zeta, alpha, beta)
    assert err.total + 5 * err.total_se < floor.total, (err, floor)
