"""The denoiser eps = net(x_t, t) (App. D.1 U-Net, App. D.3 DiT), the paper's schedulers, and tensor scalings."""

from __future__ import annotations

import numpy as np
import torch

from empirics.ddpm.config import BETA_END, BETA_START, T_STEPS, Backbone, DDPMConfig, Sampler, parse_sampler

__all__ = ["Denoiser", "build_denoiser", "scheduler", "to_model_space", "to_uint8", "resolve_device"]


class Denoiser(torch.nn.Module):
    """``eps = Denoiser(x_t, t)`` for any backbone (x_t in [-1, 1] scale, t integer timesteps)."""

    def __init__(self, net: torch.nn.Module, backbone: Backbone):
        super().__init__()
        self.net = net
        self.backbone = Backbone(backbone)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.backbone is Backbone.DIT:
            # Unconditional: one constant class (num_embeds_ada_norm=1); DiT's label drop is off.
            labels = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
            return self.net(x, timestep=t, class_labels=labels).sample
        return self.net(x, t).sample


def build_denoiser(config: DDPMConfig) -> Denoiser:
    """The backbone of ``config`` with freshly initialised weights (seeded by ``config.seed``)."""
    from diffusers import DiTTransformer2DModel, UNet2DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        if config.backbone == Backbone.DIT.value:
            net = DiTTransformer2DModel(
                num_attention_heads=config.dit_heads, attention_head_dim=config.dit_head_dim, in_channels=3,
                out_channels=3, num_layers=config.dit_layers, sample_size=config.size,
                patch_size=config.dit_patch, num_embeds_ada_norm=1)
            # No classifier-free label dropout: the model is unconditional.
            net.transformer_blocks[0].norm1.emb.class_embedder.dropout_prob = 0.0
            for block in net.transformer_blocks:
                block.norm1.emb.class_embedder.dropout_prob = 0.0
        else:
            down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in config.attention)
            up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(config.attention))
            net = UNet2DModel(
                sample_size=config.size, in_channels=3, out_channels=3, block_out_channels=config.channels,
                layers_per_block=config.layers_per_block, down_block_types=down, up_block_types=up,
                norm_num_groups=config.norm_num_groups)
    model = Denoiser(net, Backbone(config.backbone))
    if config.channels_last and config.backbone == Backbone.UNET.value:
        model = model.to(memory_format=torch.channels_last)
    return model


def scheduler(kind="ddpm"):
    """diffusers' DDPM or DDIM scheduler with the paper's schedule (T = 1000, linear 1e-4 -> 2e-2).

    Both clip the x0 prediction to [-1, 1] (diffusers' default, Ho et al.'s sampler). DDIM uses
    ``set_alpha_to_one=True`` so that its last step returns the x0 prediction.
    """
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    kind = parse_sampler(kind)
    common = dict(num_train_timesteps=T_STEPS, beta_start=BETA_START, beta_end=BETA_END, beta_schedule="linear",
                  prediction_type="epsilon")
    if kind is Sampler.DDPM:
        return DDPMScheduler(variance_type="fixed_small", clip_sample=True, **common)
    if kind is Sampler.DDIM:
        return DDIMScheduler(set_alpha_to_one=True, clip_sample=True, **common)
    # Dynamic thresholding with sample_max_value = 1 is the same static clip of x0 to [-1, 1].
    return DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++", solver_order=2, thresholding=True,
                                       sample_max_value=1.0, lower_order_final=True, **common)


def to_model_space(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW in [0, 255] -> float32 in [-1, 1]."""
    return images_u8.to(torch.float32) / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float NCHW in [-1, 1] -> uint8 NHWC RGB."""
    x = ((x.detach().to(torch.float64).clamp(-1, 1) + 1.0) * 127.5).round()
    return x.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def resolve_device(device) -> torch.device:
    """``"auto"`` / ``None`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` as a device."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device) not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but CUDA is not available")
    return torch.device(device)
