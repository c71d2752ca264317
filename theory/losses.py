"""eq. (2): the denoising score-matching (DSM) loss, and its Monte Carlo estimator of App. F.

    L(W) = E_{eps, x_0} sum_p || s^(p)(x_t^(p)) - target^(p) ||^2,   x_t = alpha x_0 + beta eps.

``Target.PAPER`` is eq. (2) as printed, target = eps. With s = -x/beta^2 + g (eq. (1)) the
minimiser is s = E[eps | x_t] = -beta * score, i.e. the printed loss does not learn the score.
``Target.SCORE`` is the consistent DSM loss, target = -eps/beta, whose minimiser is the score
(Vincent 2011). In terms of the residual g: paper wants g = x/beta^2 + eps, score wants
g = alpha x_0 / beta^2. Constants are included: the loss of the exact score is not zero.
"""

from __future__ import annotations

import math
from enum import Enum

import torch

from ._checks import DTYPE, check_alpha_beta, check_choice, check_int, resolve_device
from .data import MultiPatchData, check_data


class Target(str, Enum):
    PAPER = "paper"  # eq. (2) as printed: s(x_t) ~ eps
    SCORE = "score"  # consistent DSM: s(x_t) ~ -eps / beta

    @classmethod
    def parse(cls, value) -> Target:
        if isinstance(value, Target):
            return value
        return cls(check_choice("target", value, [t.value for t in cls]))

    @classmethod
    def parse_each(cls, values, C: int) -> list[Target]:
        """One target per configuration: one name for all C, or C names."""
        if isinstance(values, str | Target):
            return [cls.parse(values)] * C
        targets = [cls.parse(t) for t in values]
        if len(targets) != C:
            raise ValueError(f"targets must be one name or a sequence of {C} names, got {len(targets)}")
        return targets


def residual_target(x_t, eps, alpha: float, beta: float, target) -> torch.Tensor:
    """What the residual g must match: x_t/beta^2 + eps ("paper") or x_t/beta^2 - eps/beta ("score")."""
    target = Target.parse(target)
    if target is Target.PAPER:
        return x_t / beta**2 + eps
    return x_t / beta**2 - eps / beta


class DSMLoss:
    """eq. (2) on given samples: mean over rows of sum_p ||s^(p)(x_t) - target^(p)||^2 (Ho et al. 2020).

    ``x0`` and ``eps`` have shape (N, P, d); differentiable in the network weights.
    """

    def __init__(self, target="paper"):
        self.target = Target.parse(target)

    def __call__(self, net, x0, eps, alpha, beta) -> torch.Tensor:
        alpha, beta = check_alpha_beta(alpha, beta)
        x0 = torch.as_tensor(x0, dtype=DTYPE, device=net.device)
        eps = torch.as_tensor(eps, dtype=DTYPE, device=net.device)
        if x0.shape != eps.shape or x0.ndim != 3:
            raise ValueError(f"x0 and eps must both have shape (N, P, d), got {tuple(x0.shape)}, {tuple(eps.shape)}")
        x_t = alpha * x0 + beta * eps
        s = net(x_t, beta=beta)
        tgt = eps if self.target is Target.PAPER else -eps / beta
        return ((s - tgt) ** 2).sum(dim=(1, 2)).mean()


