"""Noise schedules (alpha_t, beta_t) of the forward process x_t = alpha_t x_0 + beta_t eps.

* ``ou_schedule``: the Ornstein-Uhlenbeck schedule of App. F, alpha_t = e^{-t},
  beta_t = sqrt(1 - e^{-2t}), t > 0 continuous.
* ``DDPMSchedule``: the discrete DDPM linear schedule of Sec. 3.2 / App. D.1 (T = 1000,
  beta_1 = 1e-4 ... beta_T = 2e-2); step k (1-based) has alpha = sqrt(abar_k),
  beta = sqrt(1 - abar_k) with abar_k = prod_{i<=k} (1 - beta_i).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._checks import check_int, check_real


def ou_schedule(t) -> tuple[float, float]:
    """(alpha_t, beta_t) = (e^{-t}, sqrt(1 - e^{-2t})) for a scalar t > 0 (App. F)."""
    t = check_real("t", t, positive=True)
    alpha = math.exp(-t)
    beta = math.sqrt(-math.expm1(-2.0 * t))  # accurate for tiny t
    return alpha, beta


def ou_time(alpha) -> float:
    """Inverse of ``ou_schedule``: the t with e^{-t} = alpha, for 0 < alpha < 1."""
    alpha = check_real("alpha", alpha, positive=True)
    if alpha >= 1:
        raise ValueError(f"alpha must be in (0, 1) for the OU schedule, got {alpha}")
    return -math.log(alpha)


@dataclass(frozen=True)
class DDPMSchedule:
    """Linear DDPM schedule (Ho et al. 2020; the paper's App. D.1 values are the defaults)."""

    T: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 2e-2

    def __post_init__(self):
        check_int("T", self.T, minimum=2)
        b0 = check_real("beta_start", self.beta_start, positive=True)
        b1 = check_real("beta_end", self.beta_end, positive=True)
        if not (b0 <= b1 < 1):
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {b0}, {b1}")

    @property
    def betas(self) -> np.ndarray:
        return np.linspace(self.beta_start, self.beta_end, self.T, dtype=np.float64)

    @property
    def alpha_bars(self) -> np.ndarray:
        return np.cumprod(1.0 - self.betas)

    def alpha_beta(self, step: int) -> tuple[float, float]:
        """(sqrt(abar_k), sqrt(1 - abar_k)) for the 1-based step k in [1, T]."""
        k = check_int("step", step, minimum=1)
        if k > self.T:
            raise ValueError(f"step must be in [1, {self.T}], got {k}")
        abar = float(self.alpha_bars[k - 1])
        return math.sqrt(abar), math.sqrt(1.0 - abar)
