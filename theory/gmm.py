"""App. A: low FID does not imply correct inter-feature rules (a Gaussian-mixture example).

The population p(x, y) = 1/2 N((1, 1), I) + 1/2 N((-1, -1), I) (eq. (5)) and the Gaussian q with the
same mean and covariance, q = N(0, [[2, 1], [1, 2]]) (eq. (6)), have Fréchet distance (the FID
formula, eq. (7)) exactly 0: the Fréchet distance only sees the first two moments. Their
conditional structure differs: E_p[y | x] = tanh(x) (the component posterior is logistic in 2x)
while E_q[y | x] = x / 2, and Var_p(y | x) = 2 - tanh(x)^2 against Var_q(y | x) = 3/2.

Where we differ from the text: App. A contrasts q's "Cov(x, y) = 1" with p's dependence "due to the
mixture"; p has the same covariance, Cov_p(x, y) = 1 — the difference is not in the covariance but
in everything beyond it (the conditional mean is non-linear). The printed covariance formula uses
mu_q for mu_p; both are 0 here, so the value is unaffected.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import linalg

from ._checks import check_int, check_rng


def _matrix(name, value, shape) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    return arr


def _covariance(name, value, dim) -> np.ndarray:
    cov = _matrix(name, value, (dim, dim))
    if not np.allclose(cov, cov.T, rtol=0, atol=1e-12 * max(1.0, np.abs(cov).max())):
        raise ValueError(f"{name} must be symmetric")
    if np.linalg.eigvalsh(cov).min() < -1e-12 * max(1.0, np.abs(cov).max()):
        raise ValueError(f"{name} must be positive semi-definite")
    return cov


def frechet_distance(mean1, cov1, mean2, cov2) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2}) (eq. (7); the FID of two Gaussians).

    (S1 S2)^{1/2} by ``scipy.linalg.sqrtm``; an imaginary part larger than 1e-10 of the trace is an error.
    """
    mu1 = np.atleast_1d(np.asarray(mean1, dtype=np.float64))
    if mu1.ndim != 1 or not np.all(np.isfinite(mu1)):
        raise ValueError(f"mean1 must be a finite vector, got shape {mu1.shape}")
    dim = mu1.size
    mu2 = _matrix("mean2", np.atleast_1d(mean2), (dim,))
    s1 = _covariance("cov1", cov1, dim)
    s2 = _covariance("cov2", cov2, dim)
    root = linalg.sqrtm(s1 @ s2)
    trace_root = np.trace(root)
    scale = max(1.0, abs(np.trace(s1)) + abs(np.trace(s2)))
    if abs(np.imag(trace_root)) > 1e-10 * scale:
        raise ValueError("sqrtm(cov1 @ cov2) has a significant imaginary trace; covariances are not PSD")
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.real(trace_root))