class MonteCarloLoss:
    """The App. F estimator: n data x n_eps noise draws per datum, fixed once drawn.

    Keeps zeta (n,), the independent patches of x_0 and eps (n, n_eps, P, d) in ``dtype``
    (float32 halves memory and time; accumulation is always float64), and evaluates the loss
    and its gradient with a hand-written chunked backward pass (no autograd graph of 10^6 rows):

        z = X W^T, e = sigma(z) W - Y,  dL/dW = (2/N) [sigma(z)^T e + (sigma'(z) * (e W^T))^T X].
    """

    def __init__(self, data: MultiPatchData, alpha, beta, n: int = 1000, n_eps: int = 1000, target="paper",
                 seed: int = 0, dtype=torch.float64, device="auto", chunk_rows: int = 16384):
        self.data = check_data(data)
        self.alpha, self.beta = check_alpha_beta(alpha, beta)
        self.n = check_int("n", n)
        self.n_eps = check_int("n_eps", n_eps)
        self.target = Target.parse(target)
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        self.dtype = dtype
        self.device = resolve_device(device)
        self.chunk_rows = check_int("chunk_rows", chunk_rows)
        self.seed = check_int("seed", seed, minimum=0)
        self.resample(self.seed)

    def resample(self, seed: int) -> None:
        """Draw a fresh sample set (App. F's 'for each epoch, we sample' reading) from ``seed``."""
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        P, d = self.data.n_patches, self.data.d
        zeta_rng = torch.randint(0, 2**63 - 1, (1,), generator=gen).item()
        import numpy as np

        zeta = self.data.zeta.sample(self.n, np.random.default_rng(zeta_rng))
        feats = torch.as_tensor(self.data.features, dtype=DTYPE)
        coef = torch.as_tensor(self.data.coefficients(zeta), dtype=DTYPE)
        x0 = torch.zeros((self.n, P, d), dtype=DTYPE)
        x0[:, :2] = coef[:, :, None] * feats[None]
        if P > 2:
            x0[:, 2:] = torch.randn((self.n, P - 2, d), generator=gen, dtype=DTYPE)
        self.x0 = x0.to(self.device, self.dtype)
        # Drawn in float64 blocks and stored in ``dtype``: the float32 and float64 estimators share one sample set.
        eps = torch.empty((self.n, self.n_eps, P, d), dtype=self.dtype)
        block = max(1, (1 << 22) // (self.n_eps * P * d))
        for i in range(0, self.n, block):
            j = min(self.n, i + block)
            eps[i:j] = torch.randn((j - i, self.n_eps, P, d), generator=gen, dtype=DTYPE).to(self.dtype)
        self.eps = eps.to(self.device)

    def _check_weights(self, W, joint: bool = False) -> torch.Tensor:
        W = torch.as_tensor(W)
        P, d = self.data.n_patches, self.data.d
        shape = (1, P * d) if joint else (P, d)
        if W.ndim != 3 or (W.shape[0], W.shape[2]) != shape:
            raise ValueError(f"weights must have shape ({shape[0]}, m, {shape[1]}), got {tuple(W.shape)}")
        return W

    def _chunks(self):
        per = max(1, self.chunk_rows // self.n_eps)
        for i in range(0, self.n, per):
            yield slice(i, min(self.n, i + per))

    def _patch_batch(self, sl, p):
        """Rows (k*n_eps, d) of x_t^(p) and of the residual target for data rows ``sl``
        (p = None: all patches concatenated, rows of length P*d, for a joint network)."""
        if p is None:
            x0 = self.x0[sl].reshape(self.x0[sl].shape[0], -1)
            eps = self.eps[sl].reshape(*self.eps[sl].shape[:2], -1)
        else:
            x0 = self.x0[sl, p]  # (k, d)
            eps = self.eps[sl, :, p]  # (k, n_eps, d)
        x = self.alpha * x0[:, None, :] + self.beta * eps
        y = residual_target(x, eps, self.alpha, self.beta, self.target)
        return x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])

    def value_and_grad(self, W, activation, need_grad: bool = True, per_datum: bool = False, joint: bool = False):
        """(loss, dL/dW) at weights W (P, m, d) for an activation (name or ``Activation``).

        ``joint=True``: W has shape (1, m, P*d) and acts on the concatenated patches
        (``JointTwoLayerScore``); the loss is the same sum over patches. With ``per_datum`` a third
        value holds each datum's loss averaged over its noise draws.
        """
        out = self.value_and_grad_many([W], [activation], [joint], need_grad=need_grad, per_datum=per_datum)[0]
        return out if per_datum else out[:2]

    def value_and_grad_many(self, Ws, activations, joints=None, need_grad: bool = True, per_datum: bool = False):
        """``value_and_grad`` for several networks on the same sample set, building each chunk of
        x_t and of the regression target once: [(loss, grad, per_datum or None), ...]."""
        from .network import get_activation

        if len(Ws) != len(activations) or not Ws:
            raise ValueError("Ws and activations must be non-empty lists of equal length")
        joints = [False] * len(Ws) if joints is None else list(joints)
        acts = [get_activation(a) for a in activations]
        Ws = [self._check_weights(W, j).to(self.device, DTYPE) for W, j in zip(Ws, joints)]
        Wc = [W.to(self.dtype) for W in Ws]
        totals = [torch.zeros((), dtype=DTYPE, device=self.device) for _ in Ws]
        grads = [torch.zeros_like(W) if need_grad else None for W in Ws]
        datum = [torch.zeros(self.n, dtype=DTYPE, device=self.device) if per_datum else None for _ in Ws]
        N = self.n * self.n_eps
        # per-patch batches only when a per-patch net needs them, the concatenated one only for joint nets
        patches = list(range(self.data.n_patches)) if not all(joints) else []
        for patch in [*patches, None] if any(joints) else patches:
            for sl in self._chunks():
                x, y = self._patch_batch(sl, patch)
                for c, (act, joint) in enumerate(zip(acts, joints)):
                    if joint != (patch is None):
                        continue
                    p = 0 if joint else patch
                    w = Wc[c][p]  # (m, d), or (m, P*d) for a joint network
                    z = x @ w.T
                    sz = act.fn(z)
                    e = sz @ w - y
                    sq = (e * e).sum(-1)
                    totals[c] += sq.sum(dtype=DTYPE)
                    if per_datum:
                        datum[c][sl] += sq.reshape(-1, self.n_eps).to(DTYPE).mean(-1)
                    if need_grad:
                        grads[c][p] += (sz.T @ e + (act.deriv(z) * (e @ w.T)).T @ x).to(DTYPE)
        out = []
        for c in range(len(Ws)):
            g = grads[c] * (2.0 / N) if need_grad else None
            out.append((totals[c] / N, g, datum[c]))
        return out

    def value(self, net) -> float:
        """The Monte Carlo loss of a ``TwoLayerScore``."""
        loss, _ = self.value_and_grad(net.weights.detach(), net.activation, need_grad=False, joint=net.joint)
        return float(loss)

    def standard_error(self, net) -> float:
        """SE of ``value``: the n per-datum means are i.i.d., SE = sd(per-datum mean)/sqrt(n)."""
        if self.n < 2:
            raise ValueError("standard_error needs n >= 2 data")
        _, _, datum = self.value_and_grad(net.weights.detach(), net.activation, need_grad=False, per_datum=True,
                                          joint=net.joint)
        return float(datum.std(unbiased=True)) / math.sqrt(self.n)
