"""Exact full-batch gradient descent on the population loss (eq. (2)) in span(W(0), f) coordinates.

The population loss of eq. (1) depends on a patch's weights W (m x d) only through G = W W^T and
gamma = W f (``theory.population``), so dL/dW = 2 S W + (dL/dgamma) f^T with S symmetric: every GD step
stays in span(rows of W(0), f), of dimension k <= m + 1 (patches p >= 3 have no feature: span(W(0))).
With an orthonormal basis B (k x d) of that span whose first row is f, W = A B with A (m x k) and

    W_{k+1} = W_k - lr dL/dW   <=>   A_{k+1} = A_k - lr (2 S A_k + (dL/dgamma) e_1^T),

exactly, since B B^T = I and G = A A^T, gamma = A e_1. App. F runs GD on the Monte Carlo loss in d = 100
dimensions; this is its population (n, n_eps -> infinity) counterpart, the object of Thm 4.4/4.5, run in
k = 21 coordinates per patch for d = 100, m = 20 and mapped back to d dimensions at the end. The gradient
is the hand-written one of ``theory.population`` (no autograd in the loop); all configurations advance in
lock step (all polynomial activations in one batch, ReLU in another).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ._checks import DTYPE, check_choice, check_int, check_real, check_schedule, check_zeta_order, resolve_device
from .data import MultiPatchData, check_data
from .divergence import TrainingDiverged, diverged
from .losses import Target
from .network import get_activation
from .population import ZETA_ORDER, JointObjective, PopulationObjective, gram_and_projections, population_loss


@dataclass(frozen=True)
class SpanBasis:
    """Orthonormal bases ``basis`` (C, P, k, d) of span(W0 rows, f) per config and patch (zero rows pad
    rank deficits; row 0 is f on the two rule patches) and coordinates ``coords`` (C, P, m, k), W0 = A0 B."""

    basis: torch.Tensor
    coords: torch.Tensor

    def to_full(self, A: torch.Tensor) -> torch.Tensor:
        """Weights in d dimensions: W = A B."""
        return A @ self.basis


def span_basis(W0, data: MultiPatchData, rtol: float = 1e-13) -> SpanBasis:
    """Reduced coordinates of ``W0`` (C, P, m, d): k = m + 1 basis rows per patch (see the module docstring).

    Directions of W0 orthogonal to f with singular value below ``rtol`` times the largest are dropped (the
    rank is then deficient and zero rows pad the basis); W0 = A0 B is checked to 1e-10 relative.
    """
    check_data(data)
    rtol = check_real("rtol", rtol, positive=True)
    W0 = torch.as_tensor(W0)
    if W0.dtype != DTYPE:
        raise ValueError(f"W0 must be float64, got {W0.dtype}")
    if W0.ndim != 4 or W0.shape[1] != data.n_patches or W0.shape[3] != data.d:
        raise ValueError(f"W0 must have shape (C, {data.n_patches}, m, {data.d}), got {tuple(W0.shape)}")
    C, P, m, d = W0.shape
    feats = torch.as_tensor(data.features, dtype=DTYPE, device=W0.device)
    B = torch.zeros((C, P, m + 1, d), dtype=DTYPE, device=W0.device)
    for c in range(C):
        for p in range(P):
            W, rows = W0[c, p], []
            if p < 2:
                rows.append(feats[p][None])
                W = W - (W @ feats[p])[:, None] * feats[p][None]
            if bool((W != 0).any()):
                _, S, Vh = torch.linalg.svd(W, full_matrices=False)
                rows.append(Vh[S > rtol * S.max()])
            if rows:
                Q = torch.cat(rows, 0)[: m + 1]
                B[c, p, : Q.shape[0]] = Q
    A0 = W0 @ B.transpose(-1, -2)
    scale = float(W0.abs().max()) if W0.numel() else 0.0
    err = float((A0 @ B - W0).abs().max()) if W0.numel() else 0.0
    if err > 1e-10 * max(scale, 1e-300):
        raise ValueError(f"W0 is not represented in its span basis (error {err:.2e}): lower rtol")
    return SpanBasis(B, A0)


@dataclass
class ExactGDResult:
    """``weights`` (C, P, m, d) after the last epoch; ``history``: ``epoch`` (list), ``loss`` and
    ``grad_norm`` (float64 tensors (C, n_logged), NaN after a frozen divergence); ``seconds`` of wall time;
    ``diverged`` {config: epoch} of configurations frozen by ``on_divergence="freeze"``."""

    weights: torch.Tensor
    history: dict
    seconds: float
    diverged: dict = field(default_factory=dict)


def _per_config(name: str, value, C: int, parse) -> list:
    if isinstance(value, str) or not hasattr(value, "__len__"):
        return [parse(value)] * C
    vals = [parse(v) for v in value]
    if len(vals) not in (1, C):
        raise ValueError(f"{name} must be one value or a sequence of {C} values, got {len(vals)}")
    return vals * C if len(vals) == 1 else vals


def _pack(history: dict) -> dict:
    out = {"epoch": list(history["epoch"])}
    for key in ("loss", "grad_norm"):
        out[key] = torch.stack(history[key], 1).cpu() if history[key] else torch.zeros((0, 0), dtype=DTYPE)
    return out


class _Threads:
    """Temporarily set torch's intra-op threads (the tensors are small: 1 thread avoids sync overhead)."""

    def __init__(self, n):
        self.n, self.old = n, None

    def __enter__(self):
        if self.n is not None:
            self.old = torch.get_num_threads()
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        if self.old is not None:
            torch.set_num_threads(self.old)


