"""Exact expectations of polynomials in Gaussian noise coordinates and in zeta (shared by the derivations).

Every expectation in App. E is of a polynomial in (i) independent standard Gaussian coordinates of
the noise (E[eps^k] = (k-1)!! for even k, 0 for odd k), (ii) the rule coefficient zeta, whose k-th
moment is kept as the symbol ``m_k`` (``zeta_moment(k)``), and (iii) squared norms of the noise in
the directions that never meet the weights, which enter linearly with a known mean (d - 2 for a
(d-2)-dimensional block). ``expect`` applies exactly these rules to the expanded polynomial, so the
derivations never rely on a formula we are trying to check.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import sympy as sp


def gaussian_moment(k: int) -> int:
    """E[Z^k] for Z ~ N(0, 1): 0 for odd k, (k - 1)!! for even k."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    return 0 if k % 2 else int(sp.factorial2(k - 1)) if k else 1


def zeta_moment(k: int) -> sp.Expr:
    """The symbol m_k = E[zeta^k] (m_0 = 1)."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    return sp.Integer(1) if k == 0 else sp.Symbol(f"m_{k}", positive=True)


def expect(expr, gaussians: Iterable[sp.Symbol] = (), zeta: sp.Symbol | None = None,
           linear: Mapping[sp.Symbol, sp.Expr] | None = None) -> sp.Expr:
    """E[expr] for a polynomial in independent N(0, 1) ``gaussians``, in ``zeta`` (moments m_k) and in
    the symbols of ``linear`` (independent of the rest, entering at most linearly, replaced by their mean)."""
    gaussians = list(gaussians)
    linear = dict(linear or {})
    gens = gaussians + ([zeta] if zeta is not None else []) + list(linear)
    if not gens:
        return sp.expand(expr)
    poly = sp.Poly(sp.expand(expr), *gens)
    out = sp.Integer(0)
    ng, nz = len(gaussians), int(zeta is not None)
    for monom, coeff in poly.terms():
        term = coeff
        for k in monom[:ng]:
            term *= gaussian_moment(k)
        if nz:
            term *= zeta_moment(monom[ng])
        for (sym, mean), k in zip(linear.items(), monom[ng + nz:]):
            if k > 1:
                raise ValueError(f"{sym} enters with power {k}; only linear occurrences have a known mean")
            term *= mean if k else 1
        out += term
    return sp.expand(out)
