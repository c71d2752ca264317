"""Checks of the proof of Thm 4.4 (App. E) that need more than one neuron.

The proof decomposes each trained neuron as w_r = phi_r w_r^0 + gamma_r u, i.e. it claims that GD
keeps every neuron in the span of *its own* initial weight and the feature. For width m >= 2 the
gradient of neuron r involves the other neurons: already for the linear activation the per-patch
population loss is

    L(W) = alpha^2 E[c^2] ||(W^T W - I/beta^2) f||^2 + ||beta W^T W - kappa I||_F^2,

derived here from the Gaussian moments in explicit coordinates (d = 4, m = 2), whose gradient in
w_1 contains (w_1 . w_2) w_2. What GD does preserve is span(w_1^0, ..., w_m^0, f), which is all
the theorem's statement (a projection onto the span of all initial weights) needs.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import sympy as sp

from ._expectation import expect
from .linear_stationary import alpha, beta, c, c2, kappa

D, M = 4, 2


@cache
def linear_width_loss(target: str = "paper", m: int = M, dim: int = D):
    """(loss, weight symbols (m, dim), closed form) for sigma(z) = z, width m, feature f = e_1, in R^dim."""
    if m < 1 or dim < 2:
        raise ValueError(f"need m >= 1 and dim >= 2, got m={m}, dim={dim}")
    W = sp.Matrix(m, dim, lambda r, i: sp.Symbol(f"w{r}{i}", real=True))
    eps = sp.Matrix(dim, 1, lambda i, _: sp.Symbol(f"e{i}", real=True))
    f = sp.Matrix(dim, 1, lambda i, _: 1 if i == 0 else 0)
    k = kappa(target)
    x = alpha * c * f + beta * eps
    g = W.T * (W * x)  # sum_r <w_r, x> w_r
    y = alpha * c / beta**2 * f + k * eps
    resid = g - y
    loss = expect(sp.expand((resid.T * resid)[0, 0]), list(eps), c).subs(sp.Symbol("m_2", positive=True), c2)
    Mx = W.T * W
    closed = alpha**2 * c2 * ((Mx - sp.eye(dim) / beta**2) * f).norm() ** 2 + sum(
        (beta * Mx - k * sp.eye(dim)).applyfunc(lambda e: e**2))
    closed = sp.expand(closed.rewrite(sp.Abs).replace(sp.Abs, lambda e: e))
    return sp.expand(loss), W, closed


@cache
def gradient_function(target: str = "paper", m: int = M, dim: int = D):
    """numpy f(alpha, beta, c2, W (m, dim)) -> dL/dW (m, dim)."""
    loss, W, _ = linear_width_loss(target, m, dim)
    grads = sp.Matrix(m, dim, lambda r, i: sp.diff(loss, W[r, i]))
    fn = sp.lambdify((alpha, beta, c2, list(W)), grads, modules="numpy")
    return lambda a, b, m2, Wv: np.array(fn(a, b, m2, list(np.asarray(Wv, dtype=float).ravel())), dtype=float)


def outside_span(vectors: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Norms of the components of each row of ``vectors`` orthogonal to the row space of ``basis``."""
    q, _ = np.linalg.qr(np.asarray(basis, dtype=float).T)
    v = np.asarray(vectors, dtype=float)
    return np.linalg.norm(v - (v @ q) @ q.T, axis=-1)
