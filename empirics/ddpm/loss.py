"""The training losses of the DDPM: the paper's epsilon MSE and min-SNR-gamma, as small loss classes (EDM style).

Each loss is called as ``loss(model, x0, noise, t, noise_scheduler)`` and returns the scalar to minimise.
"""

from __future__ import annotations

import torch

from empirics.ddpm.config import DDPMConfig, LossWeighting

__all__ = ["EpsLoss", "MinSNRLoss", "make_loss", "loss_weights"]


class EpsLoss:
    """Ho et al. (2020), eq. (14) ("L_simple"): E_{t, x0, eps} ||eps - eps_theta(x_t, t)||^2, t uniform."""

    def __call__(self, model, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, noise_sched) -> torch.Tensor:
        x_t = noise_sched.add_noise(x0, noise, t)                       # x_t = sqrt(abar) x0 + sqrt(1 - abar) eps
        return torch.nn.functional.mse_loss(model(x_t, t).float(), noise)


class MinSNRLoss:
    """Hang et al. (2023), "Efficient Diffusion Training via Min-SNR Weighting Strategy", eq. for
    epsilon-prediction: each sample's epsilon MSE weighted by min(SNR(t), gamma) / SNR(t), with
    SNR(t) = abar_t / (1 - abar_t); gamma = 5 is their default. It caps the weight of the nearly clean
    timesteps. Beyond the paper (a CPU-preset option)."""

    def __init__(self, gamma: float = 5.0):
        self.gamma = gamma

    def weights(self, alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = alphas_cumprod.to(torch.float64)[t]
        snr = abar / (1.0 - abar)
        return (torch.clamp(snr, max=self.gamma) / snr).to(torch.float32)

    def __call__(self, model, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, noise_sched) -> torch.Tensor:
        x_t = noise_sched.add_noise(x0, noise, t)
        weights = self.weights(noise_sched.alphas_cumprod, t)
        per_sample = (model(x_t, t).float() - noise).pow(2).flatten(1).mean(1)
        return (weights.to(per_sample.device) * per_sample).mean()


def make_loss(config: DDPMConfig) -> EpsLoss | MinSNRLoss:
    """The loss ``config.loss_weighting`` names."""
    if LossWeighting(config.loss_weighting) is LossWeighting.EPS:
        return EpsLoss()
    return MinSNRLoss(config.min_snr_gamma)


def loss_weights(config: DDPMConfig, alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor | None:
    """Weights of the per-sample epsilon MSE at timesteps ``t`` (None: uniform, the paper's loss)."""
    loss = make_loss(config)
    return loss.weights(alphas_cumprod, t) if isinstance(loss, MinSNRLoss) else None