def _initial_weights(W0, data: MultiPatchData, alphas, dev) -> torch.Tensor:
    """W0 as float64 (C, P, m, d) on ``dev``; a 3-D W0 is shared by the len(alphas) configs."""
    if not isinstance(W0, torch.Tensor):
        try:
            W0 = torch.as_tensor(np.asarray(W0, dtype=np.float64))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"W0 must be a real array (C, P, m, d), got {type(W0).__name__}") from exc
    W0 = W0.detach().to(dev, DTYPE)
    P, d = data.n_patches, data.d
    if W0.ndim not in (3, 4) or W0.shape[-3] != P or W0.shape[-1] != d:
        raise ValueError(f"W0 must have shape (C, {P}, m, {d}) or ({P}, m, {d}), got {tuple(W0.shape)}")
    if not bool(torch.isfinite(W0).all()):
        raise ValueError("W0 contains NaN or infinite values")
    if W0.ndim == 3:
        a = alphas.detach().cpu() if isinstance(alphas, torch.Tensor) else alphas
        n = np.atleast_1d(np.asarray(a)).size
        W0 = W0.expand(n, -1, -1, -1).clone()
    return W0


class _Coordinates:
    """The coordinates GD runs in: span coordinates A (W = A B, ``reduced``) or the weights W themselves."""

    def __init__(self, objective: PopulationObjective, data: MultiPatchData, W0: torch.Tensor, reduced: bool):
        self.objective, self.data = objective, data
        self.feats = torch.as_tensor(data.features, dtype=DTYPE, device=W0.device)
        self.span = span_basis(W0, data) if reduced else None
        self.start = self.span.coords.clone() if reduced else W0.clone()

    def loss_and_grad(self, X):
        """(C,) losses and dL/dX by the hand-written gradient dL/dW = 2 S W + dL/dgamma f^T."""
        if self.span is not None:  # row 0 of a rule patch's basis is its feature: gamma = A e_1
            L, S, g_gamma = self.objective.value_and_grad(X @ X.transpose(-1, -2), X[:, :2, :, 0])
            grad = 2 * S @ X
            grad[:, :2, :, 0] += g_gamma
        else:
            L, S, g_gamma = self.objective.value_and_grad(*gram_and_projections(X, self.data))
            grad = 2 * S @ X
            grad[:, :2] += g_gamma[..., None] * self.feats[None, :, None, :]
        return L, grad

    def full(self, X):
        """Weights in d dimensions."""
        return self.span.to_full(X) if self.span is not None else X


def _descend(coords: _Coordinates, lrs, epochs: int, log_every: int, on_divergence: str, describe, bar):
    """The GD loop: (last X, history, {frozen config: epoch}); ``describe(i, k, L, first)`` words a divergence."""
    X = coords.start
    C = X.shape[0]
    history = {"epoch": [], "loss": [], "grad_norm": []}
    active = torch.ones(C, dtype=torch.bool, device=X.device)
    frozen: dict[int, int] = {}
    first, prev, step_lr = None, X, lrs
    for k in range(epochs + 1):
        L, grad = coords.loss_and_grad(X)
        gnorm = grad.flatten(1).norm(dim=1)  # non-finite whenever the gradient is
        first = L if first is None else first
        bad = diverged(L, gnorm, first)
        if bool((bad & active).any()):
            bad = bad & active
            i = int(bad.nonzero()[0])
            if on_divergence == "raise":
                raise TrainingDiverged(describe(i, k, L, first), k, i, coords.full(prev), _pack(history))
            for j in bad.nonzero().flatten().tolist():
                frozen[j] = k
            X[bad] = prev[bad]
            active &= ~bad
            step_lr = lrs * active
        if k % log_every == 0 or k == epochs:
            history["epoch"].append(k)
            history["loss"].append(torch.where(active, L, torch.nan))
            history["grad_norm"].append(torch.where(active, gnorm, torch.nan))
        if k < epochs:
            prev = X  # X is replaced, never modified in place, below
            if frozen:
                grad = torch.where(active[:, None, None, None], grad, 0.0)
            X = X - step_lr[:, None, None, None] * grad
            if bar is not None:
                bar.update(1)
    return X, history, frozen