class GaussianMixture:
    """sum_k w_k N(mean_k, cov_k) in R^D (D >= 1)."""

    def __init__(self, weights, means, covs):
        w = np.atleast_1d(np.asarray(weights, dtype=np.float64))
        if w.ndim != 1 or w.size < 1 or not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise ValueError(f"weights must be a non-empty vector of positive numbers, got {weights!r}")
        if abs(w.sum() - 1) > 1e-12:
            raise ValueError(f"weights must sum to 1, got {w.sum()!r}")
        means = np.asarray(means, dtype=np.float64)
        if means.ndim != 2 or means.shape[0] != w.size:
            raise ValueError(f"means must have shape (K={w.size}, D), got {means.shape}")
        dim = means.shape[1]
        means = _matrix("means", means, (w.size, dim))
        covs = np.asarray(covs, dtype=np.float64)
        if covs.shape != (w.size, dim, dim):
            raise ValueError(f"covs must have shape ({w.size}, {dim}, {dim}), got {covs.shape}")
        covs = np.stack([_covariance(f"covs[{k}]", c, dim) for k, c in enumerate(covs)])
        for k, c in enumerate(covs):
            if np.linalg.eigvalsh(c).min() <= 0:
                raise ValueError(f"covs[{k}] must be positive definite (densities are evaluated)")
        self.weights, self.means, self.covs = w, means, covs
        self.dim = dim

    @property
    def mean(self) -> np.ndarray:
        return self.weights @ self.means

    @property
    def covariance(self) -> np.ndarray:
        """sum_k w_k (S_k + (mu_k - mu)(mu_k - mu)^T) (App. A's Sigma_p)."""
        c = self.means - self.mean
        return np.einsum("k,kij->ij", self.weights, self.covs) + np.einsum("k,ki,kj->ij", self.weights, c, c)

    def _points(self, points) -> np.ndarray:
        pts = np.asarray(points, dtype=np.float64)
        if pts.shape[-1] != self.dim or not np.all(np.isfinite(pts)):
            raise ValueError(f"points must be finite with last axis of length {self.dim}, got {pts.shape}")
        return pts

    def log_density(self, points) -> np.ndarray:
        """log p at points of shape (..., D)."""
        pts = self._points(points)
        logs = []
        for w, m, c in zip(self.weights, self.means, self.covs):
            chol = np.linalg.cholesky(c)
            z = np.linalg.solve(chol, (pts - m).reshape(-1, self.dim).T).T
            logdet = 2 * np.log(np.diag(chol)).sum()
            norm = 0.5 * logdet + 0.5 * self.dim * math.log(2 * math.pi)
            logs.append(math.log(w) - 0.5 * (z**2).sum(-1) - norm)
        out = np.logaddexp.reduce(np.stack(logs), axis=0)
        return out.reshape(pts.shape[:-1])

    def density(self, points) -> np.ndarray:
        return np.exp(self.log_density(points))

    def conditional(self, x, given: int = 0, target: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(E[x_target | x_given = x], Var(x_target | x_given = x)) for an array of x values.

        Each component is Gaussian, so given x it has weight proportional to w_k N(x; mu_k,g, S_k,gg),
        mean mu_k,t + S_k,tg / S_k,gg (x - mu_k,g) and variance S_k,tt - S_k,tg^2 / S_k,gg.
        """
        for name, idx in (("given", given), ("target", target)):
            if not (isinstance(idx, int) and 0 <= idx < self.dim):
                raise ValueError(f"{name} must be an axis index in [0, {self.dim}), got {idx!r}")
        if given == target:
            raise ValueError("given and target must be different axes")
        xs = np.asarray(x, dtype=np.float64)
        if not np.all(np.isfinite(xs)):
            raise ValueError("x must be finite")
        sgg = self.covs[:, given, given]
        stg = self.covs[:, target, given]
        stt = self.covs[:, target, target]
        mg, mt = self.means[:, given], self.means[:, target]
        logw = np.log(self.weights) - 0.5 * np.log(2 * math.pi * sgg) - (xs[..., None] - mg) ** 2 / (2 * sgg)
        post = np.exp(logw - np.logaddexp.reduce(logw, axis=-1)[..., None])
        cm = mt + stg / sgg * (xs[..., None] - mg)
        cv = stt - stg**2 / sgg
        mean = (post * cm).sum(-1)
        var = (post * (cv + cm**2)).sum(-1) - mean**2
        return mean, var

    def sample(self, n: int, rng) -> np.ndarray:
        n = check_int("n", n)
        rng = check_rng(rng)
        k = rng.choice(self.weights.size, size=n, p=self.weights)
        z = rng.standard_normal((n, self.dim))
        chol = np.linalg.cholesky(self.covs)
        return self.means[k] + np.einsum("nij,nj->ni", chol[k], z)


def appendix_a_mixture() -> GaussianMixture:
    """eq. (5): 1/2 N((1, 1), I) + 1/2 N((-1, -1), I)."""
    return GaussianMixture([0.5, 0.5], [[1.0, 1.0], [-1.0, -1.0]], [np.eye(2), np.eye(2)])


def moment_matched_gaussian(mixture: GaussianMixture) -> GaussianMixture:
    """The Gaussian with the mixture's mean and covariance (eq. (6) for ``appendix_a_mixture``)."""
    if not isinstance(mixture, GaussianMixture):
        raise ValueError(f"mixture must be a GaussianMixture, got {type(mixture).__name__}")
    return GaussianMixture([1.0], [mixture.mean], [mixture.covariance])


def mixture_fid(mixture: GaussianMixture, other: GaussianMixture) -> float:
    """Fréchet distance between the moment-matched Gaussians of two mixtures (what FID measures)."""
    for name, m in (("mixture", mixture), ("other", other)):
        if not isinstance(m, GaussianMixture):
            raise ValueError(f"{name} must be a GaussianMixture, got {type(m).__name__}")
    return frechet_distance(mixture.mean, mixture.covariance, other.mean, other.covariance)
