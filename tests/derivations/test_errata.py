"""One test per line of derivations/ERRATA.md: App. E (proofs of Thm 4.4 and 4.5) against our derivation.

A CORRECT line asserts symbolic identity with the derivation; a WRONG line asserts the difference is not
zero, shows what the printed line does equal (where that explains the slip) and that the corrected
formula is the derivation's (itself checked against Monte Carlo in test_linear_stationary.py).
"""

import math

import numpy as np
import pytest
import sympy as sp

from derivations import linear_stationary as LS
from derivations import paper_app_e as P
from derivations import thm44
from derivations._expectation import expect
from theory import MultiPatchData, Uniform, ou_schedule
from theory.bounds import linear_rule_error, linear_stationary_points
from theory.network import TwoLayerScore
from theory.rule import psi, thm44_lower_bound

PAPER = LS.derive_loss("paper")
A = LS.alpha**2 * LS.c2
B = 1 + LS.beta


def gN(expr):
    """Our (gamma, rho) expression in the paper's variables (gamma, N)."""
    return sp.expand(LS.to_GN(expr).subs(LS.G, LS.gamma**2))


def is_zero(expr) -> bool:
    return sp.simplify(sp.expand(expr)) == 0


def _numbers(t=0.4):
    zeta = Uniform(0.2, 0.8)
    alpha, beta = ou_schedule(t)
    return {LS.alpha: alpha, LS.beta: beta, LS.c2: zeta.moment(2)}


# ---- E.1-E.5: loss terms -------------------------------------------------------------------------
def test_E01_I1_correct():
    assert is_zero(gN(PAPER.I1_given_c) - P.I1)


def test_E02_I2_correct():
    assert is_zero(PAPER.I2_given_c - P.I2)


def test_E03_I3_correct():
    assert is_zero(gN(PAPER.I3_given_c) - P.I3)
    # the printed intermediate step: (alpha/beta^2) E[<w,x>] <w,x0> + (1/beta + 1) E[<w,x><w,eps>]
    z, _, _, _ = LS._patch_vectors("paper")
    w_eps = LS.gamma * LS.eps_f + LS.rho * LS.eps_e
    inter = LS.alpha / LS.beta**2 * LS._E_given_c(z) * LS.c * LS.gamma \
        + (1 / LS.beta + 1) * LS._E_given_c(z * w_eps)
    assert is_zero(gN(inter) - P.I3)


def test_E04_sample_loss_correct():
    assert is_zero(gN(PAPER.sample_loss) - P.SAMPLE_LOSS)


def test_E05_patch_loss_correct():
    loss = gN(PAPER.loss)
    const = loss.subs({LS.gamma: 0, LS.N: 0})
    assert is_zero(loss - const - P.LOSS_W_PART)
    # the constant is patch 1's own I2 averaged over zeta; patch 2's differs (E[(1 - zeta)^2])
    assert is_zero(const - (LS.alpha**2 * LS.c2 / LS.beta**4 + (1 + 1 / LS.beta) ** 2 * LS.d))


# ---- E.6-E.10: gradient, GD updates, stationarity equations ----------------------------------------
def _half_I3_loss_gradient():
    """Gradient (coefficients on u and w) of I1 - I3 + I2: what App. E's gradient differentiates."""
    half = LS._E(sp.expand(PAPER.I1_given_c + PAPER.I2_given_c - PAPER.I3_given_c))  # averaged over c
    L = LS.to_GN(half).subs(LS.G, LS.gamma**2)
    return sp.expand(sp.diff(L, LS.gamma)), sp.expand(2 * sp.diff(L, LS.N))


def test_E06_gradient_wrong_factor_two():
    assert not is_zero(PAPER.grad_f - P.GRAD_U) and not is_zero(PAPER.grad_w - P.GRAD_W)
    # the printed gradient is that of I1 - I3 (+ const), not I1 - 2 I3: the -2 I3 term lost its factor 2
    hf, hw = _half_I3_loss_gradient()
    assert is_zero(hf - P.GRAD_U) and is_zero(hw - P.GRAD_W)
    # ours: 2 A gamma N f - 4 A gamma / beta^2 f + (2 A G + 4 beta^2 N - 4 (1 + beta)) w
    assert is_zero(PAPER.grad_f - (2 * A * LS.gamma * LS.N - 4 * A * LS.gamma / LS.beta**2))
    assert is_zero(PAPER.grad_w - (2 * A * LS.gamma**2 + 4 * LS.beta**2 * LS.N - 4 * B))


