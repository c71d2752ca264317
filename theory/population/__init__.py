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

**Parts.** ``zeta_quadrature`` (quadratures in c, zeta moments), ``schedule`` (kappa2, E||y||^2 per
configuration), ``isserlis`` and ``polynomial`` (Isserlis tables and the polynomial evaluator), ``ops``
(the numpy / torch operation tables), ``relu_moments`` (c-averaged univariate terms, the rho = +-1 closed
form), ``relu_angular`` (the angular rule: buckets, layout, Gauss average), ``relu`` (the ReLU evaluator:
each patch loss with its gradient), ``objective`` (``PopulationObjective``, the autograd bridge); beyond the
paper, ``joint`` (``JointObjective``: the same loss and psi_t moments for ``JointTwoLayerScore``, whose
neurons see all patches, from zeta-averaged Gaussian moments: ``joint_polynomial`` by Isserlis, ``joint_relu``
for ReLU); this file is the public face.
"""

from __future__ import annotations

import numpy as np
import torch

from .._checks import DTYPE, check_alpha_beta, check_instance, check_int, check_schedule, check_zeta_order
from ..data import MultiPatchData, check_data
from ..losses import Target
from ..network import Activation, TwoLayerScore, get_activation
from ..rule import RuleError
from .joint import JointObjective, block_gram_and_projections, joint_blocks, joint_population_loss, joint_weights
from .objective import ExactLoss, PopulationObjective, gram_and_projections
from .zeta_quadrature import ZETA_ORDER


def _check_net(net, data: MultiPatchData) -> TwoLayerScore:
    check_instance("net", net, TwoLayerScore)
    if net.d != data.d or net.n_patches != data.n_patches:
        kind = "joint net (weights (1, m, n_patches*d))" if net.joint else "net"
        raise ValueError(f"{kind} (d={net.d}, n_patches={net.n_patches}) does not fit data (d={data.d}, "
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
    return ExactLoss.apply(W, obj, torch.as_tensor(data.features, dtype=DTYPE, device=W.device))


def expected_loss(net: TwoLayerScore, data: MultiPatchData, alpha, beta, target="paper", *,
                  zeta_order: int = ZETA_ORDER, angle_scale: int = 1) -> torch.Tensor:
    """eq. (2) in expectation: E_{x_0, eps} sum_p ||s^(p)(x_t^(p)) - target^(p)||^2, constants included.

    The n, n_eps -> infinity limit of ``MonteCarloLoss`` (patches p >= 3 included, N(0, I) as in
    ``MultiPatchData``). A 0-d float64 tensor, differentiable in ``net.weights`` (first derivatives, written
    by hand; no double backward). ``target``: "paper" (eq. (2)
    as printed) or "score" (consistent DSM), as in ``theory.losses.Target``. A ``JointTwoLayerScore`` (beyond
    the paper) goes through ``joint`` (gradient by autograd through its Gaussian moments).
    """
    data = check_data(data)
    net = _check_net(net, data)
    alpha, beta = check_alpha_beta(alpha, beta)
    if net.joint:
        return joint_population_loss(net.weights, net.activation, data, [alpha], [beta], Target.parse(target),
                                     zeta_order=zeta_order, angle_scale=angle_scale)[0]
    return population_loss(net.weights[None], net.activation, data, [alpha], [beta], Target.parse(target),
                           zeta_order=zeta_order, angle_scale=angle_scale)[0]


def psi_moments(net: TwoLayerScore, data: MultiPatchData, alpha, beta, *,
                zeta_order: int = ZETA_ORDER) -> tuple[float, float]:
    """Exact (E[psi_t], Var[psi_t]) of Def 4.3 over x_t (the two rule patches share zeta, not eps); per-patch
    (eq. (1)) or joint nets (``joint``: psi = sum_r sigma(z_r) Gamma_r with one Gaussian z given zeta)."""
    data = check_data(data)
    net = _check_net(net, data)
    alpha, beta = check_alpha_beta(alpha, beta)
    if net.joint:
        obj = JointObjective([net.activation], data, [alpha], [beta], [Target.PAPER], net.device, zeta_order)
        with torch.no_grad():
            mean, var = obj.psi(*block_gram_and_projections(joint_blocks(net.weights.detach(), data.n_patches),
                                                            data))
        return float(mean[0]), max(float(var[0]), 0.0)
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
           "quadrature_error_estimate", "gram_and_projections", "ZETA_ORDER", "JointObjective",
           "joint_population_loss", "joint_blocks", "joint_weights", "block_gram_and_projections"]
