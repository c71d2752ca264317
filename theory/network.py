"""eq. (1): the two-layer per-patch score network

    s^(p)(x_t) = -x_t^(p) / beta_t^2 + sum_{r=1}^m sigma(<w_r^(p), x_t^(p)>) w_r^(p),

with a separate set of m neurons per patch and shared encoder/decoder weights. ``residual`` is
the learned part g^(p)(x) = s^(p)(x) + x^(p)/beta^2, which is what Def 4.3's psi_t reads off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ._checks import DTYPE, check_int, check_real, resolve_device


@dataclass(frozen=True)
class Activation:
    """An activation sigma with its derivative; ``poly`` holds the coefficients c_k of
    sigma(z) = sum_k c_k z^k for polynomial activations (None for ReLU)."""

    name: str
    fn: callable
    deriv: callable
    poly: tuple[float, ...] | None

    def __reduce__(self):
        # The registered activations hold lambdas, which pickle cannot send to a worker process
        # (``train_many(workers=...)``, a ``TrainingDiverged`` carrying its net): send the name instead.
        if ACTIVATIONS.get(self.name) is not self:
            raise TypeError(f"only the registered activations ({', '.join(ACTIVATIONS)}) can be pickled, "
                            f"not a custom {self.name!r}")
        return get_activation, (self.name,)


ACTIVATIONS: dict[str, Activation] = {
    "relu": Activation("relu", torch.relu, lambda z: (z > 0).to(z.dtype), None),
    "linear": Activation("linear", lambda z: z, torch.ones_like, (0.0, 1.0)),
    "quadratic": Activation("quadratic", lambda z: z * z, lambda z: 2 * z, (0.0, 0.0, 1.0)),
    "cubic": Activation("cubic", lambda z: z**3, lambda z: 3 * z * z, (0.0, 0.0, 0.0, 1.0)),
}


def get_activation(name) -> Activation:
    if isinstance(name, Activation):
        return name
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known activations: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def default_init_std(d: int) -> float:
    """Small Gaussian initialisation sigma_0 = 0.1 / sqrt(d), so ||w^0|| ~ 0.1.

    Thm 4.5 asks for sigma_0 = O(d^{-1/2}) but the paper never gives the constant; this is ours.
    """
    return 0.1 / math.sqrt(d)


class TwoLayerScore(nn.Module):
    """eq. (1). Weights are a float64 tensor of shape (n_patches, m, d).

    ``beta`` may be fixed at construction (used when ``forward`` is called without it).
    """

    def __init__(self, d: int, m: int, activation="relu", n_patches: int = 2, init_std: float | None = None,
                 beta: float | None = None, seed: int | None = 0, device="auto"):
        super().__init__()
        self.d = check_int("d", d, minimum=2)
        self.m = check_int("m", m, minimum=1)
        self.n_patches = check_int("n_patches", n_patches, minimum=1)
        self.activation = get_activation(activation)
        self.init_std = default_init_std(self.d) if init_std is None else check_real("init_std", init_std, nonneg=True)
        self.beta = None if beta is None else check_real("beta", beta, positive=True)
        dev = resolve_device(device)
        gen = torch.Generator(device="cpu")
        if seed is not None:
            gen.manual_seed(int(seed))
        w = torch.randn(self.weight_shape, generator=gen, dtype=DTYPE) * self.init_std
        self.weights = nn.Parameter(w.to(dev))

    joint = False

    @property
    def weight_shape(self) -> tuple[int, int, int]:
        return (self.n_patches, self.m, self.d)

    @classmethod
    def from_weights(cls, W, activation="relu", beta: float | None = None, device=None) -> TwoLayerScore:
        """A network with the given weights (n_patches, m, d) (copied, float64)."""
        W = torch.as_tensor(W, dtype=DTYPE)
        if W.ndim != 3:
            raise ValueError(f"W must have shape (n_patches, m, d), got {tuple(W.shape)}")
        if not bool(torch.isfinite(W).all()):
            raise ValueError("W contains NaN or infinite values")
        P, m, d = W.shape
        dev = W.device if device is None else resolve_device(device)
        net = cls(d, m, activation, n_patches=P, init_std=0.0, beta=beta, seed=None, device=dev)
        with torch.no_grad():
            net.weights.copy_(W.to(dev))
        return net

    @property
    def device(self) -> torch.device:
        return self.weights.device

    def _as_input(self, x) -> tuple[torch.Tensor, bool]:
        x = torch.as_tensor(x, dtype=DTYPE, device=self.device)
        P, d = self.n_patches, self.d
        flat = x.ndim == 2 and x.shape[1] == P * d
        if flat:
            x = x.reshape(x.shape[0], P, d)
        if x.ndim != 3 or tuple(x.shape[1:]) != (P, d):
            raise ValueError(f"x_t must have shape (n, {P}, {d}) or (n, {P * d}), got {tuple(x.shape)}")
        return x, flat

    def preactivations(self, x) -> torch.Tensor:
        """z_{n,p,r} = <w_r^(p), x^(p)_n>."""
        x, _ = self._as_input(x)
        return torch.einsum("npd,pmd->npm", x, self.weights)

    def residual(self, x) -> torch.Tensor:
        """g^(p)(x) = sum_r sigma(<w_r^(p), x^(p)>) w_r^(p), shape (n, P, d)."""
        x, flat = self._as_input(x)
        z = torch.einsum("npd,pmd->npm", x, self.weights)
        g = torch.einsum("npm,pmd->npd", self.activation.fn(z), self.weights)
        return g.reshape(g.shape[0], -1) if flat else g

    def forward(self, x, beta: float | None = None) -> torch.Tensor:
        """s(x_t) of eq. (1), same shape as x."""
        beta = self.beta if beta is None else beta
        if beta is None:
            raise ValueError("beta must be given at construction or at call time")
        beta = check_real("beta", beta, positive=True)
        x_t, _ = self._as_input(x)
        g = self.residual(x_t)
        s = -x_t / beta**2 + g
        return s.reshape(s.shape[0], -1) if (torch.as_tensor(x).ndim == 2) else s

    def extra_repr(self) -> str:
        return f"d={self.d}, m={self.m}, n_patches={self.n_patches}, activation={self.activation.name}"


class JointTwoLayerScore(TwoLayerScore):
    """Beyond the paper: eq. (1) with neurons that see all patches at once.

    g(x) = sum_r sigma(<w_r, [x^(1); ...; x^(P)]>) w_r with w_r in R^{P d}, split back into patches.
    Unlike the per-patch network it can couple x^(1) and x^(2), which the rule (*) requires of the
    exact score; comparing the two shows whether the separable architecture is what fails.
    Weights have shape (1, m, P*d); ``.d`` and ``.n_patches`` still describe the data layout.
    """

    joint = True

    def __init__(self, d: int, m: int, activation="relu", n_patches: int = 2, init_std: float | None = None,
                 beta: float | None = None, seed: int | None = 0, device="auto"):
        d = check_int("d", d, minimum=2)
        n_patches = check_int("n_patches", n_patches, minimum=2)
        init_std = default_init_std(n_patches * d) if init_std is None else init_std
        super().__init__(d, m, activation, n_patches=n_patches, init_std=init_std, beta=beta, seed=seed,
                         device=device)

    @property
    def weight_shape(self) -> tuple[int, int, int]:
        return (1, self.m, self.n_patches * self.d)

    @classmethod
    def from_weights(cls, W, activation="relu", beta: float | None = None, device=None,
                     n_patches: int = 2) -> JointTwoLayerScore:
        """A joint network with weights (1, m, n_patches*d)."""
        W = torch.as_tensor(W, dtype=DTYPE)
        n_patches = check_int("n_patches", n_patches, minimum=2)
        if W.ndim != 3 or W.shape[0] != 1 or W.shape[2] % n_patches:
            raise ValueError(f"W must have shape (1, m, n_patches*d) with n_patches={n_patches}, got {tuple(W.shape)}")
        if not bool(torch.isfinite(W).all()):
            raise ValueError("W contains NaN or infinite values")
        dev = W.device if device is None else resolve_device(device)
        net = cls(W.shape[2] // n_patches, W.shape[1], activation, n_patches=n_patches, init_std=0.0, beta=beta,
                  seed=None, device=dev)
        with torch.no_grad():
            net.weights.copy_(W.to(dev))
        return net

    def preactivations(self, x) -> torch.Tensor:
        x, _ = self._as_input(x)
        return torch.einsum("nd,md->nm", x.reshape(x.shape[0], -1), self.weights[0])[:, None, :]

    def residual(self, x) -> torch.Tensor:
        x, flat = self._as_input(x)
        z = x.reshape(x.shape[0], -1) @ self.weights[0].T
        g = self.activation.fn(z) @ self.weights[0]
        return g if flat else g.reshape(x.shape)
