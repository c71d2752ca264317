"""Beyond the paper: the joint network (``theory.network.JointTwoLayerScore``) derived in sympy.

A joint net's neurons see all patches: g(x) = sum_r sigma(<w_r, x>) w_r, x = [x^(1); ...; x^(P)] (eq. (1)
with one weight matrix W (m x P d) instead of one per patch), trained on eq. (2) under Def 4.1 / App. F
(x_t = alpha x_0 + beta eps; patches p >= 3 of x_0 are N(0, I) as in ``MultiPatchData``).

**1. The loss for a polynomial activation** (``explicit_loss``): in explicit coordinates (small d, P, a
rational weight matrix, u = e_1 of patch 1, v = e_2 of patch 2) the loss E||g(x_t) - y||^2, y the residual
target of ``theory.losses`` (x_t/beta^2 + eps "paper", alpha x_0/beta^2 "score"), and E[psi_t], E[psi_t^2]
(Def 4.3) are expanded and averaged with Gaussian and zeta moments only (``_expectation.expect``); alpha,
beta stay symbols. ``tests/derivations/test_joint_derivation.py`` checks them against
``theory.population.JointObjective`` (Isserlis given zeta + a Gauss rule in zeta) to ~1e-12.

**2. The linear joint net** (sigma(z) = z): g = M x with M = W^T W, symmetric PSD of rank <= m, so

    L(M) = tr(M S M) - 2 tr(M B) + E||y||^2,   S = E[x_t x_t^T],   B = E[x_t y^T] = S/beta^2 + k beta I,

k beta = beta ("paper") or -1 ("score") (``linear_loss_identity``). S commutes with B; in S's eigenbasis
(eigenvalues lam_i), b_i = lam_i/beta^2 + k beta and L(M) = ||M S^(1/2) - B S^(-1/2)||_F^2 + const.
Eckart-Young on A = M S^(1/2): the best rank-m A keeps the m largest b_i/sqrt(lam_i); the matching
M = sum_i (b_i/lam_i) e_i e_i^T is PSD (b_i >= 0 for both targets since lam_i >= beta^2), hence optimal also
over M = W^T W. **The rank-m minimiser is**

    M*_m = sum_{i <= m} mu_i e_i e_i^T,  mu_i = 1/beta^2 + k beta/lam_i,  L* = E||y||^2 - sum_{i <= m} b_i^2/lam_i,

(W rows sqrt(mu_i) e_i up to an m x m rotation), the m directions of largest gain b_i^2/lam_i. The gain
(lam/beta^2 + k beta)^2/lam increases with lam for lam > beta^3 ("paper"; true for lam >= beta^2 when
beta < 1, every variance-preserving schedule) and for lam > beta^2 ("score"), so **the rank-m optimum is
the top-m principal subspace of E[x_t x_t^T]** (``gain_increases_with_eigenvalue``). Its spectrum: on the
feature plane span((u, 0), (0, v)) S = beta^2 I + alpha^2 C, C = E[c c^T], c = (zeta, 1 - zeta), eigenvalues
lam_+- = beta^2 + alpha^2 nu_+-; beta^2 on the other 2d - 2 rule directions (score: b = 0, no gain); and
alpha^2 + beta^2 on every N(0, I) patch direction. Since nu_+ <= tr C <= 1 for zeta in [0, 1], with P >= 3
the first (P - 2) d directions are noise-patch directions: a linear joint net of width m <= (P - 2) d spends
all its rank there and its psi_t is 0. With P = 2 the order is e_+, e_-, then the orthogonal directions.

**E for m = 1 (P = 2)** (``rank_one_rule_error``): w = sqrt(mu_+) e_+, e_+ = (e1 u, e2 v) the top eigenvector
of C, psi = mu_+ (e1 + e2) <e_+, x_t>, so

    E = (alpha mu_+ (e1 + e2)(e1 E zeta + e2 E(1 - zeta)) - alpha/beta^2)^2
        + mu_+^2 (e1 + e2)^2 (alpha^2 (e1 - e2)^2 Var zeta + beta^2).

For E zeta = 1/2 (zeta symmetric about 1/2, as Uniform(0.2, 0.8)) C11 = C22, e_+ = (u + v)/sqrt(2): the
neuron reads <x^(1), u> + <x^(2), v>, the rule's own coordinate, nu_+ = 1/2, and with lam = beta^2 + alpha^2/2

    E = 2 alpha^2 / (beta^2 (2 beta^2 + alpha^2))  ("score"),   E = alpha^2 beta^2/lam^2 + 2 beta^2 mu_+^2 ("paper").

**Does m = 2 reach a coupled score?** (``rank_two_rule_error``) Yes and no. For P = 2 the rank-2 optimum is
the full linear regression on the feature plane, M_2 = I/beta^2 + k beta S_2^(-1): the best linear
(Gaussian-approximation) score. It couples the patches: (M_2)_uv = -k beta alpha^2 C_12/det S_2 != 0 since
C_12 = E[zeta (1 - zeta)] > 0, so g^(2) reads <x^(1), u> (no per-patch net can). But it is still linear,
psi_t = h . (<x^(1), u>, <x^(2), v>) with h = M_2 1, so E = (alpha h . E c - alpha/beta^2)^2 +
alpha^2 Var(zeta) (h_1 - h_2)^2 + beta^2 |h|^2 > 0: the rule (psi_t = alpha/beta^2 for every x_t) needs a
constant, which a bias-free linear net cannot make. For E zeta = 1/2 the vector 1 is an eigenvector of M_2,
h = mu_+ (1, 1), and **E(m = 2) = E(m = 1) exactly** (``symmetric_zeta_rank_two_equals_rank_one``): the second
direction (u - v)/sqrt(2) does not enter psi_t. Every further direction (printed loss; the score loss gains
nothing there) is orthogonal to u and v and leaves psi_t alone, so E(m) = E(2) for every m >= 2 (P = 2).

Numbers (Uniform(0.2, 0.8); t = 0.1 / 0.4 / 0.8; ``tests/derivations/test_joint_derivation.py`` pins t = 0.4):
E of the linear joint optimum (any m >= 1) is 7.647 / 1.052 / 0.2814 for the score loss (per-patch linear GD
limit of Thm 4.5: 8.299 / 1.107 / 0.2874; separable level: 0.1575 / 0.002074 / 0.0001422) and 14.53 / 8.881 /
8.256 for the printed loss (per patch: 16.45 / 9.886 / 8.652). Coupling lowers E by 2-12 % for linear nets;
it stays hundreds of times above the separable level at t >= 0.4. For a skewed ScaledBeta(2, 3, 0.2, 0.8)
and the printed loss E(2) > E(1) (8.889 against 8.718 at t = 0.4): more rank, lower loss, larger E.

None of this is in the paper, whose network (eq. (1)) is per patch; ``derivations/ERRATA.md`` ("Beyond the
paper: joint nets") lists the results with their tests.
"""

