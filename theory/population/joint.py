"""Beyond the paper: the exact population loss (eq. (2)) and psi_t moments (Def 4.3) of joint networks.

The paper's network (eq. (1)) gives each patch its own neurons; ``theory.network.JointTwoLayerScore`` lets
every neuron see all P patches, g(x) = sum_r sigma(z_r) w_r, z_r = <w_r, [x^(1); ...; x^(P)]>, w_r in R^{P d}.
Write W_p (m x d) for the block of W acting on patch p, G_p = W_p W_p^T, gamma_1 = W_1 u, gamma_2 = W_2 v.

**Given zeta, z is Gaussian.** With App. F's x_t = alpha x_0 + beta eps and Def 4.1's x_0 (patch 1 = zeta u,
patch 2 = (1 - zeta) v, patches p >= 3 N(0, I) as in ``MultiPatchData``), z = sum_p W_p x_t^(p) has

    mean  p + q zeta,   p = alpha gamma_2,   q = alpha (gamma_1 - gamma_2),
    cov   K = beta^2 (G_1 + G_2) + s^2 sum_{p>=3} G_p,   s^2 = alpha^2 + beta^2   (zeta-free).

**Loss.** With y the residual target of ``theory.losses`` (x_t/beta^2 + eps for "paper", alpha x_0/beta^2 for
"score") and Gfull = W W^T = sum_p G_p,

    E||g - y||^2 = sum_{r,s} Gfull_rs P2_rs - 2 sum_r E[sigma(z_r) <w_r, y>] + E||y||^2.

<w_r, y> is jointly Gaussian with z given zeta, E[<w_r, y> | zeta] = (p_r + q_r zeta)/beta^2 for both targets
(only the rule patches have a mean, and y's mean there is alpha c f/beta^2), and
Cov(z_r, <w_r, y> | zeta) = kappa_r = sum_p kappa2_p ||w_r^(p)||^2 with the per-patch Stein coefficients of
``schedule`` (1 + beta / 0 on a rule patch, s^2/beta^2 + beta / alpha^2/beta^2 on an N(0, I) patch, for
"paper" / "score"). Stein's lemma gives

    E[sigma(z_r) <w_r, y>] = (p_r P1_0r + q_r P1_1r)/beta^2 + kappa_r D1_r,

and E||y||^2 is the per-patch constant of ``schedule`` summed over patches (the target does not see W).
Everything is a function of three zeta-averaged Gaussian moments of sigma (the joint-net interface):

    P2 (C, m, m) = E_zeta E[sigma(z_r) sigma(z_s) | zeta],  P1 (C, 2, m) = E_zeta[zeta^k E[sigma(z_r) | zeta]],
    D1 (C, m)    = E_zeta E[sigma'(z_r) | zeta],

polynomial sigma by Isserlis (``joint_polynomial``, exact), ReLU by ``joint_relu.relu_gaussian_moments``.
Since K, p, q, Gfull and kappa depend on W only through (G_p, gamma), the loss is F(G, gamma) as for eq. (1):
dL/dW_p = 2 S_p W_p + (dL/dgamma_p) f_p^T, so GD keeps each block W_p in span(W_p(0), f_p) and
``theory.exact_gd`` runs joint nets in the same span coordinates, block by block. The derivatives S and
dL/dgamma: for polynomial sigma the chain rule through K, p, q, kappa written out, with the moments'
derivatives of ``joint_polynomial`` (hand-written); with ReLU configurations torch autograd through
``joint_relu``. Both are checked against finite differences and autograd in ``tests/theory/test_joint_exact.py``.
At App. F size (d = 100, m = 20, one thread) a polynomial value-and-gradient takes ~0.4-0.7 ms for one net and
~1.1 ms for 8 (per-patch: ~0.1 / 0.6 ms); ReLU is dominated by ``joint_relu`` (~15 ms for one net).

**psi_t (Def 4.3).** psi = <g^(1), u> + <g^(2), v> = sum_r sigma(z_r) Gamma_r, Gamma_r = <w_r^(1), u> +
<w_r^(2), v>, so E[psi] = Gamma . P1_0 and E[psi^2] = Gamma^T P2 Gamma (z is one Gaussian vector given zeta:
no separate patch terms as in the per-patch case).

None of this is in the paper (Def 4.1, Thm 4.2, eq. (1), eq. (2), Def 4.3, App. F concern per-patch nets):
it turns the question whether coupling the patches lets score matching learn the rule into an exact one.
"""

from __future__ import annotations

import numpy as np
import torch

from .._checks import DTYPE
from ..data import MultiPatchData, check_data
from ..network import Activation, get_activation
from .joint_polynomial import PolynomialMoments
from .joint_relu import relu_gaussian_moments
from .objective import parse_configurations
from .schedule import ConfigSchedule
from .zeta_quadrature import ZETA_ORDER


