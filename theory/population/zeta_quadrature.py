"""Quadratures in the patch coefficient c = zeta (patch 1) or 1 - zeta (patch 2) and exact zeta moments.

The ReLU pair terms are averaged over c by Gauss rules per panel (Gauss-Legendre for a uniform zeta,
Gauss-Jacobi for a scaled Beta, the atoms of a discrete one), split at c = 0 when the support straddles
it; the polynomial activations need only the moments E[zeta^j (1 - zeta)^k] (``moment_table``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from ..zeta import Discrete, ScaledBeta, Uniform, ZetaDistribution

ZETA_ORDER = 32  # c-quadrature nodes per panel (ReLU)


@dataclass(frozen=True)
class CoefficientQuadrature:
    """Nodes/weights of one patch coefficient c (zeta or 1 - zeta)."""

    nodes: np.ndarray
    weights: np.ndarray
    uniform: tuple[float, float] | None  # c ~ U[l, u]: Gaussian averages in closed form
    abs_min: float  # min |c| on the support (0 if it straddles 0)
    abs_max: float


def gauss_legendre(n: int, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.legendre.leggauss(n)
    return lo + (hi - lo) * (x + 1) / 2, w * (hi - lo) / 2


def beta_split_quadrature(a: float, b: float, y_split: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Jacobi panels on [0, y_s] and [y_s, 1] for Beta(a, b): exact endpoint weights, smooth split."""
    log_b = special.betaln(a, b)
    x, w = special.roots_jacobi(n, 0.0, a - 1.0)  # weight (1 + x)^(a - 1) on the left panel
    y_left = y_split * (x + 1) / 2
    w_left = w * np.exp(a * np.log(y_split / 2) + (b - 1) * np.log1p(-y_left) - log_b)
    x, w = special.roots_jacobi(n, b - 1.0, 0.0)  # weight (1 - x)^(b - 1) on the right panel
    y_right = y_split + (1 - y_split) * (x + 1) / 2
    w_right = w * np.exp(b * np.log((1 - y_split) / 2) + (a - 1) * np.log(y_right) - log_b)
    return np.concatenate([y_left, y_right]), np.concatenate([w_left, w_right])


def coefficient_quadrature(zeta: ZetaDistribution, patch: int, n: int) -> CoefficientQuadrature:
    """c = zeta (patch 0) or 1 - zeta (patch 1); split at c = 0 when the support straddles it (the
    rho = +-1 expansions of the ReLU pair terms have a kink in c there)."""
    flip = patch == 1
    lo, hi = (1 - zeta.hi, 1 - zeta.lo) if flip else (zeta.lo, zeta.hi)
    straddle = lo < 0 < hi
    uniform = None
    if isinstance(zeta, Discrete):
        z, w = zeta.values.copy(), zeta.probs.copy()
    elif isinstance(zeta, Uniform):
        uniform = (lo, hi)
        if straddle:
            z1, w1 = gauss_legendre(n, zeta.lo, 1.0)
            z2, w2 = gauss_legendre(n, 1.0, zeta.hi)
            z, w = np.concatenate([z1, z2]), np.concatenate([w1, w2])
        else:
            z, w = gauss_legendre(n, zeta.lo, zeta.hi)
        w = w / (zeta.hi - zeta.lo)
    elif isinstance(zeta, ScaledBeta) and straddle:
        y, w = beta_split_quadrature(zeta.a, zeta.b, (1.0 - zeta.lo) / (zeta.hi - zeta.lo), n)
        z = zeta.lo + (zeta.hi - zeta.lo) * y
    else:
        z, w = zeta.quadrature(n)
    z = np.asarray(z, dtype=np.float64)
    c = 1.0 - z if flip else z
    abs_min = 0.0 if straddle else min(abs(lo), abs(hi))
    return CoefficientQuadrature(c, np.asarray(w, np.float64), uniform, abs_min, max(abs(lo), abs(hi)))


def moment_table(zeta: ZetaDistribution, max_degree: int) -> np.ndarray:
    """M[j, k] = E[zeta^j (1 - zeta)^k] for j + k <= max_degree, by a quadrature exact at that degree."""
    z, w = zeta.quadrature(max_degree // 2 + 2)
    out = np.zeros((max_degree + 1, max_degree + 1))
    for j in range(max_degree + 1):
        for k in range(max_degree + 1 - j):
            out[j, k] = float(np.sum(w * z**j * (1 - z) ** k))
    return out

