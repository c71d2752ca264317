"""The exact denoiser of the empirical training distribution: a reference that needs no training (Fig. 5b)."""

from __future__ import annotations

import numpy as np
import torch

from empirics.ddpm.model import scheduler, to_model_space

__all__ = ["EmpiricalDenoiser"]


class EmpiricalDenoiser(torch.nn.Module):
    """The exact epsilon-predictor of the empirical training distribution (a reference, no training).

    For p_0 = (1/N) sum_i delta(x0_i) the posterior mean is E[x0 | x_t] = sum_i w_i x0_i with
    w = softmax(-||x_t - sqrt(abar_t) x0_i||^2 / (2 (1 - abar_t))), and the optimal
    eps-prediction is (x_t - sqrt(abar_t) E[x0 | x_t]) / sqrt(1 - abar_t). Its samples are training
    images: the exact empirical score only replicates (the memorization reference of Fig. 5b).
    """

    def __init__(self, images):
        super().__init__()
        imgs = torch.as_tensor(np.asarray(images))
        if imgs.ndim != 4 or imgs.shape[-1] != 3 or imgs.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 [N, S, S, 3], got {imgs.dtype} {tuple(imgs.shape)}")
        x0 = to_model_space(imgs.permute(0, 3, 1, 2)).to(torch.float64)
        self.register_buffer("x0", x0.reshape(len(x0), -1))
        self.register_buffer("sq", self.x0.pow(2).sum(1))
        abar = torch.as_tensor(scheduler("ddpm").alphas_cumprod.numpy(), dtype=torch.float64)
        self.register_buffer("abar", abar)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        xf = x.reshape(len(x), -1).to(torch.float64)
        ab = self.abar[t.to(self.abar.device)].to(xf.device)[:, None]
        # ||x - a X_i||^2 = ||x||^2 - 2 a x.X_i + a^2 ||X_i||^2 (float64: no harmful cancellation at D = 3S^2)
        d2 = xf.pow(2).sum(1, keepdim=True) - 2 * ab.sqrt() * (xf @ self.x0.T) + ab * self.sq[None]
        w = torch.softmax(-d2 / (2 * (1 - ab)), dim=1)
        x0_hat = w @ self.x0
        eps = (xf - ab.sqrt() * x0_hat) / (1 - ab).sqrt()
        return eps.to(x.dtype).reshape(x.shape)
