"""One step of the reverse process, with classifier guidance (Dhariwal & Nichol 2021; Section 5)."""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from empirics.ddpm.config import Sampler, SampleSpec

__all__ = ["Guide", "posterior_variance", "reverse_step"]


@runtime_checkable
class Guide(Protocol):
    """What :func:`sample_images` asks of a guide (``empirics.guidance.ClassifierGuide`` is one).

    ``scales(n_steps)``: the guidance scale s of each of the ``n_steps`` sampling steps, first step
    first (it raises ``ValueError`` when the schedule does not fit ``n_steps``);
    ``grad_log_prob(x_t, t)``: grad_x log p(y | x_t, t) at the current sample, same shape as ``x_t``.
    """

    def scales(self, n_steps: int) -> np.ndarray: ...

    def grad_log_prob(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...


def _alphas_cumprod_step(sched, t) -> tuple[float, float]:
    """(abar_t, abar_prev) of the step from timestep ``t`` as the DDPM or DDIM scheduler itself takes them.

    DDPM: ``previous_timestep`` (the respaced one), abar = 1 past the end; DDIM: t - T / steps, its
    ``final_alpha_cumprod`` (1, ``set_alpha_to_one``) past the end.
    """
    from diffusers import DDIMScheduler, DDPMScheduler

    abar = sched.alphas_cumprod
    if isinstance(sched, DDPMScheduler):
        prev, last = int(sched.previous_timestep(t)), 1.0
    elif isinstance(sched, DDIMScheduler):
        prev = int(t) - sched.config.num_train_timesteps // sched.num_inference_steps
        last = float(sched.final_alpha_cumprod)
    else:
        raise ValueError(f"no step variance for {type(sched).__name__}")
    return float(abar[int(t)]), float(abar[prev]) if prev >= 0 else last


def posterior_variance(sched, t) -> float:
    """Sigma_t of the ancestral step from ``t`` to the scheduler's previous timestep (``fixed_small``).

    beta~_t = (1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev) (Ho et al. 2020, eq. (7)), with
    abar_prev = 1 after the last step and, for a respaced sampler, abar_prev at the respaced previous
    timestep, as ``DDPMScheduler`` itself takes it (``previous_timestep``). It is 0 at the last step.
    For a DDIM scheduler it is the same quantity over the DDIM step (DDIM's sigma^2 = eta^2 beta~).
    """
    a_t, a_prev = _alphas_cumprod_step(sched, t)
    return (1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev)


def _ddim_score_shift(sched, t, eta: float) -> float:
    """c such that eps -> eps - sqrt(1 - abar_t) * g moves DDIM's x_prev by c * g (x0 not clipped).

    x0 moves by (1 - abar_t) / sqrt(abar_t) * g and the direction term by -sqrt(1 - abar_prev - sigma^2)
    * sqrt(1 - abar_t) * g (Song et al. 2021, eq. (12)).
    """
    a_t, a_prev = _alphas_cumprod_step(sched, t)
    sigma2 = eta**2 * posterior_variance(sched, t)
    b_t = math.sqrt(1.0 - a_t)
    return b_t * (math.sqrt(a_prev) * b_t / math.sqrt(a_t) - math.sqrt(max(0.0, 1.0 - a_prev - sigma2)))


def reverse_step(sched, spec: SampleSpec, x: torch.Tensor, t, eps: torch.Tensor, gens, *, scale: float = 0.0,
                 grad: torch.Tensor | None = None) -> torch.Tensor:
    """One step of the reverse process ``spec`` from ``x`` = x_t at timestep ``t`` given ``eps = model(x_t, t)``.

    ``gens`` are the per-sample generators of the step's noise. Classifier guidance (Dhariwal & Nichol
    2021) with scale s = ``scale`` and ``grad`` = grad_x log p(y | x_t, t) taken at x_t:

    * ancestral DDPM (their Algorithm 1): the step's mean is shifted by s * Sigma_t * grad, Sigma_t the
      step's :func:`posterior_variance` (so the last step, where Sigma = 0, is unguided);
    * DDIM and DPM-Solver++ (their Algorithm 2): the score form eps_hat = eps - sqrt(1 - abar_t) * s * grad.
      DPM-Solver++ is given eps_hat. For DDIM we add the displacement eps_hat makes to the unguided step
      (the same step wherever the x0 prediction lies in [-1, 1]). Where x0 is clipped, feeding eps_hat to
      the scheduler would clip the guidance out of x0 but keep it in the direction term
      sqrt(1 - abar_prev - sigma^2) * eps_hat, which then moves x against the gradient (measured with an
      untrained U-Net and an analytic classifier: guided samples lost class probability at scales 3 to
      100); Dhariwal & Nichol's code, too, adds the guidance after clipping.

    ``scale == 0`` leaves every operation as in the unguided step (``grad`` is not read).
    """
    guided = scale != 0.0
    if guided and grad is None:
        raise ValueError("a guided step (scale != 0) needs grad = grad_x log p(y | x_t, t)")
    if spec.sampler is Sampler.DPMPP_SDE:
        if guided:
            eps = eps - math.sqrt(1.0 - float(sched.alphas_cumprod[int(t)])) * scale * grad.to(eps)
        # the SDE solver's noise, one generator per sample (the scheduler draws one tensor)
        noise = torch.stack([torch.randn(x.shape[1:], generator=g) for g in gens]).to(x)
        return sched.step(eps, t, x, variance_noise=noise).prev_sample
    if spec.sampler is Sampler.DDIM:
        x_prev = sched.step(eps, t, x, eta=spec.eta, generator=gens).prev_sample
        shift = _ddim_score_shift(sched, t, spec.eta) if guided else 0.0
    else:
        x_prev = sched.step(eps, t, x, generator=gens).prev_sample
        shift = posterior_variance(sched, t) if guided else 0.0
    return x_prev + (scale * shift) * grad.to(x_prev) if guided else x_prev

