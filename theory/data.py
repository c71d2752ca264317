"""Def 4.1: multi-patch data with the hidden inter-feature rule ||x^(1)|| + ||x^(2)|| = 1.

x_0 = [zeta u, (1 - zeta) v, x^(3), ..., x^(P)] with u, v orthonormal in R^d and zeta ~ D_zeta on
[c_lo, c_hi]. Arrays have shape (n, P, d): patch 0 is x^(1) (along u), patch 1 is x^(2) (along v).
The paper leaves patches p >= 3 unspecified beyond independence; we draw them i.i.d. N(0, I_d)
(their score is then -x / (alpha^2 + beta^2), see ``theory.score``).
"""

from __future__ import annotations

import numpy as np

from ._checks import check_alpha_beta, check_instance, check_int, check_rng
from .zeta import ZetaDistribution, check_zeta


class MultiPatchData:
    """The data distribution of Def 4.1.

    Parameters: ``d`` patch dimension (>= 2), ``zeta`` a ``ZetaDistribution``, ``n_patches`` P >= 2,
    ``u`` / ``v`` orthonormal feature vectors (default e_1, e_2).
    """

    def __init__(self, d: int, zeta: ZetaDistribution, n_patches: int = 2, u=None, v=None):
        self.d = check_int("d", d, minimum=2)
        self.zeta = check_zeta(zeta)
        self.n_patches = check_int("n_patches", n_patches, minimum=2)
        self.u = self._vector("u", u, 0)
        self.v = self._vector("v", v, 1)
        tol = 1e-10
        if abs(np.linalg.norm(self.u) - 1) > tol or abs(np.linalg.norm(self.v) - 1) > tol:
            raise ValueError(
                f"u and v must have unit norm (Def 4.1), got |u|={np.linalg.norm(self.u)}, |v|={np.linalg.norm(self.v)}"
            )
        if abs(self.u @ self.v) > tol:
            raise ValueError(f"u and v must be orthogonal (Def 4.1), got <u, v> = {self.u @ self.v}")

    def _vector(self, name, value, index) -> np.ndarray:
        if value is None:
            e = np.zeros(self.d)
            e[index] = 1.0
            return e
        arr = np.asarray(value, dtype=np.float64)
        if arr.shape != (self.d,):
            raise ValueError(f"{name} must be a vector of length d={self.d}, got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be finite")
        return arr.copy()

    @property
    def features(self) -> np.ndarray:
        """(2, d): the feature of patch 0 (u) and of patch 1 (v)."""
        return np.stack([self.u, self.v])

    def coefficients(self, zeta: np.ndarray) -> np.ndarray:
        """(n, 2): the coefficients (zeta, 1 - zeta) of the two rule patches."""
        zeta = np.asarray(zeta, dtype=np.float64)
        return np.stack([zeta, 1.0 - zeta], axis=-1)

    def sample_x0(self, n: int, rng, return_zeta: bool = False):
        """n clean samples, shape (n, P, d); with ``return_zeta`` also the (n,) zeta draws."""
        n = check_int("n", n)
        rng = check_rng(rng)
        zeta = self.zeta.sample(n, rng)
        x0 = np.empty((n, self.n_patches, self.d))
        x0[:, :2, :] = self.coefficients(zeta)[:, :, None] * self.features[None]
        if self.n_patches > 2:
            x0[:, 2:, :] = rng.standard_normal((n, self.n_patches - 2, self.d))
        return (x0, zeta) if return_zeta else x0

    def noised(self, x0, alpha, beta, rng):
        """x_t = alpha x_0 + beta eps with eps ~ N(0, I); returns (x_t, eps)."""
        alpha, beta = check_alpha_beta(alpha, beta)
        x0 = self.check_x(x0, "x0")
        eps = check_rng(rng).standard_normal(x0.shape)
        return alpha * x0 + beta * eps, eps

    def sample_xt(self, n: int, alpha, beta, rng, return_zeta: bool = False):
        """n noised samples x_t (n, P, d) drawn fresh: x_0 from Def 4.1, then ``noised``."""
        rng = check_rng(rng)
        x0, zeta = self.sample_x0(n, rng, return_zeta=True)
        xt, _ = self.noised(x0, alpha, beta, rng)
        return (xt, zeta) if return_zeta else xt

    def check_x(self, x, name: str = "x_t") -> np.ndarray:
        """Validate a numpy batch and return it with shape (n, P, d) (flattened (n, P*d) accepted)."""
        arr = np.asarray(x, dtype=np.float64)
        P, d = self.n_patches, self.d
        if arr.ndim == 2 and arr.shape[1] == P * d:
            arr = arr.reshape(arr.shape[0], P, d)
        if arr.ndim != 3 or arr.shape[1:] != (P, d):
            raise ValueError(f"{name} must have shape (n, {P}, {d}) or (n, {P * d}), got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or infinite values")
        return arr

    def describe(self) -> dict:
        return {"d": self.d, "n_patches": self.n_patches, "zeta": self.zeta.describe(),
                "u": "e1" if self.u[0] == 1 else self.u.tolist(), "v": "e2" if self.v[1] == 1 else self.v.tolist()}


def check_data(data) -> MultiPatchData:
    """``data`` is a ``MultiPatchData`` (Def 4.1)."""
    return check_instance("data", data, MultiPatchData)
