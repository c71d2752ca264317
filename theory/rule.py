"""Def 4.3: the rule-conforming coefficient psi_t and error E = bias^2 + variance.

    psi_t(x_t) = <s^(1)(x_t) + x_t^(1)/beta^2, u> + <s^(2)(x_t) + x_t^(2)/beta^2, v>,

which for eq. (1) is <g^(1)(x^(1)), u> + <g^(2)(x^(2)), v> (g the learned residual). The exact
score has psi_t = alpha_t / beta_t^2 for every x_t (identity (*)); E = E[(psi_t - alpha/beta^2)^2]
= bias^2 + variance with bias = E[psi_t] - alpha/beta^2. The paper's E_bias is |bias|; we keep
the sign (a negative bias means the network under-shoots the rule).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ._checks import DTYPE, check_alpha_beta, check_instance, check_int, check_rng
from .data import MultiPatchData, check_data
from .network import TwoLayerScore


@dataclass(frozen=True)
class RuleError:
    """Bias (signed), variance and total E = bias^2 + variance of psi_t (Def 4.3).

    Standard errors are set for Monte Carlo estimates and None for exact values.
    """

    bias: float
    variance: float
    total: float
    bias_se: float | None = None
    variance_se: float | None = None
    total_se: float | None = None
    n: int | None = None

    @classmethod
    def from_moments(cls, mean: float, variance: float, target: float) -> RuleError:
        bias = float(mean) - float(target)
        return cls(bias=bias, variance=float(variance), total=bias**2 + float(variance))

    def as_dict(self) -> dict:
        return asdict(self)


def _check_net_data(net, data):
    check_data(data)
    check_instance("net", net, TwoLayerScore)
    if net.d != data.d or net.n_patches < 2:
        raise ValueError(f"net (d={net.d}, n_patches={net.n_patches}) does not fit data (d={data.d}, 2 rule patches)")


def psi(net, x_t, data: MultiPatchData) -> torch.Tensor:
    """psi_t(x_t) of Def 4.3 for each row of x_t (n, P, d); float64 tensor (n,)."""
    _check_net_data(net, data)
    x = torch.as_tensor(data.check_x(x_t) if not isinstance(x_t, torch.Tensor) else x_t, dtype=DTYPE,
                        device=net.device)
    if x.ndim == 2:
        x = x.reshape(x.shape[0], data.n_patches, data.d)
    if x.ndim != 3 or tuple(x.shape[1:]) != (data.n_patches, data.d):
        raise ValueError(f"x_t must have shape (n, {data.n_patches}, {data.d}), got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x_t contains NaN or infinite values")
    x = x[:, : net.n_patches]
    u = torch.as_tensor(data.u, dtype=DTYPE, device=net.device)
    v = torch.as_tensor(data.v, dtype=DTYPE, device=net.device)
    with torch.no_grad():
        g = net.residual(x)
    return g[:, 0] @ u + g[:, 1] @ v


def rule_error(net, data: MultiPatchData, alpha, beta, n: int = 100_000, rng=0,
               chunk: int = 50_000) -> RuleError:
    """Monte Carlo estimate of Def 4.3's E, bias and variance over n fresh x_t, with standard errors.

    SE(bias) = sd/sqrt(n); SE(variance) from the fourth central moment,
    sqrt((m4 - s^4)/n); SE(total) by the delta method on (mean, variance).
    """
    _check_net_data(net, data)
    alpha, beta = check_alpha_beta(alpha, beta)
    n = check_int("n", n, minimum=2)
    rng = check_rng(rng)
    values = []
    left = n
    while left > 0:
        k = min(chunk, left)
        values.append(psi(net, data.sample_xt(k, alpha, beta, rng), data).cpu().numpy())
        left -= k
    p = np.concatenate(values)
    target = alpha / beta**2
    mean, var = float(p.mean()), float(p.var(ddof=1))
    c = p - mean
    m4 = float(np.mean(c**4))
    bias = mean - target
    bias_se = math.sqrt(var / n)
    var_se = math.sqrt(max(m4 - var**2, 0.0) / n)
    m3 = float(np.mean(c**3))
    # Var(bias^2 + s^2) ~ (2 bias)^2 Var(mean) + Var(s^2) + 2 (2 bias) Cov(mean, s^2), Cov = m3/n
    total_var = (4 * bias**2 * var + (m4 - var**2) + 4 * bias * m3) / n
    return RuleError(bias=bias, variance=var, total=bias**2 + var, bias_se=bias_se, variance_se=var_se,
                     total_se=math.sqrt(max(total_var, 0.0)), n=n)


@dataclass(frozen=True)
class Thm44Bound:
    """Thm 4.4's lower bound on E: sum over the rule patches of E[Var(psi^(p) | zeta, eps_-^(p))]."""

    value: float
    se: float
    per_patch: tuple[float, float]
    subspace: str
    n: int

    def as_dict(self) -> dict:
        return asdict(self)