def test_E07_gd_update_along_u_wrong():
    assert not is_zero(PAPER.gd_factor_f - P.FACTOR_U)
    # the printed factor is 1 - eta <printed gradient, u> / gamma: the slip of E.6 carried over
    assert is_zero(P.FACTOR_U - (1 - LS.eta * (P.GRAD_U + P.GRAD_W * LS.gamma) / LS.gamma))
    assert is_zero(PAPER.gd_factor_f - (1 + LS.eta * (4 * A / LS.beta**2 + 4 * B - 2 * A * LS.N
                                                       - 4 * LS.beta**2 * LS.N - 2 * A * LS.gamma**2)))


def test_E08_gd_update_orthogonal_wrong():
    assert not is_zero(PAPER.gd_factor_perp - P.FACTOR_PERP)
    assert is_zero(P.FACTOR_PERP - (1 - LS.eta * P.GRAD_W))
    ours = 1 + LS.eta * (4 * B - 4 * LS.beta**2 * LS.N - 2 * A * LS.gamma**2)
    assert is_zero(PAPER.gd_factor_perp - ours)


def test_E09_stationary_equation_w_wrong():
    assert not is_zero(PAPER.stationary_w - P.STAT_W)
    assert is_zero(P.STAT_W - (P.GRAD_U * LS.gamma + P.GRAD_W * LS.N))


def test_E10_stationary_equation_u_wrong():
    # with the undefined mu set to 1 the printed equation is <printed gradient, u>; no mu makes it ours
    assert is_zero(P.STAT_U.subs(P.mu, 1) - (P.GRAD_U + P.GRAD_W * LS.gamma))
    assert not is_zero(PAPER.stationary_f - P.STAT_U.subs(P.mu, 1))
    sols = sp.solve(sp.expand(PAPER.stationary_f - P.STAT_U), P.mu)
    assert all(s.has(LS.N) or s.has(LS.gamma) for s in sols)  # mu would have to depend on w


# ---- E.11-E.13: solutions and C0 -----------------------------------------------------------------
def test_E11_printed_norm_solutions_wrong():
    # the printed equations (E.9, E.10 with mu = 1) have the roots N = 1/beta^2 and N = S/2 ...
    Gs, Ns = sp.symbols("G_s N_s")
    eqs = [P.STAT_W.subs({LS.gamma**2: Gs}).subs({LS.N: Ns}),
           sp.cancel(P.STAT_U.subs(P.mu, 1) / LS.gamma).subs({LS.gamma**2: Gs}).subs({LS.N: Ns})]
    roots = {sp.simplify(s[Ns]) for s in sp.solve(eqs, [Gs, Ns], dict=True)}
    S = (A / LS.beta**2 + B) / (A + LS.beta**2)
    assert any(is_zero(r - 1 / LS.beta**2) for r in roots) and any(is_zero(r - S / 2) for r in roots)
    # ... but the printed +- formula has a wrong discriminant: it solves neither system
    for sol in (P.NORM_SQ_PLUS, P.NORM_SQ_MINUS):
        val = sol.evalf(30, subs=_numbers())
        assert all(abs(complex(r.evalf(30, subs=_numbers())) - complex(val)) > 1e-3 for r in roots)
        assert abs(complex(val) - complex(S.evalf(30, subs=_numbers()))) > 1e-3
    # the discriminant of the printed equations is a perfect square, (2 A/beta^2 + 2 - 2 beta)^2
    b2 = LS.beta**2
    disc = (6 * A / b2 + 6 + 2 * LS.beta) ** 2 - 32 * (A + b2) * (A / b2**2 + B / b2)
    assert is_zero(disc - (2 * A / LS.beta**2 + 2 - 2 * LS.beta) ** 2)
    assert not is_zero(disc - P._DISC)


