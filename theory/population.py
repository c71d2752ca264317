"""Exact population DSM loss (eq. (2)) and exact moments of psi_t (Def 4.3) for the eq. (1) network.

The theorems of Section 4 are about the expectation over x_0 and eps, the n, n_eps -> infinity limit of
App. F's Monte Carlo loss (``theory.losses.MonteCarloLoss``). For the per-patch network of eq. (1) that
limit is computable exactly; this module does so (float64, any ``ZetaDistribution``, any number of patches).

**Reduction to Gram matrices.** Take one patch with weights W (m x d), G = W W^T, D = diag(G) and, on the
two rule patches, feature f (u or v), coefficient c (zeta or 1 - zeta) and gamma = W f. Given c,
x_t = alpha c f + beta eps, so z = W x_t ~ N(mu, beta^2 G) with mu = alpha c gamma. Patches p >= 3 of
``MultiPatchData`` are x_0 ~ N(0, I): z ~ N(0, s^2 G), s^2 = alpha^2 + beta^2. With the residual
g(x) = sum_r sigma(z_r) w_r (eq. (1) without its -x/beta^2) and y the residual target of ``theory.losses``
(x/beta^2 + eps for "paper", alpha x_0/beta^2 for "score"), per patch

    E||g - y||^2 = sum_{r,s} G_rs E[sigma(z_r) sigma(z_s)] - 2 sum_r E[sigma(z_r) <w_r, y>] + E||y||^2.

<w_r, y> is jointly Gaussian with z given c; Stein's lemma (the integrand depends on z_r only) gives

    E[sigma(z_r) <w_r, y> | c] = (mu_r / beta^2) E[sigma(z_r) | c] + kappa2 D_r E[sigma'(z_r) | c],

kappa2 = 1 + beta ("paper", rule patch), 0 ("score", rule patch), s^2/beta^2 + beta ("paper", p >= 3),
alpha^2/beta^2 ("score", p >= 3). Only D_r = ||w_r||^2 enters:
E[sigma(z_r) <w_r, eps>] = beta D_r E[sigma'(z_r)], not beta sum_s G_rs E[sigma'(z_r)] (DESIGN.md's note).
Constants E||y||^2: alpha^2 E[c^2]/beta^4 + d (1 + 1/beta)^2 ("paper") or alpha^2 E[c^2]/beta^4 ("score")
on a rule patch; d (alpha^2/beta^4 + (1 + 1/beta)^2) or d alpha^2/beta^4 on a patch p >= 3. So the loss is
F(G, gamma) and dL/dW = 2 S W + (dF/dgamma) f^T with S the symmetric derivative in G: GD never leaves
span(W(0), f), the basis of the reduced coordinates of ``theory.reduced``. Gradients are written by hand in
that form.

**Polynomial sigma** (linear, quadratic, cubic, any ``Activation.poly``). Isserlis' theorem makes
E[sigma(z_r) sigma(z_s) | c] a polynomial in (alpha c gamma, beta^2 D, beta^2 G_rs); the average over c uses
exact zeta moments. Exact up to rounding.

**ReLU.** Price's theorem in the correlation rho of (z_r, z_s), d^2/drho^2 E[relu relu] = sigma_r sigma_s
phi_2, gives

    E[relu(z_r) relu(z_s) | c] = E_r E_s + rho sigma_r sigma_s Phi(a_r) Phi(a_s)
                                 + sigma_r sigma_s / (2 pi) int_0^{asin rho} (rho - sin t) exp(-Q(t)/2) dt,

a_r = mu_r / sigma_r = c A_r, Q(t) = (a_r^2 - 2 a_r a_s sin t + a_s^2) / cos^2 t = c^2 Q_1(t). The first
two terms are products of univariate closed forms, averaged over c by a quadrature in c (Gauss-Legendre /
Gauss-Jacobi / exact atoms; split where c changes sign). In the integral the average over c moves inside:
E_c exp(-c^2 Q_1/2) is an erf for uniform zeta, a finite sum for discrete zeta, the c-quadrature otherwise.
The t-integral uses Gauss-Legendre in tan(t/2) (rational nodes: no trigonometric function per node) with
6-16 nodes by |rho|; for 1e-3 <= omega = arccos|rho| < 0.3 in y = -log(1 - tan(t/2)) (32 nodes), which
resolves the layer at t -> pi/2 whatever a_r - a_s; for omega < 1e-3 it is expanded from rho = +-1, where
E[relu relu] has a closed form, with the remainder over [0, omega] on four graded panels. Derivatives are
Price's theorem again (d/drho of the integral = the same integral without (rho - sin t); d/dA from dQ/dA),
so the hand-written gradient reuses the nodes and values of the forward pass.

**Accuracy (ReLU).** Per neuron pair, c-averaged, against scipy/mpmath quadrature over omega in
[1e-7, pi/2] (both signs of rho, boundary layers (a_r - a_s)^2/omega^2 from 0 to ~4, t from 0.02 to 1,
uniform / discrete / beta laws including c reaching or crossing 0): absolute error <= 2e-13 sigma_r sigma_s
(the test asserts 1e-12). The c-quadrature (``ZETA_ORDER`` = 32 Gauss nodes per panel) is converged to
rounding for alpha_t/beta_t <= 7 (t >= 0.02). On whole networks (random, feature-aligned and trained,
d = 100, m = 20) the loss and its gradient agree with 4x the nodes to <= 1e-11 relative (the constant term
removed): far inside the 1e-8 required. ``quadrature_error_estimate`` repeats that check for a given net.

**psi_t (Def 4.3).** psi = sum_r sigma(z^(1)_r) gamma^(1)_r + sum_r sigma(z^(2)_r) gamma^(2)_r. The two
rule patches share zeta, not eps: E[psi] = E_zeta[m_1 + m_2] with m_p = E[psi^(p) | zeta], and
E[psi^2] = sum_p E_c[sum_{r,s} gamma_r gamma_s E[sigma sigma | c]] + 2 E_zeta[m_1 m_2]: the pairwise
expectations of the loss with gamma gamma^T in place of G.

None of this is in the paper, which trains on Monte Carlo samples (App. F); it is the limit those samples
estimate, and the object Thm 4.4/4.5 are stated for.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch
from scipy import special

from ._checks import DTYPE, check_alpha_beta, check_int
from .data import MultiPatchData
from .losses import Target
from .network import Activation, TwoLayerScore, get_activation
from .rule import RuleError
from .zeta import Discrete, ScaledBeta, Uniform, ZetaDistribution

ZETA_ORDER = 32  # c-quadrature nodes per panel (ReLU)

_SQRT_2PI = math.sqrt(2.0 * math.pi)
_RHO_MAX = 1.0 - 2.0**-50  # |rho| is clamped here (omega >= 4e-8): derivatives stay finite
# angular integral (ReLU): nodes by omega = arccos|rho|, and when to expand from rho = +-1
# Angular integral (ReLU) by omega = arccos|rho|: (omega >=, rule, Gauss-Legendre nodes). "far": nodes in
# t = tan(theta/2); "log": in y = -log(1 - t), which resolves the layer where theta -> pi/2 at any width;
# below _OMEGA_NEAR the integral is expanded from rho = +-1 ("near", graded panels).
_BUCKETS = ((1.2, "far", 6), (0.8, "far", 8), (0.45, "far", 12), (0.3, "far", 16), (1e-3, "log", 32))
_OMEGA_NEAR = 1e-3
_NEAR_PANELS, _NEAR_NODES = 4, 6


# ---- quadratures in the patch coefficient c -----------------------------------------------------------
@dataclass(frozen=True)
class _CoefficientQuadrature:
    """Nodes/weights of one patch coefficient c (zeta or 1 - zeta)."""

    nodes: np.ndarray
    weights: np.ndarray
    uniform: tuple[float, float] | None  # c ~ U[l, u]: Gaussian averages in closed form
    abs_min: float  # min |c| on the support (0 if it straddles 0)
    abs_max: float


def _gauss_legendre(n: int, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.legendre.leggauss(n)
    return lo + (hi - lo) * (x + 1) / 2, w * (hi - lo) / 2


def _beta_split_quadrature(a: float, b: float, y_split: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Jacobi panels on [0, y_s] and [y_s, 1] for Beta(a, b): exact endpoint weights, smooth split."""
    log_b = special.betaln(a, b)
    x, w = special.roots_jacobi(n, 0.0, a - 1.0)  # weight (1 + x)^(a - 1) on the left panel
    y_left = y_split * (x + 1) / 2
    w_left = w * np.exp(a * np.log(y_split / 2) + (b - 1) * np.log1p(-y_left) - log_b)
    x, w = special.roots_jacobi(n, b - 1.0, 0.0)  # weight (1 - x)^(b - 1) on the right panel
    y_right = y_split + (1 - y_split) * (x + 1) / 2
    w_right = w * np.exp(b * np.log((1 - y_split) / 2) + (a - 1) * np.log(y_right) - log_b)
    return np.concatenate([y_left, y_right]), np.concatenate([w_left, w_right])


