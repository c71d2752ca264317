"""The exact loss of a set of configurations, and the autograd bridge from W to (G, gamma).

The loss is a function F(G, gamma) of the per-patch Gram matrices G = W W^T and the rule-patch feature
projections gamma = W f; then dL/dW = 2 S W + (dL/dgamma) f^T with S = dF/dG (symmetric).
"""

from __future__ import annotations

import torch

from .._checks import DTYPE, check_int, check_schedule, check_zeta_order
from ..data import MultiPatchData, check_data
from ..losses import Target
from ..network import Activation, get_activation
from .polynomial import PolyEvaluator
from .relu import ReluEvaluator
from .schedule import ConfigSchedule
from .zeta_quadrature import ZETA_ORDER


def parse_configurations(activations, data, alphas, betas, targets, zeta_order, angle_scale):
    """The checked inputs of an exact objective (per-patch or joint): (data, activations, alphas, betas,
    targets, zeta_order, angle_scale); only relu and polynomial activations have an exact loss."""
    data = check_data(data)
    if isinstance(activations, str | Activation) or not len(activations):
        raise ValueError("activations must be a non-empty sequence, one activation per configuration")
    acts = [get_activation(a) for a in activations]
    alphas, betas = check_schedule(alphas, betas, len(acts))
    targets = Target.parse_each(targets, len(acts))
    for a in acts:
        if a.poly is None and a.name != "relu":
            raise ValueError(f"activation {a.name!r} has no exact population loss: use relu or a "
                             "polynomial activation (Activation.poly)")
    return data, acts, alphas, betas, targets, check_zeta_order(zeta_order), check_int("angle_scale", angle_scale)


class PopulationObjective:
    """The exact loss (eq. (2)) of C configurations (activation, alpha, beta, target) on one ``data``.

    ``value_and_grad(G, gamma)`` -> ((C,) losses, S (C, P, m, m), dL/dgamma (C, 2, m)) with the loss a
    function F(G, gamma) of the per-patch Gram matrices and rule-patch feature projections; then
    dL/dW = 2 S W + dL/dgamma f^T. Configurations are grouped internally (all polynomial activations in one
    batch, ReLU in another).
    """

    def __init__(self, activations, data: MultiPatchData, alphas, betas, targets, device,
                 zeta_order: int = ZETA_ORDER, angle_scale: int = 1):
        data, acts, alphas, betas, targets, zeta_order, angle_scale = parse_configurations(
            activations, data, alphas, betas, targets, zeta_order, angle_scale)
        self.C, self.data = len(acts), data
        poly = [i for i, a in enumerate(acts) if a.poly is not None]
        relu = [i for i, a in enumerate(acts) if a.poly is None]
        self.groups = []  # (configuration indices, evaluator)
        for idx, make in ((poly, lambda s: PolyEvaluator([acts[i].poly for i in poly], data, s, device)),
                          (relu, lambda s: ReluEvaluator(data, s, device, zeta_order, angle_scale))):
            if idx:
                sched = ConfigSchedule.build(data, [alphas[i] for i in idx], [betas[i] for i in idx],
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

    def constant_terms(self) -> torch.Tensor:
        """(C,) E||y||^2 summed over the patches: the loss of g = 0, the part of F that does not depend on W."""
        return self._scatter([ev.sched.constants(self.data.n_patches).sum(-1) for _, ev in self.groups])

    @property
    def relu_evaluator(self) -> ReluEvaluator:
        """The evaluator of the ReLU configurations (test-facing: ``pair_expectations``, ``rule_patch_losses``)."""
        for _, ev in self.groups:
            if isinstance(ev, ReluEvaluator):
                return ev
        raise ValueError("this objective has no relu configuration")


def gram_and_projections(W: torch.Tensor, data: MultiPatchData) -> tuple[torch.Tensor, torch.Tensor]:
    """G = W W^T per patch (C, P, m, m) and gamma = <w_r, f> on the rule patches (C, 2, m); W (C, P, m, d)."""
    if not isinstance(W, torch.Tensor) or W.ndim != 4 or W.shape[1] != data.n_patches or W.shape[3] != data.d:
        raise ValueError(f"W must be a tensor of shape (C, {data.n_patches}, m, {data.d}), got "
                         f"{tuple(W.shape) if isinstance(W, torch.Tensor) else type(W).__name__}")
    feats = torch.as_tensor(data.features, dtype=DTYPE, device=W.device)
    return W @ W.transpose(-1, -2), torch.einsum("cpmd,pd->cpm", W[:, :2], feats)


class ExactLoss(torch.autograd.Function):
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