def test_E12_printed_projection_solution_wrong():
    aligned = [f for f in LS.stationary_families("paper") if f.kind == "aligned"][0]
    # at the true minimum <w, u>^2 = ||w||^2 = S; the printed relation gives something else there
    val = P.PROJ_SQ.subs(LS.N, aligned.N).evalf(30, subs=_numbers())
    assert abs(complex(val) - complex(aligned.G.evalf(30, subs=_numbers()))) > 1e-2
    # and it is not the relation the printed C0 line uses (N (1 + beta - 2 beta^2 N) / (A (2N - 1/beta^2)))
    c0_rel = LS.N * (1 + LS.beta - 2 * LS.beta**2 * LS.N) / (A * (2 * LS.N - 1 / LS.beta**2))
    assert not is_zero(P.PROJ_SQ - c0_rel)


@pytest.mark.parametrize("t", [0.2, 0.4, 0.6, 0.8])
def test_E13_printed_c0_wrong(t):
    zeta = Uniform(0.2, 0.8)
    alpha, beta = ou_schedule(t)
    ours = abs(linear_rule_error(zeta, alpha, beta, "paper").bias)
    for sol in (P.NORM_SQ_PLUS, P.NORM_SQ_MINUS):
        norms = [sol.evalf(30, subs={P.alpha: alpha, P.beta: beta, P.c2: c2})
                 for c2 in (zeta.moment(2), zeta.mixed_moment(0, 2))]
        printed = complex(P.C0_LINE3.evalf(30, subs={P.alpha: alpha, P.beta: beta, P.m1: zeta.mean,
                                                     P.m2: zeta.moment(2), P.N1: norms[0], P.N2: norms[1]}))
        assert abs(abs(printed) - ours) > 0.1 * ours


# ---- E.14-E.19: bias and variance ----------------------------------------------------------------
PSI = LS.derive_psi()


def test_E14_bias_line_correct():
    assert is_zero(PSI.bias - P.BIAS_LINE2)


def test_E15_variance_line1_correct():
    assert is_zero(PSI.variance - P.VARIANCE_LINE1)


def test_E16_variance_line2_wrong_covariance_sign():
    diff = sp.factor(P.VARIANCE_LINE2 - PSI.variance)
    assert is_zero(diff - 4 * LS.alpha**2 * (LS.m2 - LS.m1**2) * P.G1 * P.G2)
    assert is_zero(PSI.variance - (LS.alpha**2 * (LS.m2 - LS.m1**2) * (P.G1 - P.G2) ** 2
                                   + LS.beta**2 * (P.N1 * P.G1 + P.N2 * P.G2)))


def test_E17_variance_line3_wrong():
    line3 = LS.paper_variance_line3()
    assert is_zero(line3 - P.VARIANCE_LINE2)  # consistent with the (wrong) line 2
    assert not is_zero(line3 - PSI.variance)


def test_E18_c1_positive():
    # Var = alpha^2 Var(zeta) (G1 - G2)^2 + beta^2 (N1 G1 + N2 G2) > 0 when some G_p > 0
    rest = sp.expand(PSI.variance - LS.beta**2 * (P.N1 * P.G1 + P.N2 * P.G2))
    assert is_zero(rest - LS.alpha**2 * (LS.m2 - LS.m1**2) * (P.G1 - P.G2) ** 2)


def test_E19_c0_positive_only_for_zeta_in_unit_interval():
    alpha, beta = ou_schedule(0.4)
    for lo in (0.05, 0.2, 0.4):
        assert linear_rule_error(Uniform(lo, lo + 0.6), alpha, beta, "paper").bias > 0
        assert linear_rule_error(Uniform(lo, lo + 0.6), alpha, beta, "score").bias < 0
    # Def 4.1 allows c_hi > 1; there the bias of the printed loss changes sign: C0 = 0 is possible
    assert linear_rule_error(Uniform(1.3, 1.9), alpha, beta, "paper").bias > 0
    assert linear_rule_error(Uniform(1.5, 2.1), alpha, beta, "paper").bias < 0


