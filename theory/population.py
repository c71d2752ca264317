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
E[sigma(z_r) <w_r, eps>] = beta D_r E[sigma'(z_r)], not beta sum_s G_rs E[sigma'(z_r)]
(as a design note of ours once had it).
Constants E||y||^2: alpha^2 E[c^2]/beta^4 + d (1 + 1/beta)^2 ("paper") or alpha^2 E[c^2]/beta^4 ("score")
on a rule patch; d (alpha^2/beta^4 + (1 + 1/beta)^2) or d alpha^2/beta^4 on a patch p >= 3. So the loss is
F(G, gamma) and dL/dW = 2 S W + (dF/dgamma) f^T with S the symmetric derivative in G: GD never leaves
span(W(0), f), the basis of the span coordinates of ``theory.exact_gd``. Gradients are written by hand in
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

**Evaluation (ReLU).** A GD epoch at App. F size costs per-operation dispatch more than arithmetic, so the
pair terms take a fixed number of array operations whatever the mix of angular rules: the (pair, node)
entries of all pairs of all configurations form one flat array (a node-major block per bucket, cached until
a pair changes bucket), and all c-sums are two matrix products: E_c[f(c A_r) g(c A_s)] for every pair, and
per-neuron moments E_c[c^k Phi], E_c[c^k phi], which also give the c-average of the rho = +-1 closed form
(it depends on the smaller of c A_r, c A_s only). The kernel is written once against a small table of array
operations: torch for ``value`` (autograd, the reference of the hand-written gradient) and on other devices,
numpy (float64, ~4x cheaper dispatch) for ``value_and_grad`` on the CPU. At App. F size (d = 100, m = 20, one
thread) an exact GD epoch takes ~0.2-0.3 ms per network in batches of 4-8 random-init or trained nets and
~0.5 ms for one net; a net whose neurons are all nearly (anti)parallel (24 nodes per pair) ~0.8 ms.

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
from types import SimpleNamespace

import numpy as np
import torch
from scipy import special

from ._checks import DTYPE, check_alpha_beta, check_instance, check_int, check_schedule, check_zeta_order
from .data import MultiPatchData, check_data
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


def _through_torch(f):
    """A torch special function on a float64 numpy array (torch's kernels are vectorised, scipy's are not)."""
    return lambda x: f(torch.from_numpy(x)).numpy()


def _np_put(x, idx, v):
    x[idx] = v  # x is a fresh intermediate of the kernel
    return x


def _np_scatter(idx, v, n):
    out = np.zeros((*v.shape[:-1], n))
    out[..., idx] = v
    return out


# The ReLU kernel is written once against these operations. torch: any device, differentiable (``value``,
# the autograd reference of the hand-written gradient, and CUDA). numpy: the CPU path of ``value_and_grad``
# (float64 throughout; per-operation dispatch is ~4x cheaper than torch's on the small arrays of a GD epoch;
# erf and ndtr are torch's kernels on the same memory). ``stack`` is along a new first axis; ``take`` along
# the last. ``scatter_add(index, values, n)`` sums ``values`` (..., N) into (..., n); its index is
# backend-specific (torch: (N,) along the last axis; numpy: flat over all leading axes, for one bincount).
_TORCH_OPS = SimpleNamespace(
    name="torch", exp=torch.exp, sqrt=torch.sqrt, log=torch.log, log1p=torch.log1p, expm1=torch.expm1,
    erf=torch.erf, ndtr=torch.special.ndtr, arccos=torch.arccos, where=torch.where, maximum=torch.maximum,
    clip=torch.clamp, clip_min=lambda x, lo: x.clamp(min=lo), clip_max=lambda x, hi: x.clamp(max=hi),
    stack=torch.stack, cat=torch.cat, take=lambda x, i: x.index_select(-1, i),
    diagonal=lambda G: torch.diagonal(G, dim1=-2, dim2=-1),
    swap=lambda x: x.transpose(-1, -2), detach=lambda x: x.detach(),
    bucketize=lambda x, edges: torch.bucketize(x, edges, right=True), differ=lambda a, b: bool((a != b).any()),
    nonzero=lambda x: x.nonzero().flatten(), put=lambda x, i, v: x.index_put((i,), v),
    sign=lambda x: torch.where(x < 0, -1.0, torch.ones_like(x)),
    scatter_add=lambda i, v, n: v.new_zeros((*v.shape[:-1], n)).index_add(-1, i, v),
    scatter=lambda i, v, n: v.new_zeros((*v.shape[:-1], n)).index_copy(-1, i, v))
_NUMPY_OPS = SimpleNamespace(
    name="numpy", exp=np.exp, sqrt=np.sqrt, log=np.log, log1p=np.log1p, expm1=np.expm1,
    erf=_through_torch(torch.erf), ndtr=_through_torch(torch.special.ndtr), arccos=np.arccos, where=np.where,
    maximum=np.maximum, clip=lambda x, lo, hi: np.minimum(np.maximum(x, lo), hi), clip_min=np.maximum,
    clip_max=np.minimum,
    stack=np.array, cat=np.concatenate, take=lambda x, i: x.take(i, -1), diagonal=lambda G: G.diagonal(0, -2, -1),
    swap=lambda x: x.swapaxes(-1, -2), detach=lambda x: x,
    bucketize=lambda x, edges: edges.searchsorted(x, side="right"), differ=lambda a, b: bool((a != b).any()),
    nonzero=np.flatnonzero, put=_np_put, sign=lambda x: np.copysign(1.0, x),
    scatter_add=lambda i, v, n: np.bincount(i[: v.size], v.reshape(-1), v.size // v.shape[-1] * n).reshape(
        *v.shape[:-1], n),
    scatter=_np_scatter)


