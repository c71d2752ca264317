"""The array operations the ReLU kernel is written against, for two backends.

The kernel (``relu``, ``relu_angular``, ``relu_moments``) is written once against an ``ArrayOps`` table.
torch: any device, differentiable (``value``, the autograd reference of the hand-written gradient, and
CUDA). numpy: the CPU path of ``value_and_grad`` (float64 throughout; per-operation dispatch is ~4x cheaper
than torch's on the small arrays of a GD epoch; erf and ndtr are torch's kernels on the same memory).
``stack`` is along a new first axis; ``take`` along the last. ``scatter_add(index, values, n)`` sums
``values`` (..., N) into (..., n); its index is backend-specific (torch: (N,) along the last axis; numpy:
flat over all leading axes, for one bincount). ``TORCH_OPS`` and ``NUMPY_OPS`` are public so that tests can
run the same kernel on both backends (``ReluEvaluator.rule_patch_losses``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import numpy as np
import torch


class Backend(str, Enum):
    NUMPY = "numpy"
    TORCH = "torch"


@dataclass(frozen=True)
class ArrayOps:
    """One backend's array operations (see the module docstring for the conventions)."""

    backend: Backend
    asarray: Callable  # (numpy array, device) -> this backend's array
    exp: Callable
    sqrt: Callable
    log: Callable
    log1p: Callable
    expm1: Callable
    erf: Callable
    ndtr: Callable
    arccos: Callable
    where: Callable
    maximum: Callable
    clip: Callable
    clip_min: Callable
    clip_max: Callable
    stack: Callable
    cat: Callable
    take: Callable
    diagonal: Callable
    swap: Callable
    detach: Callable
    bucketize: Callable
    differ: Callable
    nonzero: Callable
    put: Callable
    sign: Callable
    scatter_add: Callable
    scatter: Callable
    diag_embed: Callable


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


TORCH_OPS = ArrayOps(
    backend=Backend.TORCH, asarray=lambda x, device: torch.as_tensor(x, device=device),
    exp=torch.exp, sqrt=torch.sqrt, log=torch.log, log1p=torch.log1p, expm1=torch.expm1,
    erf=torch.erf, ndtr=torch.special.ndtr, arccos=torch.arccos, where=torch.where, maximum=torch.maximum,
    clip=torch.clamp, clip_min=lambda x, lo: x.clamp(min=lo), clip_max=lambda x, hi: x.clamp(max=hi),
    stack=torch.stack, cat=torch.cat, take=lambda x, i: x.index_select(-1, i),
    diagonal=lambda G: torch.diagonal(G, dim1=-2, dim2=-1),
    swap=lambda x: x.transpose(-1, -2), detach=lambda x: x.detach(),
    bucketize=lambda x, edges: torch.bucketize(x, edges, right=True), differ=lambda a, b: bool((a != b).any()),
    nonzero=lambda x: x.nonzero().flatten(), put=lambda x, i, v: x.index_put((i,), v),
    sign=lambda x: torch.where(x < 0, -1.0, torch.ones_like(x)),
    scatter_add=lambda i, v, n: v.new_zeros((*v.shape[:-1], n)).index_add(-1, i, v),
    scatter=lambda i, v, n: v.new_zeros((*v.shape[:-1], n)).index_copy(-1, i, v),
    diag_embed=torch.diag_embed)
NUMPY_OPS = ArrayOps(
    backend=Backend.NUMPY, asarray=lambda x, device: x,
    exp=np.exp, sqrt=np.sqrt, log=np.log, log1p=np.log1p, expm1=np.expm1,
    erf=_through_torch(torch.erf), ndtr=_through_torch(torch.special.ndtr), arccos=np.arccos, where=np.where,
    maximum=np.maximum, clip=lambda x, lo, hi: np.minimum(np.maximum(x, lo), hi), clip_min=np.maximum,
    clip_max=np.minimum,
    stack=np.array, cat=np.concatenate, take=lambda x, i: x.take(i, -1), diagonal=lambda G: G.diagonal(0, -2, -1),
    swap=lambda x: x.swapaxes(-1, -2), detach=lambda x: x,
    bucketize=lambda x, edges: edges.searchsorted(x, side="right"), differ=lambda a, b: bool((a != b).any()),
    nonzero=np.flatnonzero, put=_np_put, sign=lambda x: np.copysign(1.0, x),
    scatter_add=lambda i, v, n: np.bincount(i[: v.size], v.reshape(-1), v.size // v.shape[-1] * n).reshape(
        *v.shape[:-1], n),
    scatter=_np_scatter, diag_embed=lambda x: x[..., None] * np.eye(x.shape[-1]))
OPS = {Backend.NUMPY: NUMPY_OPS, Backend.TORCH: TORCH_OPS}