# ---- E.20-E.24: the dynamics argument and the statement of Thm 4.5 -------------------------------
def test_E20_gradient_in_span_of_u_and_w():
    loss, W, _ = thm44.linear_width_loss("paper", 1, 4)
    grad = sp.Matrix([sp.diff(loss, w) for w in W])
    rng = np.random.default_rng(0)
    w = rng.normal(size=4)
    sub = {**{s: v for s, v in zip(W, w)}, LS.alpha: 0.7, LS.beta: 0.7, LS.c2: 0.28}
    g = np.array(grad.evalf(20, subs=sub), dtype=float).ravel()
    assert thm44.outside_span(g, np.stack([w, np.eye(4)[0]])) < 1e-12 * np.linalg.norm(g)


def test_E21_gradient_gap_vanishes_at_small_init():
    """<grad L, u> >= <grad L, w0~> + C fails: both are O(sigma0) at initialisation."""
    f = LS.lambdified("paper")["grad"]
    alpha, beta = ou_schedule(0.4)
    gaps = []
    for s0 in (1e-2, 1e-4, 1e-6):
        dg, dr = f(alpha, beta, 0.28, s0, s0 * math.sqrt(99))  # gamma0 ~ sigma0, rho0 ~ sigma0 sqrt(d)
        gaps.append(dg - dr)  # unit-vector components: <grad, u> - <grad, w0~/|w0~|>
    assert abs(gaps[-1]) < 1e-4 and abs(gaps[-1] / gaps[-2]) == pytest.approx(1e-2, rel=1e-3)


def test_E22_orthogonal_part_reaches_order_one_first():
    """Printed loss, d = 10^4, sigma0 = 0.1/sqrt(d): ||w_perp||^2 reaches 1/2 while <w, u>^2 < 1e-3."""
    alpha, beta = ou_schedule(0.4)
    d = 10_000
    s0 = 0.1 / math.sqrt(d)
    _, g, r = LS.gd_path(alpha, beta, 0.28, s0, s0 * math.sqrt(d - 1), 0.01, 3000, "paper")
    k = int(np.argmax(r**2 >= 0.5))
    assert r[k] ** 2 >= 0.5 and g[k] ** 2 < 1e-3


@pytest.mark.parametrize("target", LS.TARGETS)
def test_E23_gd_limit_has_order_one_projection(target):
    zeta = Uniform(0.2, 0.8)
    alpha, beta = ou_schedule(0.4)
    S = [p for p in linear_stationary_points(zeta, alpha, beta, target)[0] if p.reached_by_gd][0]
    _, g, r = LS.gd_path(alpha, beta, zeta.moment(2), 0.01, 0.1, 0.02, 20_000, target, record_every=20_000)
    assert g[-1] ** 2 == pytest.approx(S.proj_sq, rel=1e-9) and abs(r[-1]) < 1e-9 and S.proj_sq > 0.1


def test_E24_not_every_stationary_point_has_order_one_projection():
    zeta = Uniform(0.2, 0.8)
    alpha, beta = ou_schedule(0.4)
    grad = LS.lambdified("paper")["grad"]
    zero_proj = [p for p in linear_stationary_points(zeta, alpha, beta, "paper")[0] if p.proj_sq == 0]
    assert {p.kind for p in zero_proj} == {"origin", "orthogonal"}
    for p in zero_proj:
        assert np.allclose(grad(alpha, beta, zeta.moment(2), 0.0, math.sqrt(p.norm_sq)), 0, atol=1e-12)


# ---- T.1-T.8: the proof of Thm 4.4 ---------------------------------------------------------------
def test_T1_mse_is_bias_squared_plus_variance():
    c = LS.alpha / LS.beta**2
    mse = PSI.second_moment - 2 * c * PSI.mean + c**2
    assert is_zero(mse - (PSI.bias**2 + PSI.variance))