@dataclass(frozen=True)
class _PairIndex:
    """Upper-triangle neuron pairs (r < s) of m neurons and the flat indices the kernel gathers/scatters with."""

    r: object
    s: object
    rs: object  # cat(r, s): per-neuron values at both ends of every pair
    sr: object  # cat(s, r)
    lin_rs: object  # r m + s in an (m, m) matrix
    lin_both: object  # cat(r m + s, s m + r)
    lin_sym: object  # cat(r m + s, s m + r, diagonal): where S is written
    grad_index: object  # scatter_add index of the directed pair terms (2, C, 2, 2 pairs) -> (2, C, 2, m)


@dataclass(frozen=True)
class _AngularLayout:
    """The (pair, node) entries of the angular integral, one flat array for all pairs of all configs.

    Pairs are grouped by bucket, each bucket a node-major block (nodes, pairs of the bucket), so the sum over
    nodes is one reduction per bucket; the blocks are grouped by rule (near | log | far, the far buckets with
    6-16 nodes side by side). ``segments``: (rule, pair of each entry (near: a flat index into a per-pair
    table, see ``_angular``), static node rows xp = (1 + x)/2, xm = (1 - x)/2, w/2). Rebuilt only when a pair
    changes bucket (rare in GD).
    """

    buckets: object  # bucket of every pair (the cache key)
    blocks: tuple  # (first entry, nodes, pairs) of each non-empty bucket
    unsort: object  # pair order of the block sums -> original order (None: identity)
    segments: tuple
    has_near: bool
    gauss: tuple  # per-entry constants of the c-average (``_ReluEvaluator._gauss_average``)


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
        tab: dict = {"c_nodes": nodes, "c_weights": weights, "c_abs_min": np.array([[q.abs_min] for q in quads])}
        self.uniform = all(q.uniform is not None for q in quads)
        if self.uniform:
            lo, hi = np.array([q.uniform[0] for q in quads]), np.array([q.uniform[1] for q in quads])
            mom = lambda k: (hi ** (k + 1) - lo ** (k + 1)) / ((k + 1) * (hi - lo))  # noqa: E731
            # per rule patch: lo, hi, max c^2, then the series of E exp(-c^2 x^2) and E c^2 exp(-c^2 x^2)
            # in y = -x^2 (used for x^2 max c^2 < 4e-4: 7 terms reach 1e-25)
            tab["u_series"] = np.array([[[mom(2 * j)[p] / math.factorial(j), mom(2 * j + 2)[p] / math.factorial(j)]
                                         for j in range(7)] for p in range(2)])  # (patch, power, h / E c^2 ...)
            self.u_rows = np.stack([lo, hi, np.maximum(lo**2, hi**2)], 1)
            # c = zeta and 1 - zeta on the same interval (up to the rounding of 1 - zeta): scalar constants
            self.u_same = bool(np.allclose(self.u_rows[0], self.u_rows[1], rtol=4e-16, atol=0))
        self._init_moments(nodes, weights, tab)
        self._init_angular_nodes(angle_scale, tab)
        alpha, beta = sched.alpha.cpu().numpy(), sched.beta.cpu().numpy()
        kappa = sched.kappa_rule.cpu().numpy()
        tab.update(ab=(alpha / beta)[:, None, None], beta2=(beta**2)[:, None, None],
                   kappa_m1=(kappa - 1)[:, None, None], kappa_p1=(kappa + 1)[:, None, None],
                   const_rule=sched.const_rule.cpu().numpy())
        self._tables = {"numpy": SimpleNamespace(**tab), "torch": SimpleNamespace(**{
            k: (torch.as_tensor(v, dtype=DTYPE, device=device) if isinstance(v, np.ndarray) else
                {name: tuple(torch.as_tensor(a, device=device) for a in w) for name, w in v.items()})
            for k, v in tab.items()})}
        zj, wj = data.zeta.quadrature(zeta_order)
        t = lambda x: torch.as_tensor(np.asarray(x, dtype=np.float64), device=device)  # noqa: E731
        self.c_nodes, self.c_weights = t(nodes), t(weights)
        self.joint_nodes, self.joint_weights = t(np.stack([zj, 1 - zj])), t(wj)
        self._pair_cache: dict = {}
        self._layouts: dict = {}

    def _init_moments(self, nodes, weights, tab):
        """Weights of the c-sums, done by two matrix products per evaluation.

        Channels (left factor, right factor): Ebar = E_c[Eu_r Eu_s], Pbar = E_c[Phi_r Phi_s], Z = E_c[c Phi_r
        Eu_s] = dEbar/dA_r, Y = E_c[c phi_r Phi_s] = dPbar/dA_r. The same left factors against columns E_q(c)
        give the per-neuron moments E_c[Phi E_q] (channel 1), E_c[c phi E_q] (channel 3) and E_c[Eu]
        (channel 0). Columns: 1, c, c^2, then 1_X, c^2 1_X for each sign set X of c that the rho = +-1 closed
        form needs when c is not positive on the whole support."""
        c, w = nodes, weights
        live = w > 0
        cols = [np.ones_like(c), c, c**2]
        if bool((live & (c <= 0)).any()):
            self.sign_sets = {}
            for name, mask in (("ge", c >= 0), ("gt", c > 0), ("lt", c < 0)):
                if bool((live & mask).any()):
                    self.sign_sets[name] = (len(cols), len(cols) + 1)
                    cols += [mask.astype(np.float64), c**2 * mask]
        else:  # c > 0 on the support: every set is the whole quadrature
            self.sign_sets = {"ge": (0, 2), "gt": (0, 2)}
        E = np.stack(cols, -1)  # (2, nc, q)
        chan_w = np.stack([w, w, c * w, c * w])[:, None, :, :, None]  # (4, 1, 2, nc, 1)
        tab["right_w"], tab["right_ext"] = chan_w, chan_w * E  # (4, 1, 2, nc, 1), (4, 1, 2, nc, q)
        # E_c[1_X], E_c[c^2 1_X] per patch: the constant terms of the rho -> -1 closed form
        tab["set_weights"] = {name: ((w * E[..., i]).sum(-1)[:, None], (w * E[..., j]).sum(-1)[:, None])
                              for name, (i, j) in self.sign_sets.items()}
        # rows of the per-neuron gather holding (E[Phi 1_X], E[c^2 Phi 1_X], E[c phi 1_X]) of each set
        self.set_cols = sorted(set(self.sign_sets.values()))
        self.set_rows = {name: 3 + 3 * self.set_cols.index(ij) for name, ij in self.sign_sets.items()}

    def _init_angular_nodes(self, angle_scale: int, tab):
        """Concatenated Gauss-Legendre tables of the buckets; bucket 0 = near, then by increasing omega."""
        edges = [om for om, _, _ in reversed(_BUCKETS)]
        assert edges[0] == _OMEGA_NEAR
        tab["omega_edges"] = np.array(edges)
        rules = ["near"] + [rule for _, rule, _ in reversed(_BUCKETS)]
        assert rules[1] == "log" and all(rule == "far" for rule in rules[2:])
        rows, counts = [], []
        x, w = np.polynomial.legendre.leggauss(_NEAR_NODES * angle_scale)
        for k in range(_NEAR_PANELS):  # panel k = [T g^-(4-k), T g^-(3-k)] (panel 0 starts at 0)
            rows.append(np.stack([(1 + x) / 2, (1 - x) / 2, w / 2, np.full_like(x, _NEAR_PANELS - 1 - k)]))
        counts.append(_NEAR_PANELS * x.size)
        for _, _, k in reversed(_BUCKETS):
            x, w = np.polynomial.legendre.leggauss(k * angle_scale)
            rows.append(np.stack([(1 + x) / 2, (1 - x) / 2, w / 2, np.zeros_like(x)]))
            counts.append(x.size)
        self.node_table = np.concatenate(rows, 1)  # (4, total nodes): xp, xm, w/2, near panel exponent
        self.k_table = np.array(counts)
        self.k_offset = np.concatenate([[0], np.cumsum(counts)[:-1]])

    def _as(self, ops, x):
        return x if ops.name == "numpy" else torch.as_tensor(x, device=self.device)

    def _pairs(self, ops, C: int, m: int) -> _PairIndex:
        key = (ops.name, C, m)
        if key not in self._pair_cache:
            r, s = np.triu_indices(m, 1)
            rs = np.concatenate([r, s])
            grad = rs if ops.name == "torch" else (rs + m * np.arange(C * 4)[:, None]).ravel()
            lin = np.concatenate([r * m + s, s * m + r])
            idx = (r, s, rs, np.concatenate([s, r]), r * m + s, lin, np.concatenate([lin, np.arange(m) * (m + 1)]),
                   grad)
            self._pair_cache[key] = _PairIndex(*(self._as(ops, v) for v in idx))
        return self._pair_cache[key]

    # -- the flat (pair, node) layout of the angular integral --------------------------------------------
    def _angular_layout(self, ops, buckets, n_pp: int) -> _AngularLayout:
        lay = self._layouts.get(ops.name)
        if lay is not None and lay.buckets.shape == buckets.shape and not ops.differ(lay.buckets, buckets):
            return lay
        b = buckets if ops.name == "numpy" else buckets.cpu().numpy()
        perm = np.argsort(b, kind="stable")
        counts = np.bincount(b, minlength=self.k_table.size)
        pair_blocks, node_blocks, blocks, first = [], [], [], 0
        for j in np.flatnonzero(counts):  # node-major: entry (k, i) of bucket j is node k of its i-th pair
            pairs = perm[counts[:j].sum():counts[: j + 1].sum()]
            k = int(self.k_table[j])
            pair_blocks.append(np.tile(pairs, k))
            node_blocks.append(np.repeat(self.node_table[:, self.k_offset[j]:self.k_offset[j] + k], pairs.size, 1))
            blocks.append((first, k, pairs.size))
            first += k * pairs.size
        entry_pair, table = np.concatenate(pair_blocks), np.concatenate(node_blocks, 1)
        sizes = counts * self.k_table
        ends = np.cumsum([sizes[0], sizes[1], sizes[2:].sum()])
        segments = []
        for rule, a, e in zip(("near", "log", "far"), (0, *ends[:2]), ends):
            if e > a:
                pair = entry_pair[a:e]
                if rule == "near":  # flat index into the per-pair table of _angular: columns hi, lo, T - hi, T, q2, q1
                    expo = table[3, a:e].astype(np.int64)
                    pair = (np.stack([expo, expo + 1, 5 + expo, *np.full((3, e - a), [[9], [10], [11]])]) * b.size
                            + pair).ravel()
                segments.append((rule, self._as(ops, pair), tuple(self._as(ops, v.copy()) for v in table[:3, a:e])))
        unsort = None if np.array_equal(perm, np.arange(perm.size)) else self._as(ops, np.argsort(perm))
        patch = (entry_pair // n_pp) % 2
        if not self.uniform:
            gauss = (self.c_nodes.cpu().numpy()[patch] ** 2, self.c_weights.cpu().numpy()[patch])
        else:
            lo, hi, cmax2 = self.u_rows[0] if self.u_same else self.u_rows[patch].T.copy()
            span = hi - lo  # E exp(-c^2 x^2) = sqrt(pi)/2 (erf(hi x) - erf(lo x)) / (x span), by parts for c^2
            gauss = (4e-4 / cmax2, lo, hi, -lo * lo, -hi * hi, span, math.sqrt(math.pi) / (2 * span), -0.25 / span,
                     patch)
            if self.u_same:
                gauss = tuple(float(v) for v in gauss[:-1])
        gauss = tuple(self._as(ops, v) if isinstance(v, np.ndarray) else v for v in gauss)
        lay = _AngularLayout(buckets, tuple(blocks), unsort, tuple(segments), bool(sizes[0]), gauss)
        self._layouts[ops.name] = lay
        return lay

    # -- E_c exp(-c^2 x2) and its derivative in Q = 2 x2, per entry --------------------------------------
    def _gauss_average(self, ops, K, lay: _AngularLayout, x2, partials: bool):
        """h = E_c exp(-c^2 Q/2) and (with ``partials``) h' = dh/dQ = -E_c[c^2 exp(-c^2 Q/2)]/2, x2 = Q/2."""
        if not self.uniform:
            c2, w = lay.gauss
            e = ops.exp(-x2[:, None] * c2) * w
            return e.sum(-1), (-0.5 * (e * c2).sum(-1) if partials else None)
        small_x2, lo, hi, mlo2, mhi2, span, k_h, k_hp = lay.gauss[:8]
        small = x2 < small_x2
        any_small = bool(small.any())
        x2s = ops.where(small, 1.0, x2) if any_small else x2
        xs = ops.sqrt(x2s)
        h = (ops.erf(hi * xs) - ops.erf(lo * xs)) * (k_h / xs)
        hp = None
        if partials:  # -E[c^2 exp(-c^2 x^2)] / 2, by parts
            hp = (lo * ops.exp(mlo2 * x2s) - hi * ops.exp(mhi2 * x2s) + h * span) * (k_hp / x2s)
        if any_small:  # the closed forms cancel for x |c| << 1: Taylor series in y = -x^2 there (7 terms)
            idx = ops.nonzero(small)
            y = -x2[idx]
            y2 = y * y
            y3 = y2 * y
            powers = ops.swap(ops.stack([y, y2, y3, y2 * y2, y3 * y2, y3 * y3]))  # y, ..., y^6
            if self.u_same:
                series = K.u_series[0, 0] + powers @ K.u_series[0, 1:]
            else:
                coef = K.u_series[lay.gauss[8][idx]]  # (n, 7, 2)
                series = coef[:, 0] + (powers[:, :, None] * coef[:, 1:]).sum(1)
            h = ops.put(h, idx, series[:, 0])
            if partials:
                hp = ops.put(hp, idx, -0.5 * series[:, 1])
        return h, hp

    def _angular(self, ops, K, r, A, B, partials: bool):
        """The angular integral I per pair and dI/dr, dI/dA, dI/dB; inputs (C, 2, pairs).

        far/log: I = int_0^r (r - tau) E_c phi_2(cA, cB; tau) dtau, tau = sin theta, t = tan(theta/2)
        (log: in y = -log(1 - t)); near: I = int_r^1 (tau - r) E_c phi_2 dtau, tau = cos theta,
        t = tan(theta/2) on four graded panels towards the layer at t ~ c |A - B| / 2. dI/dr is Price's
        identity (the same integral without (r - tau)); dI/dA, dI/dB follow from
        dQ/dA = 2 (A - B tau) / (1 - tau^2). All pairs of all rules are evaluated in one flat array.
        """
        shape = r.shape
        n_pairs = math.prod(shape)
        buckets = ops.bucketize(ops.arccos(ops.detach(r)), K.omega_edges).reshape(-1)
        lay = self._angular_layout(ops, buckets, shape[-1])
        rp = 1 + r
        sq = ops.sqrt((1 - r) * rp)
        dA = A - B
        q2, q1 = 0.5 * dA * dA, A * B  # Q / 2 = (q2 + q1 (1 - tau)) / (1 - tau^2)
        T_far = r / (1 + sq)  # tan(asin(r) / 2)
        if lay.has_near:  # panels [T g^-(k+1), T g^-k], k = 3..0 (the last from 0): a table of edges per pair
            T_near = sq / rp  # tan(omega / 2)
            t_min = ops.maximum(K.c_abs_min * abs(dA) * 0.25, T_near * 1e-6)
            log_g = ops.clip(ops.log(T_near / t_min) * (1 / 3), math.log(2.0), math.log(100.0))  # panel ratio g
            ig = ops.exp(-log_g)
            edges = [T_near, T_near * ig, T_near * (ig * ig), T_near * (ig * ig * ig), 0 * T_near]
            near_table = ops.stack(edges + [0 * T_near] + [-T_near * ops.expm1(-k * log_g) for k in (1, 2, 3)]
                                   + [T_near, q2, q1]).reshape(-1)  # T g^-k, T (1 - g^-k), T, q2, q1

        def gather(*cols, pair):
            return ops.take(ops.stack(cols).reshape(len(cols), n_pairs), pair)

        parts = []
        for rule, pair, (xp_, xm_, wh_) in lay.segments:
            if rule == "near":
                hi, lo, T_m_hi, T, a2, a1 = ops.take(near_table, pair).reshape(6, -1)
                span = hi - lo
                span_xm = span * xm_
                t = hi - span_xm
                wt = span * wh_
                T_m_t = T_m_hi + span_xm
                tt = t * t
                u = 1 + tt
                iu = 1 / u
                tau, omt, v = (1 - tt) * iu, 2 * tt * iu, 0.5 * u / t  # v = 1 / (1 - tau^2)^(1/2)
                gap = T_m_t * (T + t) * iu  # (tau - r) (1 + T^2) / 2
            else:
                if rule == "log":
                    S, T, a2, a1 = gather(-ops.log1p(-T_far), T_far, q2, q1, pair=pair)
                    one_m_t = ops.exp(-(S * xp_))  # 1 - t, exact
                    t = 1 - one_m_t
                    wt = S * wh_ * one_m_t  # dt = (1 - t) dy
                    T_m_t = one_m_t - (1 - T)
                    p = one_m_t * (1 + t)
                else:
                    T, a2, a1 = gather(T_far, q2, q1, pair=pair)
                    t = T * xp_
                    one_m_t, wt, T_m_t = 1 - t, T * wh_, T * xm_
                tt = t * t
                u = 1 + tt
                iu = 1 / u
                tau, omt = 2 * t * iu, one_m_t * one_m_t * iu
                v = u / (p if rule == "log" else 1 - tt)
                gap = T_m_t * (1 - T * t) * iu  # (r - tau) (1 + T^2) / 2
            v2 = v * v
            x2 = ops.clip_min((a2 + a1 * omt) * v2, 0.0)
            parts.append((wt * iu, gap, tau, x2, v2))  # d theta = 2 dt / (1 + t^2)
        wq, gap, tau, x2, v2 = (ops.cat(v, 0) if len(parts) > 1 else v[0] for v in zip(*parts))
        h, hp = self._gauss_average(ops, K, lay, x2, partials)
        g1 = wq * h
        if partials:
            g2 = wq * gap * hp * v2
            rows = [g1 * gap, g1, g2, g2 * tau]
        else:
            rows = [g1 * gap]
        if len(lay.blocks) == 1:  # sums over the nodes of each pair
            _, k, n = lay.blocks[0]
            sums = ops.stack([v.reshape(k, n).sum(0) for v in rows])
        else:
            rows = ops.stack(rows)
            sums = ops.cat([rows[:, a:a + k * n].reshape(len(rows), k, n).sum(1) for a, k, n in lay.blocks], -1)
        if lay.unsort is not None:
            sums = ops.take(sums, lay.unsort)
        sums = sums.reshape(len(rows), *shape)
        near = (lay.buckets == 0).reshape(shape) if lay.has_near else None
        T = ops.where(near, T_near, T_far) if lay.has_near else T_far
        f2 = (2 / math.pi) / (1 + T * T)  # 1 / (2 pi) of phi_2, 2 / (1 + T^2) of the gap, 2 of d theta
        I = f2 * sums[0]
        if not partials:
            return I, near
        I_r = sums[1] * (1 / math.pi)
        if lay.has_near:
            I_r = ops.where(near, -I_r, I_r)
        f4 = 2 * f2
        s0, s1 = f4 * sums[2], f4 * sums[3]
        return I, near, I_r, A * s0 - B * s1, B * s0 - A * s1

    def _near_base(self, ops, K, rho, sgn, Ar, As, Mr, Ms, partials: bool):
        """E_c of the rho = +-1 closed form of E[relu relu] per unit sigma_r sigma_s, per pair.

        rho -> +1: E[(X + a)_+ (X + b)_+] - gap Phi(min) = (1 + ab - gap) Phi(min) + max phi(min); for c > 0
        the minimum is c min(A_r, A_s), so the c-average combines the per-neuron moments E_c[Phi],
        E_c[c^2 Phi], E_c[c phi] of one neuron (``Mr``/``Ms``: sign set -> (3, C, 2, pairs) at r / s).
        rho -> -1: (gap - 1 - ab)(Phi(a) - Phi(b)) + a phi(b) - b phi(a) where a > b (b = -c A_s), i.e. over
        c of the sign of A_r + A_s. Returns the value and, with ``partials``, d/drho, d/dA_r, d/dA_s."""
        gap = 1 - abs(rho)
        r_low = Ar < As
        AA = Ar * As
        plus, minus = [0.0] * 4, [0.0] * 4  # value, d/dgap, d/dA_r, d/dA_s
        for name, r_sel in (("ge", r_low), ("lt", ~r_low)):  # c >= 0: the smaller A; c < 0: the larger
            if name not in self.sign_sets:
                continue
            M0, M2, M1 = ops.where(r_sel, Mr[name], Ms[name])
            a_sel, a_oth = ops.where(r_sel, Ar, As), ops.where(r_sel, As, Ar)
            d_sel, d_oth = (1 - gap) * M1 + a_oth * M2, a_sel * M2 + M1
            terms = ((1 - gap) * M0 + AA * M2 + a_oth * M1, -M0,
                     ops.where(r_sel, d_sel, d_oth), ops.where(r_sel, d_oth, d_sel))
            plus = [p + v for p, v in zip(plus, terms)]
        for name, side in (("gt", 1.0), ("lt", -1.0)):
            if name not in self.sign_sets:
                continue
            (M0r, M2r, M1r), (M0s, M2s, M1s) = Mr[name], Ms[name]
            W0, W2 = K.set_weights[name]
            P0, P2 = M0r + M0s - W0, M2r + M2s - W2
            active = (Ar + As) * side > 0
            terms = ((gap - 1) * P0 + AA * P2 + Ar * M1s + As * M1r, P0,
                     (gap - 1) * M1r + As * P2 + M1s, (gap - 1) * M1s + Ar * P2 + M1r)
            minus = [mi + ops.where(active, v, 0.0) for mi, v in zip(minus, terms)]
        neg = rho < 0
        out = [ops.where(neg, mi, pl) for pl, mi in zip(plus, minus)]
        return (out[0], -sgn * out[1], out[2], out[3]) if partials else out[0]

    def _rule(self, G, gamma, partials: bool, ops=_TORCH_OPS):
        """Univariate and pairwise expectations of the two rule patches; with ``partials`` also the
        derivatives of the pair values U in (rho, A_r, A_s) needed by the hand-written gradient."""
        K = self._tables[ops.name]
        C, _, m, _ = G.shape
        D = ops.diagonal(G)
        pos = D > 0
        n = ops.sqrt(ops.where(pos, D, 1.0))
        A = ops.where(pos, K.ab * gamma / n, 0.0)
        a = K.c_nodes[:, :, None] * A[:, :, None, :]  # (C, 2, nc, m)
        Phi, phi = ops.ndtr(a), ops.exp(a * a * -0.5) * (1 / _SQRT_2PI)
        Eu = a * Phi + phi  # E relu(z) / sigma
        # the c-sums: channels Ebar, Pbar, Z, Y of every pair, and the per-neuron moments
        left = ops.swap(ops.stack([Eu, Phi, Phi, phi]))  # (4, C, 2, m, nc)
        M = left @ (ops.stack([Eu, Phi, Eu, Phi]) * K.right_w)  # (4, C, 2, m, m)
        mom = left @ K.right_ext  # (4, C, 2, m, q)
        MP0, MP2, Mp1 = mom[1, ..., 0], mom[1, ..., 2], mom[3, ..., 0]
        AM2p = A * MP2 + Mp1
        st = {"D": D, "n": n, "A": A, "pos": pos, "MP0": MP0, "MP2": MP2, "Mp1": Mp1, "AM2p": AM2p,
              "Eu_mean": mom[0, ..., 0], "e2": MP0 + A * AM2p}  # e2 = E_c E[relu^2] / sigma^2
        pi = self._pairs(ops, C, m)
        st["pairs"] = pi
        n_pp = m * (m - 1) // 2
        if n_pp == 0:
            st["nn"] = st["U"] = st["Grs"] = D[..., :0]
            return st
        per_neuron = [n, n * pos, A]
        for i, j in self.set_cols:
            per_neuron += [mom[1, ..., i], mom[1, ..., j], mom[3, ..., i]]
        at = ops.take(ops.stack(per_neuron), pi.rs)  # (k, C, 2, 2 pairs): at r, then at s
        Grs = ops.take(G.reshape(C, 2, m * m), pi.lin_rs)
        pm = ops.take(M.reshape(4, C, 2, m * m), pi.lin_both)  # (4, C, 2, 2 pairs): (r, s), then (s, r)
        n_r, n_s, Ar, As = at[0, ..., :n_pp], at[0, ..., n_pp:], at[2, ..., :n_pp], at[2, ..., n_pp:]
        rho = ops.clip(Grs / (n_r * n_s), -1.0, 1.0)  # G_rs = 0 when w_r = 0 (n = 1 there)
        sgn = ops.sign(rho)  # (+1 at rho = 0: the angular integral is 0 there)
        out = self._angular(ops, K, ops.clip_max(abs(rho), _RHO_MAX), Ar, sgn * As, partials)
        I, near = out[:2]
        Pbar = pm[1, ..., :n_pp]
        U = pm[0, ..., :n_pp] + rho * Pbar
        if partials:
            I_r, I_A, I_B = out[2:]
            U_rho, U_Ar = Pbar, pm[2, ..., :n_pp] + rho * pm[3, ..., :n_pp]
            U_As = pm[2, ..., n_pp:] + rho * pm[3, ..., n_pp:]
        if near is not None:  # omega < 1e-3: the closed form at rho = +-1 replaces Ebar + rho Pbar
            Mr = {name: at[j:j + 3, ..., :n_pp] for name, j in self.set_rows.items()}
            Ms = {name: at[j:j + 3, ..., n_pp:] for name, j in self.set_rows.items()}
            base = self._near_base(ops, K, rho, sgn, Ar, As, Mr, Ms, partials)
            if partials:
                base, b_rho, b_Ar, b_As = base
                U_rho, U_Ar, U_As = (ops.where(near, bv, v) for bv, v in ((b_rho, U_rho), (b_Ar, U_Ar), (b_As, U_As)))
            U = ops.where(near, base, U)
        st.update(nn=at[1, ..., :n_pp] * at[1, ..., n_pp:], rho=rho, Grs=Grs, U=U + I)
        if partials:
            st["U_rho"], st["U_Ar"], st["U_As"] = U_rho + sgn * I_r, U_Ar + I_A, U_As + sgn * I_B
        return st

    def _rule_value_and_grad(self, G, gamma, ops):
        """The two rule patches: (C, 2) losses, S (C, 2, m, m), dL/dgamma (C, 2, m), in the arrays of ``ops``."""
        K = self._tables[ops.name]
        C, _, m, _ = G.shape
        st = self._rule(G, gamma, True, ops)
        beta2, ab = K.beta2, K.ab
        D, n, A, pos, e2 = st["D"], st["n"], st["A"], st["pos"], st["e2"]
        X = e2 + K.kappa_m1 * st["MP0"]  # E_c[a Eu + kappa2 Phi]
        AM2 = A * st["MP2"]
        dX = 2 * AM2 + K.kappa_p1 * st["Mp1"]  # dX/dA
        b2DD = beta2 * D * D
        loss = (b2DD * e2 - 2 * D * X).sum(-1) + K.const_rule
        # per-neuron derivatives in n_r (holding gamma) and gamma_r; A_r = (alpha/beta) gamma_r / n_r
        H = (2 * D * dX - b2DD * 2 * st["AM2p"]) / n  # de2/dA = 2 (A E[c^2 Phi] + E[c phi])
        g_n = 4 * n * (beta2 * D * e2 - X) + H * A
        g_gamma = -H * ab
        n_pp = m * (m - 1) // 2
        if n_pp:
            Grs, nn, U, rho, U_rho, pi = st["Grs"], st["nn"], st["U"], st["rho"], st["U_rho"], st["pairs"]
            loss = loss + 2 * beta2[..., 0] * (Grs * nn * U).sum(-1)
            coef = 2 * beta2 * Grs  # d/dU of the pair term 2 beta^2 G_rs n_r n_s U
            S_half = beta2 * (nn * U + Grs * U_rho)  # d/dG_rs (rho depends on it), halved
            base = coef * (U - rho * U_rho)
            # directed pairs (self, other) = (r, s), (s, r): both gradients scattered to "self" in one sum
            split = (C, 2, 2, n_pp)
            n_other = ops.take(n, pi.sr).reshape(split)
            A_self = ops.take(A, pi.rs).reshape(split)
            U_A = ops.cat([st["U_Ar"], st["U_As"]], -1).reshape(split)
            cn = coef[:, :, None] * n_other
            terms = ops.stack([base[:, :, None] * n_other - cn * A_self * U_A, cn * U_A])
            acc = ops.scatter_add(pi.grad_index, terms.reshape(2, C, 2, 2 * n_pp), m)
            g_n, g_gamma = g_n + acc[0], g_gamma + acc[1] * ab
        g_n, g_gamma = g_n * pos, g_gamma * pos
        diag = g_n / (2 * n)  # dD = 2 n dn
        if n_pp:
            S = ops.scatter(st["pairs"].lin_sym, ops.cat([S_half, S_half, diag], -1), m * m).reshape(C, 2, m, m)
        else:
            S = diag[..., None] * np.eye(m) if ops.name == "numpy" else torch.diag_embed(diag)
        return loss, S, g_gamma

    def _noise(self, G):
        """Patches p >= 3: z ~ N(0, s^2 G); E[relu relu] = s^2 n_r n_s J / (2 pi),
        J = sin w + (pi - w) cos w (the arc-cosine kernel)."""
        m = G.shape[-1]
        D = torch.diagonal(G, dim1=-2, dim2=-1)
        pos = D > 0
        n = torch.sqrt(torch.where(pos, D, torch.ones_like(D)))
        pi = self._pairs(_TORCH_OPS, G.shape[0], m)
        r, s = pi.r, pi.s
        nn = n[..., r] * n[..., s] * (pos[..., r] & pos[..., s])
        safe = torch.where(nn > 0, nn, torch.ones_like(nn))
        rho = torch.where(nn > 0, G[..., r, s] / safe, torch.zeros_like(nn)).clamp(-_RHO_MAX, _RHO_MAX)
        omega = torch.arccos(rho)
        J = torch.sin(omega) + (math.pi - omega) * torch.cos(omega)
        return D, n, r, s, rho, nn, omega, J

    def value(self, G, gamma) -> torch.Tensor:
        """(C, P) per-patch losses (differentiable torch code)."""
        st = self._rule(G[:, :2], gamma, partials=False)
        K = self._tables["torch"]
        D = st["D"]
        pairs = (st["Grs"] * st["nn"] * st["U"]).sum(-1)
        X = st["e2"] + K.kappa_m1 * st["MP0"]  # E_c[a Eu + kappa2 Phi]
        out = K.beta2[..., 0] * ((D * D * st["e2"]).sum(-1) + 2 * pairs) - 2 * (D * X).sum(-1) + K.const_rule
        if self.P == 2:
            return out
        D, n, r, s, rho, nn, omega, J = self._noise(G[:, 2:])
        s2 = self.sched.s2[:, None]
        quad = s2 * (D * D).sum(-1) / 2 + 2 * s2 * (G[:, 2:][..., r, s] * nn * J).sum(-1) / (2 * math.pi)
        noise = quad - self.sched.kappa_noise[:, None] * D.sum(-1) + self.sched.const_noise[:, None]
        return torch.cat([out, noise], 1)

    def value_and_grad(self, G, gamma):
        """(C,) losses, S = dL/dG (C, P, m, m), dL/dgamma (C, 2, m) by Price's and Stein's identities
        (the rule patches in numpy on the CPU, in torch elsewhere)."""
        C, P, m, _ = G.shape
        sched = self.sched
        if G.device.type == "cpu":
            loss, S_rule, g_gamma = self._rule_value_and_grad(G[:, :2].detach().numpy(), gamma.detach().numpy(),
                                                              _NUMPY_OPS)
            total, S_rule, g_gamma = torch.from_numpy(loss.sum(-1)), torch.from_numpy(S_rule), torch.from_numpy(g_gamma)
        else:
            loss, S_rule, g_gamma = self._rule_value_and_grad(G[:, :2], gamma, _TORCH_OPS)
            total = loss.sum(-1)
        if P == 2:
            return total, S_rule, g_gamma
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
        return total, torch.cat([S_rule, Sz], 1), g_gamma

    def psi(self, G, gamma):
        st = self._rule(G[:, :2], gamma, partials=False)
        beta = self.sched.beta[:, None, None]
        scale = gamma * beta * st["n"] * st["pos"]  # gamma_r sigma_r
        mean = (scale * st["Eu_mean"]).sum((-1, -2))
        r, s = st["pairs"].r, st["pairs"].s
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
        data = check_data(data)
        if isinstance(activations, str | Activation) or not len(activations):
            raise ValueError("activations must be a non-empty sequence, one activation per configuration")
        acts = [get_activation(a) for a in activations]
        alphas, betas = check_schedule(alphas, betas, len(acts))
        targets = Target.parse_each(targets, len(acts))
        zeta_order, angle_scale = check_zeta_order(zeta_order), check_int("angle_scale", angle_scale)
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
def _check_net(net, data: MultiPatchData) -> TwoLayerScore:
    check_instance("net", net, TwoLayerScore)
    if net.joint:
        raise ValueError("net must be a per-patch TwoLayerScore (eq. (1)); the exact loss does not cover "
                         "JointTwoLayerScore, whose neurons mix patches")
    if net.d != data.d or net.n_patches != data.n_patches:
        raise ValueError(f"net (d={net.d}, n_patches={net.n_patches}) does not fit data (d={data.d}, "
                         f"n_patches={data.n_patches})")
    return net


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
    data = check_data(data)
    W = _check_weights(W, data)
    C = W.shape[0]
    acts = _activations(activation, C)
    alphas, betas = check_schedule(alphas, betas, C)
    targets = Target.parse_each(targets, C)
    obj = PopulationObjective(acts, data, alphas, betas, targets, W.device, check_zeta_order(zeta_order),
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
    data = check_data(data)
    net = _check_net(net, data)
    alpha, beta = check_alpha_beta(alpha, beta)
    return population_loss(net.weights[None], net.activation, data, [alpha], [beta], Target.parse(target),
                           zeta_order=zeta_order, angle_scale=angle_scale)[0]


def psi_moments(net: TwoLayerScore, data: MultiPatchData, alpha, beta, *,
                zeta_order: int = ZETA_ORDER) -> tuple[float, float]:
    """Exact (E[psi_t], Var[psi_t]) of Def 4.3 over x_t (the two rule patches share zeta, not eps)."""
    data = check_data(data)
    net = _check_net(net, data)
    alpha, beta = check_alpha_beta(alpha, beta)
    obj = PopulationObjective([net.activation], data, [alpha], [beta], [Target.PAPER], net.device,
                              check_zeta_order(zeta_order))
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
