"""Thm 4.5 / App. E re-derived with sympy: linear activation, m = 1, for both loss targets.

One patch with feature f (u for patch 1, v for patch 2) and coefficient c (zeta, resp. 1 - zeta):
x_t = alpha c f + beta eps, network residual g(x) = <w, x> w (eq. (1) with sigma(z) = z, m = 1).
With s = -x/beta^2 + g, the two losses regress g on

    y = alpha c f / beta^2 + kappa eps,  kappa = 1 + 1/beta  (target "paper": eq. (2) as printed, s ~ eps)
                                         kappa = 0           (target "score": s ~ -eps/beta, consistent DSM).

Coordinates: gradient descent keeps w in span(f, w^0) (the gradient lies in span(f, w), shown
below), so w = gamma f + rho e with e a unit vector orthogonal to f; the noise has coordinates
eps_f, eps_e and a (d-2)-dimensional rest whose squared norm R has mean d - 2. Every expectation
is computed by ``derivations._expectation.expect`` from Gaussian and zeta moments only.

Results (``A = alpha^2 E[c^2]``, ``B = beta kappa`` = 1 + beta (paper) or 0 (score), G = gamma^2,
N = ||w||^2):
    L(w) = A G N + beta^2 N^2 - 2 A G / beta^2 - 2 B N + const,
    grad L = [2 A gamma N - 4 A gamma / beta^2] f + [2 A G + 4 beta^2 N - 4 B] w,
    dL/dgamma = gamma P, dL/drho = rho Q with P, Q *linear* in (G, N); hence all stationary points
    come from four linear systems (``stationary_families``).
The paper's App. E drops a factor 2 from the gradient of -2 I3 (see ``derivations/ERRATA.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, lru_cache

import numpy as np
import sympy as sp

from . import paper_app_e as paper
from ._expectation import expect, zeta_moment

TARGETS = ("paper", "score")

alpha, beta = paper.alpha, paper.beta
d = paper.d
eta = paper.eta
gamma, rho = sp.symbols("gamma rho", real=True)
G, N = sp.symbols("G N", nonnegative=True)
c = paper.c
c1, c2 = sp.Symbol("c_1", positive=True), paper.c2  # E[c], E[c^2] of the patch coefficient
eps_f, eps_e = sp.symbols("eps_f eps_e", real=True)
R = sp.Symbol("R", nonnegative=True)  # ||eps_rest||^2, mean d - 2
A_, B_ = sp.symbols("A B", positive=True)  # shorthand used in the (G, N) forms
m1, m2 = zeta_moment(1), zeta_moment(2)


def _check_target(target: str) -> str:
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    return target


def kappa(target: str) -> sp.Expr:
    """Weight of eps in the regression target of the residual g."""
    return 1 + 1 / beta if _check_target(target) == "paper" else sp.Integer(0)


def _patch_vectors(target: str):
    """(z = <w, x>, g components, y components) in the basis (f, e); the rest block is handled by R."""
    k = kappa(target)
    z = gamma * (alpha * c + beta * eps_f) + rho * beta * eps_e
    g = (z * gamma, z * rho)
    y = (alpha * c / beta**2 + k * eps_f, k * eps_e)
    return z, g, y, k


def _E(expr):
    """Expectation over eps_f, eps_e, R (mean d - 2) and the coefficient c (moments c_1, c_2, ...)."""
    out = expect(expr, [eps_f, eps_e], c, {R: d - 2})
    return out.subs({zeta_moment(1): c1, zeta_moment(2): c2})


def _E_given_c(expr):
    """Expectation over the noise only (the paper's I1-I3 are conditional on x_0 = c f)."""
    return expect(expr, [eps_f, eps_e], None, {R: d - 2})


def to_GN(expr) -> sp.Expr:
    """Rewrite a polynomial in (gamma, rho) that is even in each as a polynomial in (G, N)."""
    poly = sp.Poly(sp.expand(expr), gamma, rho)
    out = sp.Integer(0)
    for (i, j), coeff in poly.terms():
        if i % 2 or j % 2:
            raise ValueError("expression is not even in gamma and rho")
        out += coeff * G ** (i // 2) * (N - G) ** (j // 2)
    return sp.expand(out)


@dataclass(frozen=True)
class LossDerivation:
    target: str
    I1_given_c: sp.Expr  # E_eps ||g||^2, the paper's I1 (given x_0 = c f)
    I2_given_c: sp.Expr  # E_eps ||y||^2
    I3_given_c: sp.Expr  # E_eps <g, y>
    sample_loss: sp.Expr  # E_eps ||g - y||^2 (given c)
    loss: sp.Expr  # E over c too: the per-patch population loss, in (gamma, rho)
    loss_GN: sp.Expr  # the same in (G, N)
    grad_f: sp.Expr  # grad_w L = grad_f * f + grad_w * w (functions of gamma, N)
    grad_w: sp.Expr
    P: sp.Expr  # dL/dgamma = gamma P
    Q: sp.Expr  # dL/drho = rho Q
    gd_factor_f: sp.Expr  # <w^{k+1}, f> = gd_factor_f * <w^k, f>
    gd_factor_perp: sp.Expr  # (orthogonal part)^{k+1} = gd_factor_perp * (orthogonal part)^k
    stationary_w: sp.Expr  # <grad L, w>
    stationary_f: sp.Expr  # <grad L, f>
    hessian: sp.Matrix  # 2x2 Hessian in (gamma, rho)
    hessian_transverse: sp.Expr  # curvature along directions orthogonal to f and w (= grad_w)


@cache
def derive_loss(target: str = "paper") -> LossDerivation:
    """I1, I2, I3, the per-patch population loss, gradient, GD updates, stationarity equations, Hessian."""
    _check_target(target)
    z, g, y, k = _patch_vectors(target)
    gy = g[0] * y[0] + g[1] * y[1]
    I1 = _E_given_c(g[0] ** 2 + g[1] ** 2)
    I2 = _E_given_c(y[0] ** 2 + y[1] ** 2 + k**2 * R)
    I3 = _E_given_c(gy)
    sample = _E_given_c((g[0] - y[0]) ** 2 + (g[1] - y[1]) ** 2 + k**2 * R)
    loss = _E((g[0] - y[0]) ** 2 + (g[1] - y[1]) ** 2 + k**2 * R)
    loss_GN = to_GN(loss)
    # L as a function of (gamma, N) with G = gamma^2: grad_w L = L_gamma f + 2 L_N w.
    L_gN = loss_GN.subs(G, gamma**2)
    grad_f = sp.expand(sp.diff(L_gN, gamma))
    grad_w = sp.expand(2 * sp.diff(L_gN, N))
    dgamma, drho = sp.diff(loss, gamma), sp.diff(loss, rho)
    P = to_GN(sp.cancel(dgamma / gamma))
    Q = to_GN(sp.cancel(drho / rho))
    # GD: gamma' = gamma - eta (grad_f + grad_w gamma); orthogonal part scales by 1 - eta grad_w.
    factor_f = sp.expand(1 - eta * sp.cancel((grad_f + grad_w * gamma) / gamma))
    factor_perp = sp.expand(1 - eta * grad_w)
    stat_w = sp.expand(grad_f * gamma + grad_w * N)
    stat_f = sp.expand(grad_f + grad_w * gamma)
    H = sp.hessian(loss, (gamma, rho)).applyfunc(sp.expand)
    return LossDerivation(target, sp.expand(I1), sp.expand(I2), sp.expand(I3), sp.expand(sample),
                          sp.expand(loss), loss_GN, grad_f, grad_w, P, Q, factor_f, factor_perp, stat_w,
                          stat_f, H, sp.expand(grad_w.subs(gamma**2, G)))


@dataclass(frozen=True)
class StationaryFamily:
    """A family of stationary points in (G, N) = (<w, f>^2, ||w||^2), with the conditions for it to exist."""

    kind: str  # origin | orthogonal | mixed | aligned
    G: sp.Expr
    N: sp.Expr
    exists_if: tuple  # sympy expressions that must be > 0 (empty: always exists)
    hessian_in_plane: tuple  # eigenvalues of the 2x2 Hessian in (gamma, rho) at the point
    hessian_transverse: sp.Expr
    loss_offset: sp.Expr  # L(point) - L(0)


@cache
def stationary_families(target: str = "paper") -> tuple[StationaryFamily, ...]:
    """All real stationary points of the per-patch loss, from dL/dgamma = gamma P, dL/drho = rho Q.

    Cases: (gamma = 0, rho = 0), (gamma = 0, Q = 0), (P = 0, rho = 0), (P = 0, Q = 0); P and Q are
    linear in (G, N), so each case is a linear solve; a case exists when its G >= 0 and N - G >= 0
    with the factor it assumes non-zero (G > 0 when P = 0 is used, N - G > 0 when Q = 0 is used).
    """
    der = derive_loss(target)
    # Solve with assumption-free symbols: a solution outside G >= 0, N >= G is kept and then
    # judged by ``exists_if`` (sympy would otherwise drop it silently).
    Gf, Nf = sp.symbols("G_free N_free")
    P, Q = der.P.subs({G: Gf, N: Nf}), der.Q.subs({G: Gf, N: Nf})
    cases = [("origin", sp.Integer(0), sp.Integer(0), ())]
    for s in sp.solve([Q.subs(Gf, 0)], [Nf], dict=True):  # gamma = 0, rho != 0
        cases.append(("orthogonal", sp.Integer(0), sp.simplify(s[Nf]), (sp.simplify(s[Nf]),)))
    for s in sp.solve([P.subs(Nf, Gf)], [Gf], dict=True):  # rho = 0, gamma != 0
        cases.append(("aligned", sp.simplify(s[Gf]), sp.simplify(s[Gf]), (sp.simplify(s[Gf]),)))
    for s in sp.solve([P, Q], [Gf, Nf], dict=True):  # gamma != 0, rho != 0
        g_, n_ = sp.simplify(s[Gf]), sp.simplify(s[Nf])
        cases.append(("mixed", g_, n_, (g_, sp.simplify(n_ - g_))))
    L0 = der.loss.subs({gamma: 0, rho: 0})
    out = []
    for kind, g_, n_, cond in cases:
        pt = {gamma: sp.sqrt(g_), rho: sp.sqrt(n_ - g_)}
        H = der.hessian.subs(pt).applyfunc(sp.simplify)
        eig = tuple(sp.simplify(e) for e in _sym_eigs(H))
        trans = sp.simplify(der.hessian_transverse.subs({G: g_, N: n_}))
        off = sp.simplify(der.loss.subs(pt) - L0)
        out.append(StationaryFamily(kind, g_, n_, cond, eig, trans, off))
    return tuple(out)


def _sym_eigs(H: sp.Matrix):
    """Eigenvalues of a symmetric 2x2 matrix: the diagonal (gamma, rho order) when it is diagonal,
    else (smaller, larger)."""
    if sp.simplify(H[0, 1]) == 0:
        return (H[0, 0], H[1, 1])
    disc = sp.sqrt(sp.expand((H[0, 0] - H[1, 1]) ** 2 + 4 * H[0, 1] ** 2))
    return ((H[0, 0] + H[1, 1] - disc) / 2, (H[0, 0] + H[1, 1] + disc) / 2)


def patch_moments(patch: int):
    """Substitution {c_1, c_2} -> zeta moments for patch 0 (c = zeta) or patch 1 (c = 1 - zeta)."""
    if patch == 0:
        return {c1: m1, c2: m2}
    if patch == 1:
        return {c1: 1 - m1, c2: 1 - 2 * m1 + m2}
    raise ValueError(f"patch must be 0 or 1, got {patch}")


# ---- psi_t (Def 4.3) for two patches sharing zeta, independent noise --------------------------------
g1, r1, g2, r2 = sp.symbols("gamma1 rho1 gamma2 rho2", real=True)
G1, G2, N1, N2 = paper.G1, paper.G2, paper.N1, paper.N2
_zeta = sp.Symbol("zeta", positive=True)
_e = sp.symbols("e1f e1e e2f e2e", real=True)


@dataclass(frozen=True)
class PsiDerivation:
    mean: sp.Expr  # E[psi_t] in (G1, G2, N1, N2) and zeta moments
    second_moment: sp.Expr
    variance: sp.Expr
    bias: sp.Expr  # E[psi_t] - alpha / beta^2 (signed; the paper's E_bias is |bias|)
    cond_var_sum: sp.Expr  # E_zeta[Var(psi^(1) | zeta) + Var(psi^(2) | zeta)] (Thm 4.4's first bound)


@lru_cache(maxsize=1)
def derive_psi() -> PsiDerivation:
    """psi_t = gamma1 <w1, x1> + gamma2 <w2, x2> for any w_p = gamma_p f_p + rho_p e_p."""
    e1f, e1e, e2f, e2e = _e
    z1 = g1 * (alpha * _zeta + beta * e1f) + r1 * beta * e1e
    z2 = g2 * (alpha * (1 - _zeta) + beta * e2f) + r2 * beta * e2e
    psi = g1 * z1 + g2 * z2

    def gn(expr):
        poly = sp.Poly(sp.expand(expr), g1, r1, g2, r2)
        out = sp.Integer(0)
        for (a, b, c_, d_), coeff in poly.terms():
            if a % 2 or b % 2 or c_ % 2 or d_ % 2:
                raise ValueError("not even in the weights")
            out += coeff * G1 ** (a // 2) * (N1 - G1) ** (b // 2) * G2 ** (c_ // 2) * (N2 - G2) ** (d_ // 2)
        return sp.expand(out)

    mean = gn(expect(psi, _e, _zeta))
    second = gn(expect(psi**2, _e, _zeta))
    var = sp.expand(second - mean**2)
    # conditional on zeta: Var(psi^(p) | zeta) = E[(psi^(p) - E[psi^(p) | zeta])^2 | zeta]
    p1, p2 = g1 * z1, g2 * z2
    cv = sp.Integer(0)
    for p_, es in ((p1, _e[:2]), (p2, _e[2:])):
        m_given = expect(p_, es)  # still a function of zeta
        cv += expect(expect((p_ - m_given) ** 2, es), [], _zeta)
    return PsiDerivation(mean, second, var, sp.expand(mean - alpha / beta**2), gn(cv))


@dataclass(frozen=True)
class GDPointErrors:
    target: str
    proj_sq: tuple  # (G1, G2) at the aligned minimum (= norm_sq there)
    bias: sp.Expr
    variance: sp.Expr
    total: sp.Expr


@cache
def gd_point_errors(target: str = "paper") -> GDPointErrors:
    """E_bias (signed), E_variance and E at the aligned minimum of both patches (GD limit, beta < 1)."""
    aligned = [f_ for f_ in stationary_families(target) if f_.kind == "aligned"]
    if len(aligned) != 1:
        raise RuntimeError("expected exactly one aligned family")
    Gs = tuple(sp.simplify(aligned[0].G.subs(patch_moments(p))) for p in (0, 1))
    psi = derive_psi()
    sub = {G1: Gs[0], N1: Gs[0], G2: Gs[1], N2: Gs[1]}
    bias = sp.simplify(psi.bias.subs(sub))
    var = sp.simplify(psi.variance.subs(sub))
    return GDPointErrors(target, Gs, bias, var, sp.simplify(bias**2 + var))


def paper_variance_line3() -> sp.Expr:
    """App. E's third variance line, alpha^2 Var(zeta G1 - (1 - zeta) G2) + beta^2 (N1 G1 + N2 G2),
    with the variance of the linear function of zeta evaluated from moments."""
    lin = _zeta * G1 - (1 - _zeta) * G2
    var_lin = expect(lin**2, [], _zeta) - expect(lin, [], _zeta) ** 2
    return sp.expand(alpha**2 * var_lin + beta**2 * (N1 * G1 + N2 * G2))


# ---- numbers: lambdified forms and the reduced gradient descent ------------------------------------
@cache
def lambdified(target: str = "paper", module: str = "numpy") -> dict:
    """numpy (or mpmath) functions of the derived closed forms.

    ``families[kind]`` -> list of f(alpha, beta, c2) giving [G, N, two in-plane Hessian eigenvalues,
    transverse curvature, L(point) - L(0), *existence conditions (all must be > 0)] for one patch with
    E[c^2] = c2; ``bias``/``variance``/``total`` -> f(alpha, beta, m1, m2) at the GD limit;
    ``grad`` -> f(alpha, beta, c2, gamma, rho) giving [dL/dgamma, dL/drho].
    """
    _check_target(target)
    args = (alpha, beta, c2)
    fams = {}
    for fam in stationary_families(target):
        exprs = [fam.G, fam.N, *fam.hessian_in_plane, fam.hessian_transverse, fam.loss_offset, *fam.exists_if]
        fams.setdefault(fam.kind, []).append(sp.lambdify(args, exprs, modules=module))
    errs = gd_point_errors(target)
    der = derive_loss(target)
    margs = (alpha, beta, m1, m2)
    return {
        "families": fams,
        "bias": sp.lambdify(margs, errs.bias, modules=module),
        "variance": sp.lambdify(margs, errs.variance, modules=module),
        "total": sp.lambdify(margs, errs.total, modules=module),
        "grad": sp.lambdify((alpha, beta, c2, gamma, rho),
                            [sp.diff(der.loss, gamma), sp.diff(der.loss, rho)], modules=module),
    }


def gd_path(alpha_val: float, beta_val: float, c2_val: float, gamma0, rho0, lr: float, steps: int,
            target: str = "paper", record_every: int = 1):
    """Gradient descent on the per-patch population loss in the exact reduced coordinates (gamma, rho).

    GD on w in R^d started at w^0 stays in span(f, w^0), where w = gamma f + rho e with
    e = (w^0 - <w^0, f> f)/||...||; ``gamma0``, ``rho0`` may be arrays (independent runs in lock step).
    Returns (steps recorded, gamma history, rho history), histories of shape (records, *shape of gamma0).
    """
    for name, value in (("alpha_val", alpha_val), ("beta_val", beta_val), ("c2_val", c2_val), ("lr", lr)):
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    if int(steps) != steps or steps < 1 or int(record_every) != record_every or record_every < 1:
        raise ValueError(f"steps and record_every must be integers >= 1, got {steps!r}, {record_every!r}")
    grad = lambdified(_check_target(target))["grad"]
    gam = np.array(gamma0, dtype=np.float64)
    rh = np.array(rho0, dtype=np.float64)
    hist_g, hist_r, ks = [gam.copy()], [rh.copy()], [0]
    for k in range(1, steps + 1):
        dg, dr = grad(alpha_val, beta_val, c2_val, gam, rh)
        gam = gam - lr * np.asarray(dg)
        rh = rh - lr * np.asarray(dr)
        if k % record_every == 0 or k == steps:
            hist_g.append(gam.copy())
            hist_r.append(rh.copy())
            ks.append(k)
    return np.array(ks), np.array(hist_g), np.array(hist_r)