def test_T2_psi_is_the_sum_over_neurons():
    """E_bias and E_variance are the mean and variance of sum_r sigma(<w_r, x>) <w_r, u> + (patch 2)."""
    data = MultiPatchData(5, Uniform(0.2, 0.8))
    alpha, beta = ou_schedule(0.4)
    x = data.sample_xt(500, alpha, beta, np.random.default_rng(2))
    net = TwoLayerScore(5, 3, "quadratic", seed=4, init_std=0.4, device="cpu")
    W = net.weights.detach().numpy()
    z = np.einsum("npd,pmd->npm", x[:, :2], W)
    by_hand = (z[:, 0] ** 2 * (W[0] @ data.u)).sum(-1) + (z[:, 1] ** 2 * (W[1] @ data.v)).sum(-1)
    np.testing.assert_allclose(psi(net, x, data).numpy(), by_hand, rtol=1e-12, atol=1e-12)


def test_T3_neuronwise_decomposition_fails_for_width_two():
    grad = thm44.gradient_function("paper")
    rng = np.random.default_rng(0)
    W = rng.normal(scale=0.1, size=(2, 4))
    f = np.eye(4)[0]
    alpha, beta = ou_schedule(0.4)
    W0 = W.copy()
    for _ in range(300):
        W = W - 0.02 * grad(alpha, beta, 0.28, W)
    own = [thm44.outside_span(W[r], np.stack([W0[r], f])) for r in range(2)]
    assert min(own) > 1e-3 * np.linalg.norm(W)  # neuron r leaves span(w_r^0, u)
    joint = thm44.outside_span(W, np.vstack([W0, f]))
    assert joint.max() < 1e-12 * np.linalg.norm(W)  # but all stay in span(w_1^0, w_2^0, u)


@pytest.mark.parametrize("target", LS.TARGETS)
def test_T3_width_two_loss_closed_form(target):
    loss, _, closed = thm44.linear_width_loss(target)
    assert is_zero(loss - closed)


def test_T4_patch_two_moves_along_v_not_u():
    """GD on patch 2 (feature v) from a small init ends along v, outside span(w^(2),0, u)."""
    zeta = Uniform(0.2, 0.8)
    alpha, beta = ou_schedule(0.4)
    d = 20
    u, v = np.eye(d)[0], np.eye(d)[1]
    der = LS.derive_loss("score")
    gf = sp.lambdify((LS.alpha, LS.beta, LS.c2, LS.gamma, LS.N), [der.grad_f, der.grad_w])
    c2 = zeta.mixed_moment(0, 2)
    w = np.random.default_rng(1).normal(scale=0.02, size=d)
    w0 = w.copy()
    for _ in range(3000):
        g = gf(alpha, beta, c2, w @ v, w @ w)
        w = w - 0.1 * (g[0] * v + g[1] * w)
    assert thm44.outside_span(w, np.stack([w0, u])) > 0.9 * np.linalg.norm(w)
    assert thm44.outside_span(w, np.stack([w0, v])) < 1e-12


def test_T5_noise_split_is_orthogonal_and_independent():
    rng = np.random.default_rng(3)
    W0 = rng.normal(size=(3, 8))
    q, _ = np.linalg.qr(W0.T)
    P0 = q @ q.T
    eps = rng.normal(size=8)
    np.testing.assert_allclose(P0 @ eps + (np.eye(8) - P0) @ eps, eps, atol=1e-14)
    np.testing.assert_allclose(P0 @ (np.eye(8) - P0), 0, atol=1e-14)  # Cov(eps_-, eps_perp) = 0: independent


def test_T6_preactivation_depends_on_eps_perp_only_through_u():
    rng = np.random.default_rng(4)
    d = 7
    w0, u = rng.normal(size=d), rng.normal(size=d)
    u /= np.linalg.norm(u)
    phi, gam, alpha, beta, zeta = 0.8, 1.3, 0.7, 0.6, 0.4
    q = w0 / np.linalg.norm(w0)
    eps = rng.normal(size=d)
    e_minus = q * (q @ eps)
    e_perp = eps - e_minus
    w = phi * w0 + gam * u
    lhs = w @ (alpha * zeta * u + beta * eps)
    rhs = phi * alpha * zeta * (w0 @ u) + gam * alpha * zeta + beta * (w @ e_minus) \
        + beta * gam * (u @ e_perp)
    assert lhs == pytest.approx(rhs, rel=1e-13)