def _coefficient_quadrature(zeta: ZetaDistribution, patch: int, n: int) -> _CoefficientQuadrature:
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
            z1, w1 = _gauss_legendre(n, zeta.lo, 1.0)
            z2, w2 = _gauss_legendre(n, 1.0, zeta.hi)
            z, w = np.concatenate([z1, z2]), np.concatenate([w1, w2])
        else:
            z, w = _gauss_legendre(n, zeta.lo, zeta.hi)
        w = w / (zeta.hi - zeta.lo)
    elif isinstance(zeta, ScaledBeta) and straddle:
        y, w = _beta_split_quadrature(zeta.a, zeta.b, (1.0 - zeta.lo) / (zeta.hi - zeta.lo), n)
        z = zeta.lo + (zeta.hi - zeta.lo) * y
    else:
        z, w = zeta.quadrature(n)
    z = np.asarray(z, dtype=np.float64)
    c = 1.0 - z if flip else z
    abs_min = 0.0 if straddle else min(abs(lo), abs(hi))
    return _CoefficientQuadrature(c, np.asarray(w, np.float64), uniform, abs_min, max(abs(lo), abs(hi)))


def _moment_table(zeta: ZetaDistribution, max_degree: int) -> np.ndarray:
    """M[j, k] = E[zeta^j (1 - zeta)^k] for j + k <= max_degree, by a quadrature exact at that degree."""
    z, w = zeta.quadrature(max_degree // 2 + 2)
    out = np.zeros((max_degree + 1, max_degree + 1))
    for j in range(max_degree + 1):
        for k in range(max_degree + 1 - j):
            out[j, k] = float(np.sum(w * z**j * (1 - z) ** k))
    return out


# ---- Isserlis tables for polynomial activations -------------------------------------------------------
def _double_factorial(n: int) -> int:
    return 1 if n <= 0 else n * _double_factorial(n - 2)


def _degree(poly) -> int:
    return max((j for j, s in enumerate(poly) if s != 0), default=0)


def _univariate_terms(poly) -> dict[tuple[int, int], float]:
    """E[poly(mu + x)], x ~ N(0, v): {(p, q): coef} meaning sum coef mu^p v^q."""
    terms: dict[tuple[int, int], float] = defaultdict(float)
    for j, s in enumerate(poly):
        if s != 0:
            for a in range(0, j + 1, 2):
                terms[(j - a, a // 2)] += s * math.comb(j, a) * _double_factorial(a - 1)
    return dict(terms)


def _pair_terms(poly) -> dict[tuple[int, int, int, int, int], float]:
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
                                   * _double_factorial(a - i - 1) * _double_factorial(b - i - 1))
                        terms[(i, j - a, (a - i) // 2, k - b, (b - i) // 2)] += (
                            sj * sk * math.comb(j, a) * math.comb(k, b) * central)
    return dict(terms)


def _derivative(poly) -> tuple[float, ...]:
    return tuple(j * s for j, s in enumerate(poly))[1:] or (0.0,)


# ---- per-config constants -------------------------------------------------------------------------------
class _Schedule:
    """alpha, beta, kappa2 and E||y||^2 per configuration and patch kind (rule patch / N(0, I) patch)."""

    def __init__(self, data: MultiPatchData, alphas, betas, targets, device):
        self.alpha = torch.as_tensor(np.asarray(alphas, dtype=np.float64), device=device)
        self.beta = torch.as_tensor(np.asarray(betas, dtype=np.float64), device=device)
        self.C = self.alpha.numel()
        a, b, d = self.alpha, self.beta, float(data.d)
        paper = torch.tensor([Target.parse(t) is Target.PAPER for t in targets], dtype=DTYPE, device=device)
        mom = _moment_table(data.zeta, 2)
        ec2 = torch.tensor([mom[2, 0], mom[0, 2]], dtype=DTYPE, device=device)
        self.s2 = a**2 + b**2
        self.kappa_rule = paper * (1 + b)  # (C,)
        self.const_rule = (a**2 / b**4)[:, None] * ec2 + (paper * d * (1 + 1 / b) ** 2)[:, None]  # (C, 2)
        self.kappa_noise = paper * (self.s2 / b**2 + b) + (1 - paper) * a**2 / b**2
        self.const_noise = d * a**2 / b**4 + paper * d * (1 + 1 / b) ** 2

    def constants(self, P: int) -> torch.Tensor:
        return torch.cat([self.const_rule, self.const_noise[:, None].expand(-1, P - 2)], 1)


# ---- polynomial activations ----------------------------------------------------------------------------
class _PolyEvaluator:
    """Exact loss terms for polynomial activations (one polynomial per config, any mix of degrees)."""

    def __init__(self, polys, data: MultiPatchData, sched: _Schedule, device):
        self.sched, self.P = sched, data.n_patches
        polys = [tuple(float(s) for s in p) for p in polys]
        deg = max(max(_degree(p) for p in polys), 1)
        self.monos = [(p, q) for q in range(deg // 2 + 2) for p in range(deg + 2 - 2 * q)]
        index = {mono: e for e, mono in enumerate(self.monos)}
        nm, n_i, C = len(self.monos), deg + 1, sched.C
        mom = _moment_table(data.zeta, 2 * deg + 2)
        alpha, beta2 = sched.alpha.cpu().numpy(), (sched.beta**2).cpu().numpy()
        s2, kr, kn = sched.s2.cpu().numpy(), sched.kappa_rule.cpu().numpy(), sched.kappa_noise.cpu().numpy()
        moment = (lambda k: mom[k, 0], lambda k: mom[0, k])  # E[c^k], c = zeta / 1 - zeta
        lam = np.zeros((C, 3, n_i, nm, nm))  # kinds: 0 = u patch, 1 = v patch, 2 = N(0, I) patch
        cross = np.zeros((C, 3, nm))
        mean = np.zeros((C, 2, nm))
        joint = np.zeros((C, nm, nm))
        for c, poly in enumerate(polys):
            pair, uni = _pair_terms(poly), _univariate_terms(poly)
            uni_d = _univariate_terms(_derivative(poly))
            for kind in range(3):
                rule = kind < 2
                var = beta2[c] if rule else s2[c]
                ek = moment[kind] if rule else (lambda k: 1.0 if k == 0 else 0.0)
                for (i, pr, qr, ps, qs), coef in pair.items():
                    e = pr + ps
                    lam[c, kind, i, index[(pr, qr)], index[(ps, qs)]] += (
                        coef * alpha[c] ** e * var ** (qr + qs + i) * ek(e))
                for (p, q), coef in uni.items():
                    if rule:  # (mu / beta^2) E[sigma | c] -> gamma^(p+1) D^q
                        cross[c, kind, index[(p + 1, q)]] += (
                            coef * alpha[c] ** (p + 1) * var**q * ek(p + 1) / var)
                        mean[c, kind, index[(p + 1, q)]] += coef * alpha[c] ** p * var**q * ek(p)
                for (p, q), coef in uni_d.items():  # kappa2 D E[sigma' | c] -> gamma^p D^(q+1)
                    kap = kr[c] if rule else kn[c]
                    cross[c, kind, index[(p, q + 1)]] += kap * coef * alpha[c] ** p * var**q * ek(p)
            for (p, q), coef in uni.items():  # E[m_1 m_2] with m_p = sum_r gamma_r E[sigma(z_r) | zeta]
                for (p2, q2), coef2 in uni.items():
                    joint[c, index[(p + 1, q)], index[(p2 + 1, q2)]] += (
                        coef * coef2 * alpha[c] ** (p + p2) * beta2[c] ** (q + q2) * mom[p, p2])
        kinds = [0, 1] + [2] * (self.P - 2)
        self.lam = torch.as_tensor(lam[:, kinds], dtype=DTYPE, device=device)  # (C, P, n_i, nm, nm)
        self.cross = torch.as_tensor(cross[:, kinds], dtype=DTYPE, device=device)  # (C, P, nm)
        self.mean_coef = torch.as_tensor(mean, dtype=DTYPE, device=device)
        self.joint = torch.as_tensor(joint, dtype=DTYPE, device=device)
        self.lam_rule = self.lam[:, :2]
        self.n_i = n_i
        self.p_pow = torch.tensor([p for p, _ in self.monos], dtype=DTYPE, device=device)
        self.q_pow = torch.tensor([q for _, q in self.monos], dtype=DTYPE, device=device)
        self.p_down, self.q_down = (self.p_pow - 1).clamp(min=0), (self.q_pow - 1).clamp(min=0)
        self.i1 = torch.arange(1, n_i + 1, dtype=DTYPE, device=device)[:, None, None]
        self.const = sched.constants(self.P)

    def _monomials(self, gamma, D):
        """V[..., r, e] = gamma_r^p D_r^q for the monomials e = (p, q); also gamma^p and D^q."""
        gp = gamma[..., None] ** self.p_pow
        dq = D[..., None] ** self.q_pow
        return gp * dq, gp, dq

    def _gram_powers(self, G, start: int):
        out, Gi = [], torch.ones_like(G) if start == 0 else G
        for _ in range(self.n_i):
            out.append(Gi)
            Gi = Gi * G
        return torch.stack(out, 2)  # (C, P, n_i, m, m): G^(i + start)

    def _full_gamma(self, G, gamma):
        D = torch.diagonal(G, dim1=-2, dim2=-1)
        gam = torch.cat([gamma, torch.zeros_like(D[:, 2:])], 1) if G.shape[1] > 2 else gamma
        return D, gam

    def value(self, G, gamma) -> torch.Tensor:
        """(C, P) per-patch losses (differentiable torch code)."""
        D, gam = self._full_gamma(G, gamma)
        V = self._monomials(gam, D)[0]
        H = torch.einsum("cpre,cpirs,cpsf->cpief", V, self._gram_powers(G, 1), V)
        quad = (H * self.lam).sum((-1, -2, -3))
        return quad - 2 * (V.sum(-2) * self.cross).sum(-1) + self.const

    def value_and_grad(self, G, gamma):
        """(C,) losses, S = dL/dG (C, P, m, m; symmetric, entries of G independent), dL/dgamma (C, 2, m)."""
        D, gam = self._full_gamma(G, gamma)
        V, gp, dq = self._monomials(gam, D)
        Gp = self._gram_powers(G, 0)  # G^i, i = 0..n_i-1
        Gq = Gp * G[:, :, None]  # G^(i+1)
        VL = V[:, :, None] @ self.lam  # (C, P, n_i, m, nm): V Lam_i
        K = VL @ V[:, :, None].transpose(-1, -2)  # V Lam_i V^T
        loss = (Gq * K).sum((-1, -2, -3)) - 2 * (V.sum(-2) * self.cross).sum(-1) + self.const
        S = (self.i1 * Gp * K).sum(2)  # explicit d/dG_rs of sum_i <G^(i+1), V Lam_i V^T> (Lam_i symmetric)
        dV = 2 * (Gq @ VL).sum(2) - 2 * self.cross[:, :, None, :]
        Vg = self.p_pow * gam[..., None] ** self.p_down * dq  # d V / d gamma
        Vd = self.q_pow * gp * D[..., None] ** self.q_down  # d V / d D
        S = S + torch.diag_embed((dV * Vd).sum(-1))
        return loss.sum(-1), S, (dV * Vg).sum(-1)[:, :2]

    def psi(self, G, gamma):
        G2, D = G[:, :2], torch.diagonal(G[:, :2], dim1=-2, dim2=-1)
        V = self._monomials(gamma, D)[0]
        Sv = V.sum(-2)  # (C, 2, nm)
        mean = (Sv * self.mean_coef).sum((-1, -2))
        Vt = V * gamma[..., None]
        H = torch.einsum("cpre,cpirs,cpsf->cpief", Vt, self._gram_powers(G2, 0), Vt)
        second = (H * self.lam_rule).sum((-1, -2, -3, -4))
        second = second + 2 * torch.einsum("ce,cef,cf->c", Sv[:, 0], self.joint, Sv[:, 1])
        return mean, second - mean**2


# ---- ReLU -------------------------------------------------------------------------------------------------
def _npdf(x):
    return torch.exp(-0.5 * x * x) / _SQRT_2PI


class _ReluEvaluator:
    """Exact loss terms for sigma = relu (see the module docstring for the integral representation)."""

    def __init__(self, data: MultiPatchData, sched: _Schedule, device, zeta_order: int = ZETA_ORDER,
                 angle_scale: int = 1):
        self.sched, self.P, self.device = sched, data.n_patches, device
        quads = [_coefficient_quadrature(data.zeta, p, zeta_order) for p in range(2)]
        n = max(q.nodes.size for q in quads)
        nodes, weights = np.zeros((2, n)), np.zeros((2, n))
        for p, q in enumerate(quads):  # zero-weight padding: both patches share one shape
            nodes[p], weights[p, : q.nodes.size] = q.nodes[0], q.weights
            nodes[p, : q.nodes.size] = q.nodes
        t = lambda x: torch.as_tensor(np.asarray(x, dtype=np.float64), device=device)  # noqa: E731
        self.c_nodes, self.c_weights = t(nodes), t(weights)
        self.uniform = all(q.uniform is not None for q in quads)
        if self.uniform:
            lo, hi = np.array([q.uniform[0] for q in quads]), np.array([q.uniform[1] for q in quads])
            mom = lambda k: (hi ** (k + 1) - lo ** (k + 1)) / ((k + 1) * (hi - lo))  # noqa: E731
            # per rule patch: lo, hi, max c^2, then the series of E exp(-c^2 x^2) and E c^2 exp(-c^2 x^2)
            # in y = -x^2 (used for x^2 max c^2 < 4e-4: 7 terms reach 1e-25)
            series = [[mom(2 * j)[p] / math.factorial(j) for j in range(7)]
                      + [mom(2 * j + 2)[p] / math.factorial(j) for j in range(7)] for p in range(2)]
            self.u_table = t(np.concatenate([np.stack([lo, hi, np.maximum(lo**2, hi**2)], 1), series], 1))
            self.series_powers = t(np.arange(7.0))
        self.c_abs_min = t([q.abs_min for q in quads])
        self.c_abs_max = t([q.abs_max for q in quads])
        zj, wj = data.zeta.quadrature(zeta_order)
        self.joint_nodes, self.joint_weights = t(np.stack([zj, 1 - zj])), t(wj)
        self.buckets = [(om, rule, *map(t, np.polynomial.legendre.leggauss(k * angle_scale)))
                        for om, rule, k in _BUCKETS]
        self.near_x, self.near_w = map(t, np.polynomial.legendre.leggauss(_NEAR_NODES * angle_scale))
        self._index_cache: dict = {}

    # -- E_c exp(-c^2 Q / 2) and its Q-derivative, per pair (patch index per element) --------------------
    def _gauss_average(self, Q, patch):
        """h(Q) = E_c exp(-c^2 Q/2) and h'(Q) = -E_c[c^2 exp(-c^2 Q/2)]/2; Q (n, K), patch (n,)."""
        if not self.uniform:
            c2 = (self.c_nodes**2)[patch][:, None, :]  # (n, 1, nc)
            w = self.c_weights[patch][:, None, :]
            e = torch.exp(-0.5 * Q[..., None] * c2) * w
            return e.sum(-1), -0.5 * (e * c2).sum(-1)
        table = self.u_table[patch]  # (n, 3 + 14): lo, hi, max c^2, series coefficients of h and m2
        lo, hi, cmax2 = table[:, 0:1], table[:, 1:2], table[:, 2:3]
        x2 = 0.5 * Q
        small = x2 * cmax2 < 4e-4
        any_small = bool(small.any())
        x2s = torch.where(small, 1.0, x2) if any_small else x2
        xs = torch.sqrt(x2s)
        h = (math.sqrt(math.pi) / 2) * (torch.erf(hi * xs) - torch.erf(lo * xs)) / (xs * (hi - lo))
        edge = lo * torch.exp(-lo * lo * x2s) - hi * torch.exp(-hi * hi * x2s)
        m2 = (edge + h * (hi - lo)) / (2 * x2s * (hi - lo))  # E[c^2 exp(-c^2 x^2)], by parts
        if any_small:  # the closed forms cancel for x |c| << 1: Taylor series in y = -x^2 there (7 terms)
            powers = (-x2)[..., None] ** self.series_powers  # (n, K, 7)
            series = powers @ table[:, 3:].reshape(-1, 2, 7).transpose(-1, -2)  # (n, K, 2)
            h, m2 = torch.where(small, series[..., 0], h), torch.where(small, series[..., 1], m2)
        return h, -0.5 * m2

    def _angular_bucket(self, r, A, B, patch, rule: str, x, w):
        """The angular integral I over one bucket of pairs (1-D inputs) and dI/dr, dI/dA, dI/dB.

        far/log: I = int_0^r (r - tau) E_c phi_2(cA, cB; tau) dtau, tau = sin theta, t = tan(theta/2)
        (log: in y = -log(1 - t)); near: I = int_r^1 (tau - r) E_c phi_2 dtau, tau = cos theta,
        t = tan(theta/2) on four graded panels towards the layer at t ~ c |A - B| / 2. dI/dr is Price's
        identity (the same integral without (r - tau)); dI/dA, dI/dB follow from
        dQ/dA = 2 (A - B tau) / (1 - tau^2).
        """
        rm, rp = (1 - r)[:, None], (1 + r)[:, None]
        dA = A - B
        if rule == "near":
            T = torch.sqrt(rm * rp) / rp  # tan(omega / 2)
            t_min = torch.maximum(self.c_abs_min[patch][:, None] * dA.abs()[:, None] / 4, T * 1e-6)
            g = (T / t_min).pow(1.0 / (_NEAR_PANELS - 1)).clamp(2.0, 100.0)
            edges = torch.cat([torch.zeros_like(T)] + [T / g**k for k in range(_NEAR_PANELS - 1, -1, -1)], -1)
            lo, hi = edges[:, :-1, None], edges[:, 1:, None]
            t = (lo + (hi - lo) * (1 + x) / 2).flatten(1)
            wt = ((hi - lo) * w / 2).flatten(1)
            u = 1 + t * t
            tau, omt, omt2 = (1 - t * t) / u, 2 * t * t / u, (2 * t / u) ** 2
            gap = 2 * (T - t) * (T + t) / ((1 + T * T) * u)
            sign = -1.0
        else:
            T = r[:, None] / (1 + torch.sqrt(rm * rp))  # tan(asin(r) / 2)
            if rule == "log":
                Y = -torch.log1p(-T)
                y = Y * (1 + x) / 2
                one_m_t = torch.exp(-y)  # 1 - t, exact
                t = 1 - one_m_t
                wt = Y * w / 2 * one_m_t  # dt = (1 - t) dy
                T_m_t = one_m_t - (1 - T)
            else:
                t = T * (1 + x) / 2
                one_m_t, wt, T_m_t = 1 - t, T * w / 2, T * (1 - x) / 2
            u = 1 + t * t
            tau, omt, omt2 = 2 * t / u, one_m_t**2 / u, (one_m_t * (1 + t) / u) ** 2
            gap = 2 * T_m_t * (1 - T * t) / ((1 + T * T) * u)
            sign = 1.0
        wt = wt * 2 / u / (2 * math.pi)  # d theta = 2 dt / (1 + t^2); 1 / (2 pi) of phi_2
        Q = ((dA * dA)[:, None] + (2 * A * B)[:, None] * omt) / omt2
        h, hp = self._gauss_average(Q.clamp(min=0.0), patch)
        wh = wt * h
        I = (wh * gap).sum(-1)
        I_r = sign * wh.sum(-1)
        whp = wt * gap * hp * 2 / omt2
        s0, s1 = whp.sum(-1), (whp * tau).sum(-1)
        return I, I_r, A * s0 - B * s1, B * s0 - A * s1

    def _angular(self, r, A, B, patch, near):
        """I and partials for all pairs (1-D), bucketed by rule and number of nodes."""
        omega = torch.arccos(r)
        rest = ~near
        groups = [(near, "near", self.near_x, self.near_w)]
        for om, rule, x, w in self.buckets:
            sel = rest & (omega >= om)
            rest = rest & ~sel
            groups.append((sel, rule, x, w))
        out = [torch.zeros_like(r) for _ in range(4)]
        for sel, rule, x, w in groups:
            idx = sel.nonzero().flatten()
            if idx.numel() == 0:
                continue
            if idx.numel() == r.numel():
                return self._angular_bucket(r, A, B, patch, rule, x, w)
            res = self._angular_bucket(r[idx], A[idx], B[idx], patch[idx], rule, x, w)
            out = [o.index_put((idx,), v) for o, v in zip(out, res)]
        return tuple(out)

    def _near_base(self, rho, a_r, a_s, patch):
        """E_c of the rho = +-1 expansion of E[relu relu] per unit sigma_r sigma_s (1-D pair inputs)."""
        c, w = self.c_nodes[patch], self.c_weights[patch]  # (n, nc)
        sgn = torch.where(rho < 0, -torch.ones_like(rho), torch.ones_like(rho))[:, None]
        gap = (1 - rho.abs())[:, None]
        a = c * a_r[:, None]
        b = c * a_s[:, None] * sgn  # b' = sign(rho) a_s
        Pa, pa, Pb, pb = torch.special.ndtr(a), _npdf(a), torch.special.ndtr(b), _npdf(b)
        lower = a < b
        Pm, pm = torch.where(lower, Pa, Pb), torch.where(lower, pa, pb)
        plus = (1 + a * b) * Pm + torch.maximum(a, b) * pm - gap * Pm  # rho -> +1, b = a_s
        dP = Pa - Pb
        minus = torch.where(a > b, (gap - 1 - a * b) * dP + a * pb - b * pa, torch.zeros_like(dP))  # b = -a_s
        return (w * torch.where(sgn > 0, plus, minus)).sum(-1)

    def _pair_index(self, C: int, m: int, device):
        """Upper-triangle neuron pairs (r < s) and the rule-patch index of each flattened (C, 2, pair)."""
        key = (C, m, str(device))
        if key not in self._index_cache:
            iu = torch.triu_indices(m, m, 1, device=device)
            patch = torch.arange(2, device=device)[None, :, None].expand(C, 2, iu.shape[1]).flatten()
            self._index_cache[key] = (iu[0], iu[1], patch)
        return self._index_cache[key]

    def _rule(self, G, gamma, partials: bool):
        """Univariate and pairwise expectations of the two rule patches; with ``partials`` also the
        derivatives of the pair values U in (rho, A_r, A_s) needed by the hand-written gradient."""
        C, _, m, _ = G.shape
        alpha, beta = self.sched.alpha[:, None, None], self.sched.beta[:, None, None]
        D = torch.diagonal(G, dim1=-2, dim2=-1)
        pos = D > 0
        n = torch.sqrt(torch.where(pos, D, torch.ones_like(D)))
        A = torch.where(pos, alpha * gamma / (beta * n), torch.zeros_like(D))
        w = self.c_weights[None, :, :, None]
        cw = (self.c_nodes * self.c_weights)[None, :, :, None]
        a = self.c_nodes[None, :, :, None] * A[:, :, None, :]  # (C, 2, nc, m)
        Phi, phi = torch.special.ndtr(a), _npdf(a)
        Eu = a * Phi + phi  # E relu(z) / sigma
        st = {"D": D, "n": n, "A": A, "pos": pos, "Eu": Eu, "a": a, "Phi": Phi, "phi": phi}
        st["e2"] = (w * ((1 + a * a) * Phi + a * phi)).sum(2)  # E_c E[relu^2] / sigma^2
        r, s, patch = self._pair_index(C, m, G.device)
        st["r"], st["s"] = r, s
        nn = n[..., r] * n[..., s] * (pos[..., r] & pos[..., s])
        safe = torch.where(nn > 0, nn, torch.ones_like(nn))
        rho = torch.where(nn > 0, G[..., r, s] / safe, torch.zeros_like(nn)).clamp(-1.0, 1.0)
        st["rho"], st["nn"] = rho, nn
        if partials:
            st["de2"] = (cw * 2 * Eu).sum(2)
        if r.numel() == 0:
            st["U"] = rho
            return st
        Ebar = (w * Eu).transpose(-1, -2) @ Eu
        Pbar = (w * Phi).transpose(-1, -2) @ Phi
        sgn = torch.where(rho < 0, -torch.ones_like(rho), torch.ones_like(rho))
        r_abs = rho.abs().clamp(max=_RHO_MAX)
        Ar, As = A[..., r], A[..., s]
        Bp = sgn * As
        omega = torch.arccos(r_abs)
        near = omega < _OMEGA_NEAR
        shape = rho.shape
        I, I_r, I_A, I_B = (v.reshape(shape) for v in self._angular(
            r_abs.flatten(), Ar.flatten(), Bp.flatten(), patch, near.flatten()))
        U = Ebar[..., r, s] + rho * Pbar[..., r, s] + I
        if partials:
            Z = (cw * Phi).transpose(-1, -2) @ Eu  # d Ebar_rs / dA_r = Z[r, s]
            Y = (cw * phi).transpose(-1, -2) @ Phi  # d Pbar_rs / dA_r = Y[r, s]
            U_rho = Pbar[..., r, s] + sgn * I_r
            U_Ar = Z[..., r, s] + rho * Y[..., r, s] + I_A
            U_As = Z[..., s, r] + rho * Y[..., s, r] + sgn * I_B
        if bool(near.any()):
            idx = near.flatten().nonzero().flatten()
            args = [v.flatten()[idx] for v in (rho, Ar, As)]
            pidx = patch[idx]
            if partials:
                with torch.inference_mode(False), torch.enable_grad():  # a local autograd graph
                    leaves = [v.detach().clone().requires_grad_(True) for v in args]
                    base = self._near_base(*leaves, pidx.clone())
                    grads = torch.autograd.grad(base.sum(), leaves)
                fix = [v.flatten().index_put((idx,), g + o.flatten()[idx]) for v, g, o in zip(
                    (U_rho, U_Ar, U_As), grads, (sgn * I_r, I_A, sgn * I_B))]
                U_rho, U_Ar, U_As = (v.reshape(shape) for v in fix)
                base = base.detach()
            else:
                base = self._near_base(*args, pidx)
            U = U.flatten().index_put((idx,), base + I.flatten()[idx]).reshape(shape)
        st["U"] = U
        if partials:
            st["U_rho"], st["U_Ar"], st["U_As"] = U_rho, U_Ar, U_As
        return st

    def _noise(self, G):
        """Patches p >= 3: z ~ N(0, s^2 G); E[relu relu] = s^2 n_r n_s J / (2 pi),
        J = sin w + (pi - w) cos w (the arc-cosine kernel)."""
        m = G.shape[-1]
        D = torch.diagonal(G, dim1=-2, dim2=-1)
        pos = D > 0
        n = torch.sqrt(torch.where(pos, D, torch.ones_like(D)))
        r, s = self._pair_index(G.shape[0], m, G.device)[:2]
        nn = n[..., r] * n[..., s] * (pos[..., r] & pos[..., s])
        safe = torch.where(nn > 0, nn, torch.ones_like(nn))
        rho = torch.where(nn > 0, G[..., r, s] / safe, torch.zeros_like(nn)).clamp(-_RHO_MAX, _RHO_MAX)
        omega = torch.arccos(rho)
        J = torch.sin(omega) + (math.pi - omega) * torch.cos(omega)
        return D, n, r, s, rho, nn, omega, J

    def value(self, G, gamma) -> torch.Tensor:
        """(C, P) per-patch losses (differentiable torch code)."""
        st = self._rule(G[:, :2], gamma, partials=False)
        beta2 = (self.sched.beta**2)[:, None]
        w = self.c_weights[None, :, :, None]
        D = st["D"]
        pairs = (G[:, :2][..., st["r"], st["s"]] * st["nn"] * st["U"]).sum(-1)
        X = (w * (st["a"] * st["Eu"] + self.sched.kappa_rule[:, None, None, None] * st["Phi"])).sum(2)
        out = beta2 * ((D * D * st["e2"]).sum(-1) + 2 * pairs) - 2 * (D * X).sum(-1) + self.sched.const_rule
        if self.P == 2:
            return out
        D, n, r, s, rho, nn, omega, J = self._noise(G[:, 2:])
        s2 = self.sched.s2[:, None]
        quad = s2 * (D * D).sum(-1) / 2 + 2 * s2 * (G[:, 2:][..., r, s] * nn * J).sum(-1) / (2 * math.pi)
        noise = quad - self.sched.kappa_noise[:, None] * D.sum(-1) + self.sched.const_noise[:, None]
        return torch.cat([out, noise], 1)

    def value_and_grad(self, G, gamma):
        """(C,) losses, S = dL/dG (C, P, m, m), dL/dgamma (C, 2, m) by Price's and Stein's identities."""
        C, P, m, _ = G.shape
        sched = self.sched
        st = self._rule(G[:, :2], gamma, partials=True)
        beta2 = (sched.beta**2)[:, None, None]
        ab = (sched.alpha / sched.beta)[:, None, None]
        kap = sched.kappa_rule[:, None, None, None]
        w = self.c_weights[None, :, :, None]
        cw = (self.c_nodes * self.c_weights)[None, :, :, None]
        D, n, A, pos = st["D"], st["n"], st["A"], st["pos"]
        a, Eu, Phi, phi = st["a"], st["Eu"], st["Phi"], st["phi"]
        r, s, rho, nn, U = st["r"], st["s"], st["rho"], st["nn"], st["U"]
        Grs = G[:, :2][..., r, s]
        X = (w * (a * Eu + kap * Phi)).sum(2)
        dX = (cw * (Eu + a * Phi + kap * phi)).sum(2)
        loss = ((beta2 * D * D * st["e2"]).sum(-1) + 2 * (beta2[..., 0] * (Grs * nn * U).sum(-1))
                - 2 * (D * X).sum(-1) + sched.const_rule)
        # per-neuron derivatives in n_r (holding gamma) and gamma_r; A_r = (alpha/beta) gamma_r / n_r
        g_n = (4 * beta2 * D * n * st["e2"] - beta2 * D * D * st["de2"] * A / n
               - 4 * n * X + 2 * D * dX * A / n)
        g_gamma = (beta2 * D * D * st["de2"] - 2 * D * dX) * ab / n
        S = torch.zeros((C, P, m, m), dtype=DTYPE, device=G.device)
        if r.numel():
            coef = 2 * beta2 * Grs  # d/dU of the pair term 2 beta^2 G_rs n_r n_s U
            S_pair = 2 * beta2 * (nn * U + Grs * st["U_rho"])  # d/dG_rs (rho depends on it)
            base = coef * (U - rho * st["U_rho"])
            g_n = g_n.index_add(-1, r, base * n[..., s] - coef * n[..., s] * A[..., r] * st["U_Ar"])
            g_n = g_n.index_add(-1, s, base * n[..., r] - coef * n[..., r] * A[..., s] * st["U_As"])
            g_gamma = g_gamma.index_add(-1, r, coef * n[..., s] * st["U_Ar"] * ab)
            g_gamma = g_gamma.index_add(-1, s, coef * n[..., r] * st["U_As"] * ab)
            S[:, :2, r, s] = S_pair / 2
            S[:, :2, s, r] = S_pair / 2
        g_n, g_gamma = g_n * pos, g_gamma * pos
        S[:, :2] = S[:, :2] + torch.diag_embed(g_n / (2 * n))  # dD = 2 n dn
        total = loss.sum(-1)
        if P > 2:
            Dn, nz, rz, sz, rhoz, nnz, omz, J = self._noise(G[:, 2:])
            s2 = sched.s2[:, None, None]
            Gz = G[:, 2:][..., rz, sz]
            noise = (s2[..., 0] * (Dn * Dn).sum(-1) / 2 + s2[..., 0] * (Gz * nnz * J).sum(-1) / math.pi
                     - sched.kappa_noise[:, None] * Dn.sum(-1) + sched.const_noise[:, None])
            total = total + noise.sum(-1)
            dJ = (math.pi - omz)  # dJ/drho
            S_pair = s2 * (nnz * J + Gz * dJ) / math.pi
            gnz = torch.zeros_like(Dn)
            base = s2 * Gz * (J - rhoz * dJ) / math.pi
            gnz = gnz.index_add(-1, rz, base * nz[..., sz]).index_add(-1, sz, base * nz[..., rz])
            Sz = torch.zeros((C, P - 2, m, m), dtype=DTYPE, device=G.device)
            Sz[..., rz, sz] = S_pair / 2
            Sz[..., sz, rz] = S_pair / 2
            posz = Dn > 0
            Sz = Sz + torch.diag_embed((gnz / (2 * nz)) * posz + s2 * Dn - sched.kappa_noise[:, None, None])
            S[:, 2:] = Sz
        return total, S, g_gamma

    def psi(self, G, gamma):
        st = self._rule(G[:, :2], gamma, partials=False)
        beta = self.sched.beta[:, None, None]
        w = self.c_weights[None, :, :, None]
        scale = gamma * beta * st["n"] * st["pos"]  # gamma_r sigma_r
        mean = (scale * (w * st["Eu"]).sum(2)).sum((-1, -2))
        r, s = st["r"], st["s"]
        second = (gamma**2 * beta**2 * st["D"] * st["e2"]).sum((-1, -2))
        second = second + 2 * (gamma[..., r] * gamma[..., s] * beta**2 * st["nn"] * st["U"]).sum((-1, -2))
        a = self.joint_nodes[None, :, :, None] * st["A"][:, :, None, :]  # both patches at the same zeta
        m_p = ((a * torch.special.ndtr(a) + _npdf(a)) * scale[:, :, None, :]).sum(-1)  # (C, 2, nj)
        second = second + 2 * (m_p[:, 0] * m_p[:, 1] * self.joint_weights).sum(-1)
        return mean, second - mean**2


# ---- a set of configurations -------------------------------------------------------------------------
class PopulationObjective:
    """The exact loss (eq. (2)) of C configurations (activation, alpha, beta, target) on one ``data``.

    ``value_and_grad(G, gamma)`` -> ((C,) losses, S (C, P, m, m), dL/dgamma (C, 2, m)) with the loss a
    function F(G, gamma) of the per-patch Gram matrices and rule-patch feature projections; then
    dL/dW = 2 S W + dL/dgamma f^T. Configurations are grouped internally (all polynomial activations in one
    batch, ReLU in another).
    """

    def __init__(self, activations, data: MultiPatchData, alphas, betas, targets, device,
                 zeta_order: int = ZETA_ORDER, angle_scale: int = 1):
        data = _check_data(data)
        if isinstance(activations, str | Activation) or not len(activations):
            raise ValueError("activations must be a non-empty sequence, one activation per configuration")
        acts = [get_activation(a) for a in activations]
        alphas, betas, targets = _check_schedule(alphas, betas, targets, len(acts))
        zeta_order, angle_scale = _check_order(zeta_order), check_int("angle_scale", angle_scale)
        self.C, self.data = len(acts), data
        self.groups = []
        poly = [i for i, a in enumerate(acts) if a.poly is not None]
        relu = [i for i, a in enumerate(acts) if a.poly is None]
        for a in acts:
            if a.poly is None and a.name != "relu":
                raise ValueError(f"activation {a.name!r} has no exact population loss: use relu or a "
                                 "polynomial activation (Activation.poly)")
        for idx, make in ((poly, lambda s: _PolyEvaluator([acts[i].poly for i in poly], data, s, device)),
                          (relu, lambda s: _ReluEvaluator(data, s, device, zeta_order, angle_scale))):
            if idx:
                sched = _Schedule(data, [alphas[i] for i in idx], [betas[i] for i in idx],
                                  [targets[i] for i in idx], device)
                self.groups.append((torch.tensor(idx, device=device), make(sched)))
        self.order = torch.cat([idx for idx, _ in self.groups])
        self.single = len(self.groups) == 1

    def _scatter(self, parts):
        if self.single:
            return parts[0]
        cat = torch.cat(parts)
        out = torch.zeros((self.C, *cat.shape[1:]), dtype=cat.dtype, device=cat.device)
        return out.index_put((self.order,), cat)

    def value(self, G, gamma) -> torch.Tensor:
        """(C,) losses by differentiable torch code (reference for the hand-written gradient)."""
        return self._scatter([ev.value(G[idx], gamma[idx]).sum(-1) for idx, ev in self.groups])

    def value_and_grad(self, G, gamma):
        outs = [ev.value_and_grad(G[idx], gamma[idx]) if not self.single else ev.value_and_grad(G, gamma)
                for idx, ev in self.groups]
        return tuple(self._scatter([o[k] for o in outs]) for k in range(3))

    def psi(self, G, gamma):
        outs = [ev.psi(G[idx, :2], gamma[idx]) for idx, ev in self.groups]
        return tuple(self._scatter([o[k] for o in outs]) for k in range(2))


# ---- autograd bridge ---------------------------------------------------------------------------------------
def gram_and_projections(W: torch.Tensor, data: MultiPatchData) -> tuple[torch.Tensor, torch.Tensor]:
    """G = W W^T per patch (C, P, m, m) and gamma = <w_r, f> on the rule patches (C, 2, m); W (C, P, m, d)."""
    if not isinstance(W, torch.Tensor) or W.ndim != 4 or W.shape[1] != data.n_patches or W.shape[3] != data.d:
        raise ValueError(f"W must be a tensor of shape (C, {data.n_patches}, m, {data.d}), got "
                         f"{tuple(W.shape) if isinstance(W, torch.Tensor) else type(W).__name__}")
    feats = torch.as_tensor(data.features, dtype=DTYPE, device=W.device)
    return W @ W.transpose(-1, -2), torch.einsum("cpmd,pd->cpm", W[:, :2], feats)


class _ExactLoss(torch.autograd.Function):
    """L(W) with the hand-written gradient dL/dW = 2 S W + dL/dgamma f^T (first derivatives only)."""

    @staticmethod
    def forward(ctx, W, objective: PopulationObjective, feats):
        G, gamma = W @ W.transpose(-1, -2), torch.einsum("cpmd,pd->cpm", W[:, :2], feats)
        loss, S, g_gamma = objective.value_and_grad(G, gamma)
        grad = 2 * S @ W
        grad[:, :2] += g_gamma[..., None] * feats[None, :, None, :]
        ctx.save_for_backward(grad)
        return loss

    @staticmethod
    def backward(ctx, g):
        (grad,) = ctx.saved_tensors
        return g[:, None, None, None] * grad, None, None


# ---- validation and public API ---------------------------------------------------------------------------
def _check_data(data) -> MultiPatchData:
    if not isinstance(data, MultiPatchData):
        raise ValueError(f"data must be a MultiPatchData, got {type(data).__name__}")
    return data


def _check_net(net, data: MultiPatchData) -> TwoLayerScore:
    if not isinstance(net, TwoLayerScore):
        raise ValueError(f"net must be a TwoLayerScore, got {type(net).__name__}")
    if net.joint:
        raise ValueError("net must be a per-patch TwoLayerScore (eq. (1)); the exact loss does not cover "
                         "JointTwoLayerScore, whose neurons mix patches")
    if net.d != data.d or net.n_patches != data.n_patches:
        raise ValueError(f"net (d={net.d}, n_patches={net.n_patches}) does not fit data (d={data.d}, "
                         f"n_patches={data.n_patches})")
    return net


def _check_order(zeta_order) -> int:
    return check_int("zeta_order", zeta_order, minimum=2)


def _check_schedule(alphas, betas, targets, C: int):
    """alphas, betas: scalars or C values, each > 0; targets: one name or C names."""
    def seq(name, v):
        if isinstance(v, torch.Tensor):
            v = v.detach().cpu().numpy()
        try:
            arr = np.atleast_1d(np.asarray(v, dtype=np.float64))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must be a scalar or a sequence of {C} reals, got {v!r}") from exc
        if arr.ndim != 1 or arr.size not in (1, C):
            raise ValueError(f"{name} must be a scalar or a sequence of {C} values, got shape {arr.shape}")
        return np.broadcast_to(arr, (C,)).copy()

    alphas, betas = seq("alphas", alphas), seq("betas", betas)
    for a, b in zip(alphas, betas):
        check_alpha_beta(a, b)
    if isinstance(targets, str | Target):
        targets = [Target.parse(targets)] * C
    else:
        targets = [Target.parse(t) for t in targets]
        if len(targets) != C:
            raise ValueError(f"targets must be one name or a sequence of {C} names, got {len(targets)}")
    return alphas, betas, targets


def _check_weights(W, data: MultiPatchData) -> torch.Tensor:
    if not isinstance(W, torch.Tensor):
        W = torch.as_tensor(np.asarray(W, dtype=np.float64))
    if W.dtype != DTYPE:
        raise ValueError(f"W must be a float64 tensor, got {W.dtype}")
    if W.ndim != 4 or W.shape[1] != data.n_patches or W.shape[3] != data.d:
        raise ValueError(f"W must have shape (C, {data.n_patches}, m, {data.d}), got {tuple(W.shape)}")
    if not bool(torch.isfinite(W).all()):
        raise ValueError("W contains NaN or infinite values")
    return W


def _activations(activation, C: int) -> list[Activation]:
    if isinstance(activation, str | Activation):
        return [get_activation(activation)] * C
    acts = [get_activation(a) for a in activation]
    if len(acts) != C:
        raise ValueError(f"activation must be one name or a sequence of {C} names, got {len(acts)}")
    return acts


def population_loss(W, activation, data: MultiPatchData, alphas, betas, targets="paper", *,
                    zeta_order: int = ZETA_ORDER, angle_scale: int = 1) -> torch.Tensor:
    """Exact eq. (2) losses (C,) of weight sets W (C, P, m, d), config c at (alphas[c], betas[c], targets[c]).

    ``activation`` and ``targets``: one name for all configs or one per config. Differentiable in W (float64,
    hand-written first derivatives). ReLU accuracy knobs: ``zeta_order`` (c-quadrature nodes per panel) and
    ``angle_scale`` (multiplies the nodes of the angular integral); the defaults meet the documented bound.
    """
    data = _check_data(data)
    W = _check_weights(W, data)
    C = W.shape[0]
    acts = _activations(activation, C)
    alphas, betas, targets = _check_schedule(alphas, betas, targets, C)
    obj = PopulationObjective(acts, data, alphas, betas, targets, W.device, _check_order(zeta_order),
                              check_int("angle_scale", angle_scale))
    return _ExactLoss.apply(W, obj, torch.as_tensor(data.features, dtype=DTYPE, device=W.device))


def expected_loss(net: TwoLayerScore, data: MultiPatchData, alpha, beta, target="paper", *,
                  zeta_order: int = ZETA_ORDER, angle_scale: int = 1) -> torch.Tensor:
    """eq. (2) in expectation: E_{x_0, eps} sum_p ||s^(p)(x_t^(p)) - target^(p)||^2, constants included.

    The n, n_eps -> infinity limit of ``MonteCarloLoss`` (patches p >= 3 included, N(0, I) as in
    ``MultiPatchData``). A 0-d float64 tensor, differentiable in ``net.weights`` (first derivatives, written
    by hand; no double backward). ``target``: "paper" (eq. (2)
    as printed) or "score" (consistent DSM), as in ``theory.losses.Target``.
    """
    data = _check_data(data)
    net = _check_net(net, data)
    alpha, beta = check_alpha_beta(alpha, beta)
    return population_loss(net.weights[None], net.activation, data, [alpha], [beta], Target.parse(target),
                           zeta_order=zeta_order, angle_scale=angle_scale)[0]


def psi_moments(net: TwoLayerScore, data: MultiPatchData, alpha, beta, *,
                zeta_order: int = ZETA_ORDER) -> tuple[float, float]:
    """Exact (E[psi_t], Var[psi_t]) of Def 4.3 over x_t (the two rule patches share zeta, not eps)."""
    data = _check_data(data)
    net = _check_net(net, data)
    alpha, beta = check_alpha_beta(alpha, beta)
    obj = PopulationObjective([net.activation], data, [alpha], [beta], [Target.PAPER], net.device,
                              _check_order(zeta_order))
    with torch.no_grad():
        mean, var = obj.psi(*gram_and_projections(net.weights.detach()[None], data))
    return float(mean[0]), max(float(var[0]), 0.0)


def population_rule_error(net: TwoLayerScore, data: MultiPatchData, alpha, beta, *,
                          zeta_order: int = ZETA_ORDER) -> RuleError:
    """Def 4.3 exactly: bias = E[psi_t] - alpha/beta^2 (signed), variance = Var[psi_t], total E."""
    alpha, beta = check_alpha_beta(alpha, beta)
    mean, var = psi_moments(net, data, alpha, beta, zeta_order=zeta_order)
    return RuleError.from_moments(mean, var, alpha / beta**2)


def quadrature_error_estimate(net: TwoLayerScore, data: MultiPatchData, alpha, beta, target="paper") -> float:
    """|L - L_fine| / |L_fine|, L_fine with twice the c-quadrature and three times the angular nodes: an
    a-posteriori check of the ReLU quadratures at this net (polynomial activations are exact: ~1e-16)."""
    with torch.no_grad():
        base = float(expected_loss(net, data, alpha, beta, target))
        fine = float(expected_loss(net, data, alpha, beta, target, zeta_order=2 * ZETA_ORDER, angle_scale=3))
    return abs(base - fine) / max(abs(fine), 1e-300)


__all__ = ["expected_loss", "psi_moments", "population_rule_error", "population_loss", "PopulationObjective",
           "quadrature_error_estimate", "gram_and_projections", "ZETA_ORDER"]