from __future__ import annotations

from functools import cache

import sympy as sp

from ._expectation import expect, gaussian_moment, zeta_moment
from .linear_stationary import alpha, beta

TARGETS = ("paper", "score")
zeta = sp.Symbol("zeta", real=True)
m1, m2 = zeta_moment(1), zeta_moment(2)


def _k_beta(target: str) -> sp.Expr:
    """The weight of I in B = E[x_t y^T] = S/beta^2 + k beta I: beta ("paper") or -1 ("score")."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    return beta if target == "paper" else sp.Integer(-1)


def coordinates(P: int, d: int):
    """(x_0, eps, x_t, gaussian symbols) in explicit coordinates: patch 1 = zeta e_1, patch 2 = (1 - zeta) e_2,
    patches p >= 3 N(0, I); vectors of length P d, patch-major."""
    if P < 2 or d < 2:
        raise ValueError(f"need P >= 2 and d >= 2, got P={P}, d={d}")
    eps = sp.Matrix([sp.Symbol(f"e{p}_{i}", real=True) for p in range(P) for i in range(d)])
    noise = [sp.Symbol(f"n{p}_{i}", real=True) for p in range(2, P) for i in range(d)]
    x0 = sp.zeros(P * d, 1)
    x0[0], x0[d + 1] = zeta, 1 - zeta
    for j, s in enumerate(noise):
        x0[2 * d + j] = s
    return x0, eps, alpha * x0 + beta * eps, list(eps) + noise


def residual_target(x0, eps, x, target: str):
    """y with s = -x/beta^2 + g: x/beta^2 + eps ("paper"), alpha x_0/beta^2 ("score") (``theory.losses``)."""
    _k_beta(target)
    return x / beta**2 + eps if target == "paper" else alpha * x0 / beta**2


def _expect_poly(poly: sp.Poly, n_gauss: int) -> sp.Expr:
    """``_expectation.expect``'s rules on a ``sympy.Poly`` in (gaussians, zeta, alpha, beta, 1/beta): Gaussian
    moments for the first ``n_gauss`` generators, m_k for zeta; the rest stay symbols."""
    inv_beta = 1 / beta
    out = sp.Integer(0)
    for monom, coeff in poly.terms():
        term = coeff
        for k in monom[:n_gauss]:
            term *= gaussian_moment(k)
        if term:
            kz, ka, kb, ki = monom[n_gauss:]
            out += term * zeta_moment(kz) * alpha**ka * beta**kb * inv_beta**ki
    return sp.expand(out)


@cache
def explicit_loss(weights: tuple, poly: tuple, target: str, P: int, d: int):
    """(loss, E[psi_t], E[psi_t^2]) of the joint net with weights ``weights`` (m rows of P d rationals) and
    sigma(z) = sum_j poly[j] z^j, as polynomials in alpha, 1/beta, beta and zeta moments m_k.

    The expansion runs in sympy's sparse polynomial arithmetic (1/beta as its own generator); the expectation
    applies the rules of ``_expectation.expect`` term by term."""
    W = sp.Matrix([[sp.Rational(w) for w in row] for row in weights])
    if W.shape[1] != P * d:
        raise ValueError(f"weights must have P d = {P * d} columns, got {W.shape[1]}")
    x0, eps, x, gauss = coordinates(P, d)
    inv_beta = sp.Symbol("inv_beta", positive=True)
    gens = [*gauss, zeta, alpha, beta, inv_beta]
    def as_poly(e) -> sp.Poly:
        e = sp.expand(e).replace(lambda t: t.is_Pow and t.base == beta and t.exp.is_negative,
                                 lambda t: inv_beta ** (-t.exp))
        return sp.Poly(e, *gens, domain="QQ")

    xs = [as_poly(e) for e in x]
    z = [sum((W[r, i] * xs[i] for i in range(P * d)), as_poly(0)) for r in range(W.rows)]
    sig = [sum((sp.Rational(c) * zr**j for j, c in enumerate(poly) if c), as_poly(0)) for zr in z]
    g = [sum((W[r, i] * sig[r] for r in range(W.rows)), as_poly(0)) for i in range(P * d)]
    y = [as_poly(e) for e in residual_target(x0, eps, x, target)]
    loss = sum(((gi - yi) ** 2 for gi, yi in zip(g, y)), as_poly(0))
    psi = g[0] + g[d + 1]  # <g^(1), u> + <g^(2), v>, u = e_1, v = e_2
    n = len(gauss)
    return _expect_poly(loss, n), _expect_poly(psi, n), _expect_poly(psi**2, n)


# ---- the linear joint net -----------------------------------------------------------------------------
def feature_second_moment() -> sp.Matrix:
    """C = E[c c^T], c = (zeta, 1 - zeta), in zeta moments."""
    c12 = m1 - m2
    return sp.Matrix([[m2, c12], [c12, 1 - 2 * m1 + m2]])


def second_moments(P: int, target: str):
    """(S, B) = (E[x_t x_t^T], E[x_t y^T]) in the coordinates of ``coordinates`` with d = 2, closed form."""
    d, kb = 2, _k_beta(target)
    S = sp.zeros(P * d, P * d)
    for i in range(P * d):
        S[i, i] = beta**2 if i < 2 * d else alpha**2 + beta**2
    C = feature_second_moment()
    for a, i in enumerate((0, d + 1)):
        for b, j in enumerate((0, d + 1)):
            S[i, j] += alpha**2 * C[a, b]
    return S, S / beta**2 + kb * sp.eye(P * d)


@cache
def linear_loss_identity(P: int, target: str) -> sp.Expr:
    """E||M x_t - y||^2 - [tr(M S M) - 2 tr(M B) + E||y||^2] for a symbolic symmetric M, d = 2 (must be 0)."""
    d = 2
    n = P * d
    M = sp.Matrix(n, n, lambda i, j: sp.Symbol(f"M{min(i, j)}{max(i, j)}", real=True))
    x0, eps, x, gauss = coordinates(P, d)
    y = residual_target(x0, eps, x, target)
    r = M * x - y
    lhs = expect(sp.expand((r.T * r)[0, 0]), gauss, zeta)
    S, B = second_moments(P, target)
    const = expect(sp.expand((y.T * y)[0, 0]), gauss, zeta)
    return sp.expand(lhs - ((M * S * M).trace() - 2 * (M * B).trace() + const))


def gain(lam, target: str) -> sp.Expr:
    """b^2/lam, b = lam/beta^2 + k beta: the loss decrease of one eigen-direction with eigenvalue lam."""
    return (lam / beta**2 + _k_beta(target)) ** 2 / lam


def gain_increases_with_eigenvalue(target: str) -> sp.Expr:
    """d gain / d lam, factored: (lam - beta^3)(lam + beta^3)/(beta^4 lam^2) ("paper"),
    (lam - beta^2)(lam + beta^2)/(beta^4 lam^2) ("score")."""
    lam = sp.Symbol("lambda", positive=True)
    return sp.factor(sp.diff(gain(lam, target), lam))


def top_eigenpair():
    """(nu_+, unnormalised eigenvector (C12, nu_+ - C11)) of C = E[c c^T]."""
    C = feature_second_moment()
    nu = (C[0, 0] + C[1, 1]) / 2 + sp.sqrt(((C[0, 0] - C[1, 1]) / 2) ** 2 + C[0, 1] ** 2)
    return nu, sp.Matrix([C[0, 1], nu - C[0, 0]])


def rank_one_rule_error(target: str, e=None, nu=None):
    """(E, bias, variance) of Def 4.3 at the rank-1 optimum (P = 2): w = sqrt(mu_+) e_+ on the feature plane.
    ``e`` (unit 2-vector) and ``nu`` default to C's top eigenpair."""
    if e is None:
        nu, v = top_eigenpair()
        e = v / sp.sqrt(v.dot(v))
    lam = beta**2 + alpha**2 * nu
    mu = 1 / beta**2 + _k_beta(target) / lam
    s = e[0] + e[1]
    bias = alpha * mu * s * (e[0] * m1 + e[1] * (1 - m1)) - alpha / beta**2
    var = mu**2 * s**2 * (alpha**2 * (e[0] - e[1]) ** 2 * (m2 - m1**2) + beta**2)
    return bias**2 + var, bias, var


