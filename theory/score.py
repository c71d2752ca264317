"""Thm 4.2: the exact score of the noised multi-patch distribution, and identity (*).

For the two rule patches, x_t | zeta ~ N(mu_t(zeta), beta^2 I_2d), mu_t = [alpha zeta u, alpha (1-zeta) v],
so with a = <x^(1), u>, b = <x^(2), v>,

    grad log p_t = -x_t / beta^2 + (alpha / beta^2) [E_pi[zeta] u ; E_pi[1 - zeta] v],

where pi_t(zeta, x_t) is the posterior of zeta. Its log-likelihood is quadratic in zeta: the
posterior is D_zeta tilted by a Gaussian with mode (1 + (a - b)/alpha)/2 and sd beta/(alpha sqrt 2),
so E_pi[zeta] = ``zeta.gaussian_tilt(mode, sd)`` (exact for Discrete and Uniform, quadrature for
ScaledBeta). Patches p >= 3 are i.i.d. N(0, I) in ``MultiPatchData``: their score is -x/(alpha^2+beta^2).

All functions take x_t of shape (n, P, d) or (n, P*d), numpy or torch, and return the same type.
"""

from __future__ import annotations

import math

import torch

from ._checks import DTYPE, as_float64, check_alpha_beta, to_like
from .data import MultiPatchData, check_data


def _prepare(x_t, data: MultiPatchData, alpha, beta):
    check_data(data)
    alpha, beta = check_alpha_beta(alpha, beta)
    x = as_float64("x_t", x_t)
    P, d = data.n_patches, data.d
    flat = x.ndim == 2 and x.shape[1] == P * d
    if flat:
        x = x.reshape(x.shape[0], P, d)
    if x.ndim != 3 or tuple(x.shape[1:]) != (P, d):
        raise ValueError(f"x_t must have shape (n, {P}, {d}) or (n, {P * d}), got {tuple(x_t.shape)}")
    return x, alpha, beta, flat


def _features(data: MultiPatchData, device) -> tuple[torch.Tensor, torch.Tensor]:
    u = torch.as_tensor(data.u, dtype=DTYPE, device=device)
    v = torch.as_tensor(data.v, dtype=DTYPE, device=device)
    return u, v


def posterior_zeta_mean(x: torch.Tensor, data: MultiPatchData, alpha: float, beta: float):
    """E_pi[zeta] and the log-normaliser log E_zeta[exp(-(zeta-mode)^2/(2 sd^2))] for x (n, P, d)."""
    u, v = _features(data, x.device)
    a = x[:, 0, :] @ u
    b = x[:, 1, :] @ v
    mode = 0.5 * (1.0 + (a - b) / alpha)
    sd = beta / (alpha * math.sqrt(2.0))
    log_z, mean = data.zeta.gaussian_tilt(mode, sd)
    return mean, log_z, a, b


def true_score(x_t, data: MultiPatchData, alpha, beta):
    """grad_x log p_t(x_t), Thm 4.2 (all patches)."""
    x, alpha, beta, flat = _prepare(x_t, data, alpha, beta)
    u, v = _features(data, x.device)
    m, _, _, _ = posterior_zeta_mean(x, data, alpha, beta)
    s = torch.empty_like(x)
    s[:, 0] = -x[:, 0] / beta**2 + (alpha / beta**2) * m[:, None] * u
    s[:, 1] = -x[:, 1] / beta**2 + (alpha / beta**2) * (1.0 - m)[:, None] * v
    if data.n_patches > 2:
        s[:, 2:] = -x[:, 2:] / (alpha**2 + beta**2)
    if flat:
        s = s.reshape(s.shape[0], -1)
    return to_like(s, x_t)


def log_density(x_t, data: MultiPatchData, alpha, beta):
    """log p_t(x_t) for each row, differentiable in x_t when given a torch tensor (n,)."""
    x, alpha, beta, _ = _prepare(x_t, data, alpha, beta)
    d = data.d
    u, v = _features(data, x.device)
    _, log_z, a, b = posterior_zeta_mean(x, data, alpha, beta)
    # ||x - mu(zeta)||^2 / beta^2 written without cancellation: the part of the two rule patches
    # orthogonal to u, v, plus the (a, b) plane where the quadratic in zeta is completed.
    perp = (x[:, 0] ** 2).sum(-1) - a**2 + (x[:, 1] ** 2).sum(-1) - b**2
    quad = perp / (2 * beta**2) + (a + b - alpha) ** 2 / (4 * beta**2)
    lp = -d * math.log(2 * math.pi * beta**2) - quad + log_z
    if data.n_patches > 2:
        var = alpha**2 + beta**2
        rest = x[:, 2:].reshape(x.shape[0], -1)
        lp = lp - 0.5 * rest.shape[1] * math.log(2 * math.pi * var) - (rest**2).sum(-1) / (2 * var)
    return to_like(lp, x_t)


def rule_identity_residual(x_t, data: MultiPatchData, alpha, beta):
    """Identity (*) for the exact score: (beta^2/alpha) psi_t(true score) - 1, which must vanish.

    psi_t (Def 4.3) of the true score is (alpha/beta^2)(E_pi[zeta] + E_pi[1 - zeta]); here it is
    recomputed from the score vector itself, so the residual checks ``true_score`` end to end.
    """
    x, alpha, beta, _ = _prepare(x_t, data, alpha, beta)
    u, v = _features(data, x.device)
    s = torch.as_tensor(true_score(x, data, alpha, beta))
    psi = ((s[:, 0] + x[:, 0] / beta**2) @ u) + ((s[:, 1] + x[:, 1] / beta**2) @ v)
    return to_like(psi * beta**2 / alpha - 1.0, x_t)