def joint_blocks(W: torch.Tensor, n_patches: int) -> torch.Tensor:
    """Joint weights (C, m, P*d) as patch blocks (C, P, m, d): block p = W[:, :, p*d:(p+1)*d]."""
    C, m, Pd = W.shape
    return W.reshape(C, m, n_patches, Pd // n_patches).transpose(1, 2)


def joint_weights(blocks: torch.Tensor) -> torch.Tensor:
    """Patch blocks (C, P, m, d) back to joint weights (C, m, P*d)."""
    C, P, m, d = blocks.shape
    return blocks.transpose(1, 2).reshape(C, m, P * d)


class JointObjective:
    """The exact loss (eq. (2)) of C joint-net configurations (activation, alpha, beta, target) on one ``data``.

    Same interface as ``PopulationObjective`` on the patch blocks: ``value(G, gamma)`` (C,) differentiable,
    ``value_and_grad(G, gamma)`` -> (losses, S (C, P, m, m) symmetric, dL/dgamma (C, 2, m)) with
    dL/dW_p = 2 S_p W_p + dL/dgamma_p f_p^T, ``psi(G, gamma)`` -> (E[psi_t], Var[psi_t]), where G (C, P, m, m)
    are the Gram matrices of the blocks and gamma (C, 2, m) their rule-feature projections.
    """

    def __init__(self, activations, data: MultiPatchData, alphas, betas, targets, device,
                 zeta_order: int = ZETA_ORDER, angle_scale: int = 1):
        data, acts, alphas, betas, targets, self.zeta_order, self.angle_scale = parse_configurations(
            activations, data, alphas, betas, targets, zeta_order, angle_scale)
        self.C, self.data, self.device = len(acts), data, device
        with torch.inference_mode(False):  # tensors autograd may save (exact GD runs in inference mode)
            self.sched = ConfigSchedule.build(data, alphas, betas, targets, device)
            poly = [i for i, a in enumerate(acts) if a.poly is not None]
            relu = [i for i, a in enumerate(acts) if a.poly is None]
            self.groups = []  # (configuration indices, moments function of (K, p, q))
            if poly:
                self.groups.append((poly, PolynomialMoments([acts[i].poly for i in poly], data.zeta, device)))
            if relu:
                self.groups.append((relu, self._relu_moments))
            order = [i for idx, _ in self.groups for i in idx]
            self.inverse = torch.as_tensor(np.argsort(order), device=device)
            self.group_index = [torch.as_tensor(idx, device=device) for idx, _ in self.groups]
        self.polynomial_only = not relu

    def _relu_moments(self, K, p, q):
        return relu_gaussian_moments(K, p, q, self.data.zeta, zeta_order=self.zeta_order,
                                     angle_scale=self.angle_scale)

    def _cat(self, parts) -> torch.Tensor:
        return parts[0] if len(parts) == 1 else torch.cat(parts)[self.inverse]

    def gaussian(self, G, gamma):
        """(K (C, m, m), p (C, m), q (C, m)): the law N(p + q zeta, K) of z given zeta (module docstring)."""
        a, b2 = self.sched.alpha[:, None], self.sched.beta[:, None, None] ** 2
        K = b2 * G[:, :2].sum(1)
        if G.shape[1] > 2:
            K = K + self.sched.s2[:, None, None] * G[:, 2:].sum(1)
        return K, a * gamma[:, 1], a * (gamma[:, 0] - gamma[:, 1])

    def moments(self, G, gamma):
        """(K, p, q) and (P2, P1, D1) of every configuration (the joint-net interface)."""
        K, p, q = self.gaussian(G, gamma)
        outs = [fn(K[idx], p[idx], q[idx]) for idx, (_, fn) in zip(self.group_index, self.groups)]
        return (K, p, q), tuple(self._cat([o[k] for o in outs]) for k in range(3))

    def _loss(self, G, p, q, P2, P1, D1):
        """eq. (2) from the moments: <Gfull, P2> - 2 [(p . P1_0 + q . P1_1)/beta^2 + kappa . D1] + E||y||^2;
        also kappa (C, m), kappa_r = sum_p kappa2_p ||w_r^(p)||^2."""
        s = self.sched
        D = torch.diagonal(G, dim1=-2, dim2=-1)  # (C, P, m): ||w_r^(p)||^2
        kappa = s.kappa_rule[:, None] * D[:, :2].sum(1)
        if G.shape[1] > 2:
            kappa = kappa + s.kappa_noise[:, None] * D[:, 2:].sum(1)
        pair = (G.sum(1) * P2).sum((-1, -2))
        cross = ((p * P1[:, 0] + q * P1[:, 1]).sum(-1) / s.beta**2 + (kappa * D1).sum(-1))
        return pair - 2 * cross + self.constant_terms(), kappa

    def value(self, G, gamma) -> torch.Tensor:
        """(C,) exact losses (differentiable torch code)."""
        (_, p, q), moments = self.moments(G, gamma)
        return self._loss(G, p, q, *moments)[0]

    def _polynomial_value_and_grad(self, G, gamma):
        """``value_and_grad`` when every configuration is polynomial: the chain rule written out (no autograd
        engine); ``PolynomialMoments.backward`` gives d/d(K, p, q)."""
        s, mom = self.sched, self.groups[0][1]
        K, p, q = self.gaussian(G, gamma)
        T = mom.terms(K, p, q)
        P2, P1, D1 = mom.moments(T)
        L, kappa = self._loss(G, p, q, P2, P1, D1)
        b2 = s.beta[:, None] ** 2
        dK, dp, dq = mom.backward(T, G.sum(1), -2 * torch.stack([p, q], 1) / b2[..., None], -2 * kappa)
        dp, dq = dp - 2 * P1[:, 0] / b2, dq - 2 * P1[:, 1] / b2
        scale = torch.cat([b2.expand(-1, 2), s.s2[:, None].expand(-1, G.shape[1] - 2)], 1)  # dK/dG_p
        kap = torch.cat([s.kappa_rule[:, None].expand(-1, 2), s.kappa_noise[:, None].expand(-1, G.shape[1] - 2)], 1)
        S = P2[:, None] + scale[..., None, None] * dK[:, None] - 2 * torch.diag_embed(kap[..., None] * D1[:, None])
        a = s.alpha[:, None]
        return L, (S + S.transpose(-1, -2)) / 2, torch.stack([a * dq, a * (dp - dq)], 1)

    def value_and_grad(self, G, gamma):
        """(C,) losses, S = dL/dG (C, P, m, m; symmetrised), dL/dgamma (C, 2, m): written out for polynomial
        activations, by autograd through the moments when ReLU is among the configurations."""
        if self.polynomial_only:
            return self._polynomial_value_and_grad(G, gamma)
        with torch.inference_mode(False), torch.enable_grad():
            Gr, gr = G.detach().clone().requires_grad_(True), gamma.detach().clone().requires_grad_(True)
            L = self.value(Gr, gr)
            dG, dgamma = torch.autograd.grad(L.sum(), (Gr, gr))
        return L.detach(), (dG + dG.transpose(-1, -2)).detach() / 2, dgamma.detach()

    def psi(self, G, gamma):
        """(E[psi_t], Var[psi_t]) (C,) each (Def 4.3): Gamma . P1_0 and Gamma^T P2 Gamma - mean^2."""
        _, (P2, P1, _) = self.moments(G, gamma)
        Gam = gamma.sum(1)  # <w_r^(1), u> + <w_r^(2), v>
        mean = (Gam * P1[:, 0]).sum(-1)
        return mean, torch.einsum("cr,crs,cs->c", Gam, P2, Gam) - mean**2

    def constant_terms(self) -> torch.Tensor:
        """(C,) E||y||^2 summed over the patches (the loss of g = 0)."""
        return self.sched.constants(self.data.n_patches).sum(-1)


def block_gram_and_projections(blocks: torch.Tensor, data: MultiPatchData):
    """G_p = W_p W_p^T (C, P, m, m) and gamma = (W_1 u, W_2 v) (C, 2, m) of patch blocks (C, P, m, d)."""
    feats = torch.as_tensor(data.features, dtype=DTYPE, device=blocks.device)
    return blocks @ blocks.transpose(-1, -2), torch.einsum("cpmd,pd->cpm", blocks[:, :2], feats)


def check_joint_weights(W, data: MultiPatchData) -> torch.Tensor:
    """W as a float64 tensor (C, m, P*d) fitting ``data``, else a ValueError naming the expected shape."""
    if not isinstance(W, torch.Tensor):
        W = torch.as_tensor(np.asarray(W, dtype=np.float64))
    if W.dtype != DTYPE:
        raise ValueError(f"W must be a float64 tensor, got {W.dtype}")
    P, d = data.n_patches, data.d
    if W.ndim != 3 or W.shape[2] != P * d:
        raise ValueError(f"joint weights must have shape (C, m, {P * d}) = (C, m, n_patches*d) for data with "
                         f"n_patches={P}, d={d}; got {tuple(W.shape)}")
    if not bool(torch.isfinite(W).all()):
        raise ValueError("W contains NaN or infinite values")
    return W


def joint_population_loss(W, activation, data: MultiPatchData, alphas, betas, targets="paper", *,
                          zeta_order: int = ZETA_ORDER, angle_scale: int = 1) -> torch.Tensor:
    """Exact eq. (2) losses (C,) of joint weight sets W (C, m, P*d) (``JointTwoLayerScore.weights`` stacked),
    config c at (alphas[c], betas[c], targets[c]); ``activation``: one name or one per config. Differentiable
    in W by autograd (the joint counterpart of ``population_loss``)."""
    data = check_data(data)
    W = check_joint_weights(W, data)
    C = W.shape[0]
    acts = [get_activation(activation)] * C if isinstance(activation, str | Activation) else list(activation)
    if len(acts) != C:
        raise ValueError(f"activation must be one name or a sequence of {C} names, got {len(acts)}")
    obj = JointObjective(acts, data, alphas, betas, targets, W.device, zeta_order, angle_scale)
    return obj.value(*block_gram_and_projections(joint_blocks(W, data.n_patches), data))