def test_T7_total_variance_first_step():
    # Var(psi) - E[Var(psi1 | zeta) + Var(psi2 | zeta)] = alpha^2 Var(zeta) (G1 - G2)^2 >= 0
    assert is_zero(PSI.variance - PSI.cond_var_sum - LS.alpha**2 * (LS.m2 - LS.m1**2) * (P.G1 - P.G2) ** 2)
    assert is_zero(PSI.cond_var_sum - LS.beta**2 * (P.N1 * P.G1 + P.N2 * P.G2))


def test_T8_total_variance_second_step():
    """Linear m = 1, w = phi w0 + g f: E[Var(psi1 | zeta, eps_-)] = beta^2 <w,f>^2 g^2 |(I - P0) f|^2
    <= beta^2 <w,f>^2 ||w||^2 = E[Var(psi1 | zeta)]; theory.rule.thm44_lower_bound agrees."""
    d = 6
    data = MultiPatchData(d, Uniform(0.2, 0.8))
    alpha, beta = ou_schedule(0.4)
    W0 = np.random.default_rng(0).normal(scale=0.3, size=(2, 1, d))
    coef = [(0.7, 1.1), (1.3, 0.6)]
    W = np.stack([phi * W0[p, 0] + g * data.features[p] for p, (phi, g) in enumerate(coef)])[:, None]
    net = TwoLayerScore.from_weights(W, "linear", device="cpu")
    closed, first = 0.0, 0.0
    for p, (_, g) in enumerate(coef):
        w, f = W[p, 0], data.features[p]
        q = W0[p, 0] / np.linalg.norm(W0[p, 0])
        f_perp = f - (q @ f) * q
        closed += beta**2 * (w @ f) ** 2 * g**2 * (f_perp @ f_perp)
        first += beta**2 * (w @ f) ** 2 * (w @ w)
    bound = thm44_lower_bound(net, data, alpha, beta, n=500, rng=1, init_weights=W0)
    assert bound.value == pytest.approx(closed, rel=1e-12)
    assert closed < first


def test_expectation_helper_moments():
    e, z = sp.symbols("e z")
    assert expect(e**4, [e]) == 3 and expect(e**3, [e]) == 0
    assert expect(z**3 * e**2, [e], z) == sp.Symbol("m_3", positive=True)
    with pytest.raises(ValueError, match="linear"):
        expect(sp.Symbol("R") ** 2, [], None, {sp.Symbol("R"): 1})


def test_every_errata_line_names_existing_tests():
    """Each table row of ERRATA.md has a verdict and at least one test, and every named test exists.
    Names are `test_x` (this file), `path/test_file.py::test_x` or `::test_x` (same file as before)."""
    import importlib
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "derivations" / "ERRATA.md").read_text()
    rows = [r for r in text.splitlines() if re.match(r"\| [SETA]\.\d+ \|", r)]
    ids = [r.split("|")[1].strip() for r in rows]
    expected = [f"S.{i}" for i in range(1, 4)] + [f"E.{i}" for i in range(1, 25)] + \
        [f"T.{i}" for i in (1, 2, 3, 4, 5, 6, 7, 8)] + [f"A.{i}" for i in range(1, 4)]
    assert ids == expected
    for row in rows:
        assert re.search(r"\| (CORRECT|WRONG)", row), row
        names = re.findall(r"`((?:[\w/]+\.py)?::)?(test_\w+)`", row)
        assert names, row
        module = "tests.derivations.test_errata"
        for prefix, name in names:
            if prefix and prefix != "::":
                path = prefix[:-len(".py::")]
                module = "tests." + path.replace("/", ".").removeprefix("tests.") if "/" in path \
                    else "tests.derivations." + path
            elif not prefix:
                module = "tests.derivations.test_errata"
            assert hasattr(importlib.import_module(module), name), (row[:8], module, name)
