"""Thm 4.2 derived with sympy from the mixture density, identity (*), and the optimum of eq. (2) as printed.

Setting (Def 4.1, two rule patches, each of dimension 2 so that the feature can point anywhere in
its plane): x^(1), x^(2) in R^2, u = (cos th, sin th), v = (cos ph, sin ph), and

    p_t(x) = E_zeta N(x; mu_t(zeta), beta^2 I_4),   mu_t(zeta) = [alpha zeta u; alpha (1 - zeta) v],

with E_zeta written as an integral against an *undefined* density f on [lo, hi], so nothing about
the distribution of zeta is assumed (a discrete zeta is the same computation with the integral
replaced by a sum, see ``instantiate``). sympy differentiates under the integral sign (Leibniz, the
limits do not depend on x), and the difference between that gradient and the paper's formula is a
linear combination of integrals over the same range whose combined integrand simplifies to 0.

``printed_loss_optimum`` answers: what does eq. (2) *as printed* (target eps) learn, and does it
satisfy psi_t = alpha_t / beta_t^2 (Def 4.3)? Its minimiser over all functions is
s*(x) = E[eps | x_t] = -beta_t grad log p_t(x_t); its psi_t is (1 + beta)(a + b)/beta^2 - alpha/beta
with a = <x^(1), u>, b = <x^(2), v>: mean alpha/beta^2 (no bias) but variance 2 (1 + beta)^2 / beta^2,
so even the perfect network of the printed loss violates the rule in Def 4.3's sense.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import mpmath
import numpy as np
import sympy as sp

from ._expectation import expect

alpha, beta = sp.symbols("alpha beta", positive=True)
z = sp.Symbol("z", real=True)  # integration variable (a value of zeta)
lo, hi = sp.symbols("lo hi", positive=True)
theta, phi = sp.symbols("theta phi", real=True)
f = sp.Function("f")  # density of zeta on [lo, hi], left undefined
x1 = sp.symbols("x11 x12", real=True)
x2 = sp.symbols("x21 x22", real=True)
X = (*x1, *x2)
U = (sp.cos(theta), sp.sin(theta))
V = (sp.cos(phi), sp.sin(phi))


def _mu(zz):
    """mu_t(zeta) = [alpha zeta u; alpha (1 - zeta) v] as a 4-tuple."""
    return tuple(alpha * zz * ui for ui in U) + tuple(alpha * (1 - zz) * vi for vi in V)


def _gauss(zz):
    """N(x; mu_t(zeta), beta^2 I_4)."""
    sq = sum((xi - mi) ** 2 for xi, mi in zip(X, _mu(zz)))
    return sp.exp(-sq / (2 * beta**2)) / (2 * sp.pi * beta**2) ** 2


def _E(h):
    """E_zeta[h(zeta) N(x; mu_t(zeta), beta^2 I)] as an integral against f."""
    return sp.Integral(f(z) * h * _gauss(z), (z, lo, hi))


def _integrand_of_linear_combination(expr) -> sp.Expr:
    """For sum_i c_i * Integral(g_i, (z, lo, hi)) with z-free c_i, return sum_i c_i g_i.

    The sum vanishes for every f if this combined integrand is identically 0. Raises if ``expr`` is
    not such a linear combination (so the reduction cannot be misapplied)."""
    total = sp.Integer(0)
    for term in sp.Add.make_args(sp.expand(expr)):
        ints = [a for a in sp.Mul.make_args(term) if isinstance(a, sp.Integral)]
        if len(ints) != 1:
            raise ValueError(f"not linear in the integrals: {term}")
        (integral,) = ints
        if tuple(integral.limits) != ((z, lo, hi),):
            raise ValueError(f"unexpected limits {integral.limits}")
        coeff = sp.Mul(*[a for a in sp.Mul.make_args(term) if a is not integral])
        if coeff.has(z):
            raise ValueError("coefficient depends on the integration variable")
        total += coeff * integral.function
    return total


@dataclass(frozen=True)
class ScoreDerivation:
    density: sp.Expr  # p_t(x) as an integral against f
    gradient: tuple  # d log p_t / d x_i, sympy's own differentiation of the integral
    thm42: tuple  # the paper's formula: -x/beta^2 + (alpha/beta^2)[E_pi[zeta] u; E_pi[1 - zeta] v]
    residual_integrands: tuple  # combined integrand of p * (gradient - thm42), one per coordinate
    posterior_zeta: sp.Expr  # E_pi[zeta]
    posterior_one_minus_zeta: sp.Expr  # E_pi[1 - zeta]
    identity_integrand: sp.Expr  # integrand of p * (E_pi[zeta] + E_pi[1 - zeta] - 1)


@lru_cache(maxsize=1)
def derive_score() -> ScoreDerivation:
    """Thm 4.2 and identity (*), each reduced to an integrand that must vanish identically."""
    p = _E(sp.Integer(1))
    grad = tuple(sp.diff(p, xi) / p for xi in X)
    ez = _E(z) / p
    e1mz = _E(1 - z) / p
    proj = (ez,) * 2 + (e1mz,) * 2
    feat = U + V
    thm = tuple(-xi / beta**2 + alpha / beta**2 * w * fi for xi, w, fi in zip(X, proj, feat))
    residuals = []
    for i, xi in enumerate(X):
        # p * (grad_i - thm_i) = dp/dx_i + x_i p / beta^2 - (alpha/beta^2) feat_i * E[zeta-ish N]
        coef = _E(z) if i < 2 else _E(1 - z)
        numer = sp.diff(p, xi) + xi / beta**2 * p - alpha / beta**2 * feat[i] * coef
        residuals.append(sp.simplify(_integrand_of_linear_combination(numer)))
    identity = sp.simplify(_integrand_of_linear_combination(_E(z) + _E(1 - z) - p))
    return ScoreDerivation(p, grad, thm, tuple(residuals), ez, e1mz, identity)


def instantiate(expr, zeta, values: dict) -> mpmath.mpf:
    """Evaluate an expression containing integrals against f for a concrete ``theory.zeta`` distribution.

    Numbers in ``values`` (x, angles, alpha, beta) are substituted first; each remaining integral is
    then a 1-D integral over z, computed with mpmath (tanh-sinh, 30 digits) against the density of
    ``Uniform`` / ``ScaledBeta``, or as the finite sum over the atoms of ``Discrete``. Independent of
    ``theory.zeta.gaussian_tilt``: used to check ``theory.score.true_score``.
    """
    from theory.zeta import Discrete, ScaledBeta, Uniform

    expr = expr.subs({k: sp.Float(v, 40) for k, v in values.items()})
    expr = expr.subs({lo: sp.Float(zeta.lo, 40), hi: sp.Float(zeta.hi, 40)})

    if isinstance(zeta, Discrete):
        def integrate(g):
            return sum(sp.Float(p, 40) * g.subs(f(z), 1).subs(z, sp.Float(v, 40))
                       for v, p in zip(zeta.values, zeta.probs))
    elif isinstance(zeta, Uniform | ScaledBeta):
        a, b = (1.0, 1.0) if isinstance(zeta, Uniform) else (zeta.a, zeta.b)
        width = zeta.hi - zeta.lo

        def density(zz):
            y = (zz - zeta.lo) / width
            return y ** (a - 1) * (1 - y) ** (b - 1) / (mpmath.beta(a, b) * width)

        def integrate(g):
            h = sp.lambdify(z, g.subs(f(z), 1), modules="mpmath")
            with mpmath.workdps(30):
                return sp.Float(mpmath.quad(lambda zz: density(zz) * h(zz),
                                            np.linspace(zeta.lo, zeta.hi, 9).tolist()), 30)
    else:
        raise ValueError(f"zeta must be Uniform, ScaledBeta or Discrete, got {type(zeta).__name__}")
    expr = expr.replace(lambda e: isinstance(e, sp.Integral), lambda e: integrate(e.function))
    return mpmath.mpf(sp.N(expr, 30))


@dataclass(frozen=True)
class PrintedLossOptimum:
    minimiser: tuple  # E[eps | x_t], one entry per coordinate of (x^(1), x^(2))
    minus_beta_score_residual: tuple  # integrands of p * (E[eps | x] + beta * Thm 4.2 score): all 0
    psi: sp.Expr  # psi_t(s*) of Def 4.3 after identity (*): (1 + beta)(a + b)/beta^2 - alpha/beta
    psi_residual_integrand: sp.Expr  # integrand of p * (psi from the definition - psi above): 0
    psi_mean: sp.Expr
    psi_variance: sp.Expr


@lru_cache(maxsize=1)
def printed_loss_optimum() -> PrintedLossOptimum:
    """The minimiser of eq. (2) as printed, E_{eps, x_0} ||s(x_t) - eps||^2, over all functions s.

    A squared loss is minimised by the conditional mean, s*(x) = E[eps | x_t = x]; given zeta,
    eps = (x - mu_t(zeta)) / beta, so E[eps | x] = E_zeta[N(x; mu_t) (x - mu_t)] / (beta p_t(x)).
    """
    der = derive_score()
    p = der.density
    mu = _mu(z)
    s_star = tuple(_E((xi - mi) / beta) / p for xi, mi in zip(X, mu))
    resid = []
    for i, xi in enumerate(X):
        feat = (U + V)[i]
        # p (s*_i + beta thm42_i) = E[N (x_i - mu_i)]/beta - beta p x_i/beta^2 + (alpha/beta) feat_i E[N c]
        coef = _E(z) if i < 2 else _E(1 - z)
        numer = _E((xi - mu[i]) / beta) - xi / beta * p + alpha / beta * feat * coef
        resid.append(sp.simplify(_integrand_of_linear_combination(numer)))
    a = sum(xi * ui for xi, ui in zip(x1, U))
    b = sum(xi * vi for xi, vi in zip(x2, V))
    # Def 4.3: psi = <s^(1) + x^(1)/beta^2, u> + <s^(2) + x^(2)/beta^2, v>
    psi_def = sum((s_star[i] + X[i] / beta**2) * U[i] for i in range(2)) + sum(
        (s_star[2 + i] + X[2 + i] / beta**2) * V[i] for i in range(2))
    psi_closed = (1 + beta) * (a + b) / beta**2 - alpha / beta
    psi_resid = sp.simplify(_integrand_of_linear_combination(sp.expand(p * psi_def) - psi_closed * p))
    # Distribution of a + b: a = alpha zeta + beta e1, b = alpha (1 - zeta) + beta e2 (e1, e2 ~ N(0, 1)).
    e1, e2, zeta = sp.symbols("e1 e2 zeta", real=True)
    psi_rv = (1 + beta) * (alpha + beta * (e1 + e2)) / beta**2 - alpha / beta
    mean = sp.simplify(expect(psi_rv, [e1, e2], zeta))
    var = sp.factor(sp.simplify(expect(psi_rv**2, [e1, e2], zeta) - mean**2))
    return PrintedLossOptimum(s_star, tuple(resid), psi_closed, psi_resid, mean, var)