def exact_gradient_descent(W0, activation, data: MultiPatchData, alphas, betas, target, lr,
                           epochs: int = 5000, *, log_every: int = 10, progress: bool = False,
                           on_divergence: str = "raise", reduced: bool = True, device="auto",
                           zeta_order: int = ZETA_ORDER, num_threads: int | None = 1,
                           joint: bool = False) -> ExactGDResult:
    """Full-batch GD (App. F) on the exact population loss of eq. (2) for C configurations in lock step.

    ``W0``: initial weights (C, P, m, d), or (P, m, d) shared by all configs. ``activation``, ``target``
    ("paper"/"score") and ``lr``: one value or one per config. ``alphas``, ``betas``: the schedule per config
    (e.g. ``ou_schedule(t)``); C is W0's leading size, or their length when W0 is 3-D. ``epochs`` updates are
    made; the loss and gradient norm of W_k are logged at k % log_every == 0 and at k = epochs, as in
    ``theory.train``. ``reduced=False`` runs the same GD on the d-dimensional weights (a reference for tests).
    ``num_threads``: torch threads during the loop (restored after; None leaves them alone).
    ``joint=True`` (beyond the paper): W0 holds ``JointTwoLayerScore`` weights as patch blocks (C, P, m, d)
    (``theory.population.joint_blocks``) and the loss is ``JointObjective``'s; it too is a function of the
    blocks' Gram matrices and feature projections, so the same span coordinates hold block by block.

    Divergence (``theory.divergence.diverged``, the rule of Monte Carlo GD too): ``on_divergence="raise"``
    raises ``TrainingDiverged`` naming the first such config (``.config``) and its epoch (``.step``),
    carrying the last weights (C, P, m, d) at which every loss was finite (``.weights``); ``"freeze"`` keeps
    that config at its last finite weights, records it in ``result.diverged`` and continues with the others.
    """
    check_data(data)
    dev = resolve_device(device)
    W0 = _initial_weights(W0, data, alphas, dev)
    C = W0.shape[0]
    alphas, betas = check_schedule(alphas, betas, C)
    targets = Target.parse_each(target, C)
    acts = _per_config("activation", activation, C, get_activation)
    lrs = torch.tensor(_per_config("lr", lr, C, lambda v: check_real("lr", v, positive=True)), dtype=DTYPE,
                       device=dev)
    epochs = check_int("epochs", epochs, minimum=0)
    log_every = check_int("log_every", log_every)
    check_choice("on_divergence", on_divergence, ("raise", "freeze"))
    zeta_order = check_zeta_order(zeta_order)
    if num_threads is not None:
        num_threads = check_int("num_threads", num_threads)

    def describe(i, k, L, first):
        return (f"exact GD diverged for config {i} ({acts[i].name}, alpha={alphas[i]:.4g}, beta={betas[i]:.4g}, "
                f"target={targets[i].value}, lr={float(lrs[i]):g}) at epoch {k}: loss={float(L[i]):.4g} "
                f"(initial {float(first[i]):.4g}); lower lr or the init scale")

    with _Threads(num_threads), torch.inference_mode():
        t0 = time.perf_counter()
        objective = (JointObjective if joint else PopulationObjective)(acts, data, alphas, betas, targets, dev,
                                                                       zeta_order)
        coords = _Coordinates(objective, data, W0, reduced)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=epochs, desc=f"exact GD ({C} configs)", leave=False)
        try:
            X, history, frozen = _descend(coords, lrs, epochs, log_every, on_divergence, describe, bar)
        finally:
            if bar is not None:
                bar.close()
        return ExactGDResult(coords.full(X).clone(), _pack(history), time.perf_counter() - t0, frozen)


def stationarity(W, activation, data: MultiPatchData, alpha, beta, target="paper") -> float:
    """||dL/dW|| of the exact loss at W (P, m, d) in d dimensions: what GD drives to zero."""
    W = torch.as_tensor(W, dtype=DTYPE).detach().clone().requires_grad_(True)
    if W.ndim != 3:
        raise ValueError(f"W must have shape (P, m, d), got {tuple(W.shape)}")
    (g,) = torch.autograd.grad(population_loss(W[None], activation, data, [alpha], [beta], target).sum(), W)
    return float(g.norm())


__all__ = ["exact_gradient_descent", "ExactGDResult", "TrainingDiverged", "SpanBasis", "span_basis", "stationarity"]