def thm44_lower_bound(net, data: MultiPatchData, alpha, beta, n: int = 20_000, rng=0,
                      init_weights=None, order: int = 64) -> Thm44Bound:
    """Thm 4.4 evaluated for a network of any activation and width.

    For each rule patch p with feature f (u or v), split eps = eps_- + eps_perp with eps_- the
    projection onto a subspace V such that every w_r lies in V + span(f). Given zeta and eps_-,
    psi^(p) = sum_r sigma(<w_r, x^(p)>) <w_r, f> depends on eps only through xi = <f, eps_perp>, and the
    two patches are conditionally independent, so by the law of total variance
    E >= Var(psi) >= E[Var(psi^(1) | zeta, eps_-^(1))] + E[Var(psi^(2) | zeta, eps_-^(2))].

    ``init_weights=None`` (default) uses V = span of the w_r projected orthogonally to f, valid for
    any weights (Monte Carlo-trained ones too) and the smallest such V, hence the tightest bound.
    Given the initial weights (P, m, d), V = span(w_r^0) as in the paper's proof; the trained
    weights must then lie in span(w^0, f), which holds for GD on the population loss only.
    The conditional variance over xi uses Gauss-Hermite of ``order`` nodes (exact for polynomial
    sigma of degree <= (order - 1)/2); the outer expectation is Monte Carlo over n draws of
    (zeta, eps_-), reported with its standard error.
    """
    _check_net_data(net, data)
    if net.joint:
        raise ValueError("thm44_lower_bound needs a per-patch network (eq. (1)); a joint network couples the patches")
    alpha, beta = check_alpha_beta(alpha, beta)
    n = check_int("n", n, minimum=2)
    order = check_int("order", order, minimum=2)
    rng = check_rng(rng)
    W_all = net.weights.detach().to("cpu", DTYPE)
    feats = torch.as_tensor(data.features, dtype=DTYPE)
    if init_weights is not None:
        W0_all = torch.as_tensor(init_weights, dtype=DTYPE)
        if W0_all.shape[0] < 2 or W0_all.shape[2] != data.d:
            raise ValueError(f"init_weights must have shape (P, m0, {data.d}), got {tuple(W0_all.shape)}")
    zeta = torch.as_tensor(data.zeta.sample(n, rng), dtype=DTYPE)
    coef = torch.stack([zeta, 1 - zeta], 1)
    gh_x, gh_w = np.polynomial.hermite.hermgauss(order)
    gh_x = torch.as_tensor(gh_x * math.sqrt(2.0), dtype=DTYPE)
    gh_w = torch.as_tensor(gh_w / math.sqrt(math.pi), dtype=DTYPE)
    sigma = net.activation.fn
    cond_var = torch.zeros(n, dtype=DTYPE)
    per_patch = []
    for p in range(2):
        W, f = W_all[p], feats[p]
        gamma = W @ f
        if init_weights is None:
            A = W - gamma[:, None] * f[None]  # components orthogonal to f
            c = gamma
        else:
            A = W0_all[p]
            basis = torch.cat([A, f[None]], 0)  # (m0 + 1, d)
            coeffs = torch.linalg.lstsq(basis.T, W.T).solution  # (m0 + 1, m)
            resid = (basis.T @ coeffs - W.T).norm(dim=0)
            if bool((resid > 1e-8 * (W.norm(dim=1) + 1e-300)).any()):
                raise ValueError("the weights are not in span(init_weights, feature): the paper's decomposition "
                                 "needs GD on the population loss; use init_weights=None")
            c = coeffs[-1]
        # orthonormal basis Q of V (rank-revealing through SVD)
        if A.abs().max() > 0:
            U_, S_, Vh = torch.linalg.svd(A, full_matrices=False)
            Q = Vh[S_ > S_.max() * 1e-12]
        else:
            Q = torch.zeros((0, data.d), dtype=DTYPE)
        f_perp = f - Q.T @ (Q @ f)
        xi_sd = float(f_perp.norm())
        eta = torch.as_tensor(rng.standard_normal((n, Q.shape[0])), dtype=DTYPE)
        base = alpha * coef[:, p, None] * gamma[None] + beta * eta @ (Q @ W.T)  # (n, m)
        z = base[:, :, None] + beta * c[None, :, None] * (xi_sd * gh_x)[None, None, :]  # (n, m, order)
        vals = (sigma(z) * gamma[None, :, None]).sum(1)  # (n, order)
        mean = vals @ gh_w
        var_p = torch.clamp((vals - mean[:, None]) ** 2 @ gh_w, min=0.0)
        cond_var += var_p
        per_patch.append(float(var_p.mean()))
    value = float(cond_var.mean())
    se = float(cond_var.std(unbiased=True)) / math.sqrt(n)
    return Thm44Bound(value=value, se=se, per_patch=(per_patch[0], per_patch[1]),
                      subspace="trained" if init_weights is None else "initial", n=n)
