"""Input validation and device helpers shared by every ``theory`` module.

Every public function of the package validates its inputs with these helpers, so a bad value
raises ``ValueError`` naming the parameter, what it was and what is allowed, instead of
propagating as a silent NaN.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

DTYPE = torch.float64


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None) gives CUDA when present, else CPU; other values are passed to torch."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device={device!r} is not a torch device; use 'auto', 'cpu' or 'cuda[:k]'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} requested but CUDA is not available; use 'auto' or 'cpu'")
    return dev


def check_int(name: str, value, minimum: int = 1) -> int:
    """An integer (not bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def check_real(name: str, value, *, positive: bool = False, nonneg: bool = False) -> float:
    """A finite real scalar, optionally > 0 or >= 0."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    if isinstance(value, torch.Tensor | np.ndarray):
        size = value.size if isinstance(value, np.ndarray) else value.numel()
        if size != 1:
            raise ValueError(f"{name} must be a scalar, got an array of shape {tuple(value.shape)}")
        value = value.item()
    try:
        x = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a finite real number, got {value!r}") from exc
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {x}")
    if positive and not x > 0:
        raise ValueError(f"{name} must be > 0, got {x}")
    if nonneg and not x >= 0:
        raise ValueError(f"{name} must be >= 0, got {x}")
    return x


def check_alpha_beta(alpha, beta) -> tuple[float, float]:
    """Noise-schedule coefficients of x_t = alpha x_0 + beta eps: both finite and > 0."""
    return check_real("alpha", alpha, positive=True), check_real("beta", beta, positive=True)


def check_instance(name: str, value, cls: type, kinds: str = ""):
    """``value`` is a ``cls`` (e.g. ``check_instance("data", data, MultiPatchData)``); ``kinds`` names the
    allowed subclasses in the message."""
    if not isinstance(value, cls):
        got = repr(value) if value is None or isinstance(value, str | numbers.Number) else type(value).__name__
        raise ValueError(f"{name} must be a {cls.__name__}{f' ({kinds})' if kinds else ''}, got {got}")
    return value


def check_per_config(name: str, values, C: int) -> np.ndarray:
    """Reals, one per configuration: a scalar (shared by all C) or C values; a float64 array (C,)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        arr = np.atleast_1d(np.asarray(values, dtype=np.float64))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a scalar or a sequence of {C} reals, got {values!r}") from exc
    if arr.ndim != 1 or arr.size not in (1, C):
        raise ValueError(f"{name} must be a scalar or a sequence of {C} values, got shape {arr.shape}")
    return np.broadcast_to(arr, (C,)).copy()


def check_schedule(alphas, betas, C: int) -> tuple[np.ndarray, np.ndarray]:
    """Schedule coefficients of C configurations (scalars or C values each), every pair checked by
    ``check_alpha_beta``."""
    alphas, betas = check_per_config("alphas", alphas, C), check_per_config("betas", betas, C)
    for a, b in zip(alphas, betas):
        check_alpha_beta(a, b)
    return alphas, betas


def check_zeta_order(zeta_order) -> int:
    """Gauss nodes per panel of the quadrature in the patch coefficient c (exact ReLU loss)."""
    return check_int("zeta_order", zeta_order, minimum=2)


def check_choice(name: str, value, allowed) -> str:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return value


def check_rng(rng) -> np.random.Generator:
    """A seeded ``numpy.random.Generator`` (an int seed is accepted and wrapped)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool) and rng >= 0:
        return np.random.default_rng(int(rng))
    raise ValueError(f"rng must be a numpy.random.Generator or a non-negative int seed, got {rng!r}")


def as_float64(name: str, x, device: torch.device | None = None) -> torch.Tensor:
    """Convert array-like input to a finite float64 tensor."""
    if isinstance(x, torch.Tensor):
        t = x.to(dtype=DTYPE, device=device if device is not None else x.device)
    else:
        try:
            arr = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must be a real array, got {type(x).__name__}") from exc
        t = torch.as_tensor(arr, dtype=DTYPE, device=device)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return t


def to_like(result: torch.Tensor, like):
    """Return ``result`` as numpy when the caller passed numpy, as a tensor when it passed a tensor."""
    if isinstance(like, torch.Tensor):
        return result
    return result.detach().cpu().numpy()