def rank_two_optimum(target: str) -> sp.Matrix:
    """M_2 on the feature plane (P = 2): I/beta^2 + k beta S_2^(-1), S_2 = beta^2 I + alpha^2 C."""
    S2 = beta**2 * sp.eye(2) + alpha**2 * feature_second_moment()
    return sp.eye(2) / beta**2 + _k_beta(target) * S2.inv()


def rank_two_rule_error(target: str):
    """(E, bias, variance) of Def 4.3 at the rank-2 optimum (P = 2): psi = h . (<x^(1), u>, <x^(2), v>),
    h = M_2 (1, 1)."""
    h = rank_two_optimum(target) * sp.Matrix([1, 1])
    bias = alpha * (h[0] * m1 + h[1] * (1 - m1)) - alpha / beta**2
    var = alpha**2 * (m2 - m1**2) * (h[0] - h[1]) ** 2 + beta**2 * (h[0] ** 2 + h[1] ** 2)
    return bias**2 + var, bias, var


def symmetric_zeta_rank_two_equals_rank_one(target: str) -> sp.Expr:
    """E(m = 2) - E(m = 1) at E zeta = 1/2 (simplified; 0)."""
    sym = {m1: sp.Rational(1, 2)}
    e = sp.Matrix([1, 1]) / sp.sqrt(2)
    E1 = rank_one_rule_error(target, e=e, nu=sp.Rational(1, 2))[0]
    return sp.simplify((rank_two_rule_error(target)[0] - E1).subs(sym))


def symmetric_rank_one_closed_form(target: str) -> sp.Expr:
    """E at the rank-1 optimum for E zeta = 1/2, in closed form (module docstring)."""
    lam = beta**2 + alpha**2 / 2
    if _k_beta(target) == -1:
        return 2 * alpha**2 / (beta**2 * (2 * beta**2 + alpha**2))
    mu = 1 / beta**2 + beta / lam
    return alpha**2 * beta**2 / lam**2 + 2 * beta**2 * mu**2
