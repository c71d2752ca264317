"""Isserlis' theorem for polynomial activations: Gaussian expectations of sigma(z) and sigma(z_r) sigma(z_s).

For sigma(z) = sum_j s_j z^j and z = mu + x, x centred Gaussian, the expectations are polynomials in the
means, variances and the covariance; these functions return their coefficients as sparse tables
({exponents: coefficient}), from which ``theory.population.polynomial`` builds the loss (eq. (2)).
"""

from __future__ import annotations

import math
from collections import defaultdict


def double_factorial(n: int) -> int:
    return 1 if n <= 0 else n * double_factorial(n - 2)


def degree(poly) -> int:
    """The largest power with a non-zero coefficient."""
    return max((j for j, s in enumerate(poly) if s != 0), default=0)


def univariate_terms(poly) -> dict[tuple[int, int], float]:
    """E[poly(mu + x)], x ~ N(0, v): {(p, q): coef} meaning sum coef mu^p v^q."""
    terms: dict[tuple[int, int], float] = defaultdict(float)
    for j, s in enumerate(poly):
        if s != 0:
            for a in range(0, j + 1, 2):
                terms[(j - a, a // 2)] += s * math.comb(j, a) * double_factorial(a - 1)
    return dict(terms)


def pair_terms(poly) -> dict[tuple[int, int, int, int, int], float]:
    """E[poly(mu_r + x_r) poly(mu_s + x_s)], x centred Gaussian with variances v_r, v_s and covariance C:
    {(i, p_r, q_r, p_s, q_s): coef} meaning sum coef mu_r^p_r v_r^q_r mu_s^p_s v_s^q_s C^i."""
    terms: dict[tuple[int, int, int, int, int], float] = defaultdict(float)
    for j, sj in enumerate(poly):
        for k, sk in enumerate(poly):
            if sj == 0 or sk == 0:
                continue
            for a in range(j + 1):
                for b in range(k + 1):
                    for i in range(min(a, b) % 2, min(a, b) + 1, 2) if (a - b) % 2 == 0 else ():
                        # E[x_r^a x_s^b]: i pairs across the two variables, the rest paired within each
                        central = (math.comb(a, i) * math.comb(b, i) * math.factorial(i)
                                   * double_factorial(a - i - 1) * double_factorial(b - i - 1))
                        terms[(i, j - a, (a - i) // 2, k - b, (b - i) // 2)] += (
                            sj * sk * math.comb(j, a) * math.comb(k, b) * central)
    return dict(terms)


def derivative(poly) -> tuple[float, ...]:
    """Coefficients of sigma' from those of sigma."""
    return tuple(j * s for j, s in enumerate(poly))[1:] or (0.0,)
