"""DDPM run configs (Sec. 3.2, App. D.1): the frozen :class:`DDPMConfig`, its presets, and the enums it names."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from empirics._checks import check_int, check_real
from empirics._config import JsonConfig, check_unet_shape, config_from_preset
from empirics.tasks import TRAIN_SIZES, Task

__all__ = ["T_STEPS", "BETA_START", "BETA_END", "TRAIN_SIZES", "PAPER_EPOCHS", "Backbone", "Sampler",
           "parse_sampler", "LossWeighting", "CheckpointError", "DDPMConfig", "PRESETS_NAMES", "PRESETS",
           "make_config", "SampleSpec"]

# App. D.1 / Sec. 3.2: epochs per task (the training-set sizes are the task specs', empirics.tasks.TRAIN_SIZES).
PAPER_EPOCHS = {Task.A: 400, Task.B: 800, Task.C: 1600, Task.D: 1000}
# The paper's schedule (Sec. 3.2, App. D.1).
T_STEPS, BETA_START, BETA_END = 1000, 1e-4, 2e-2


class Backbone(str, enum.Enum):
    """Denoiser architectures: the U-Net of App. D.1 and the DiT of App. D.3."""

    UNET = "unet"
    DIT = "dit"


class Sampler(str, enum.Enum):
    """Reverse processes: ancestral DDPM (Ho et al., the paper's), DDIM (Song et al.) and the stochastic
    second-order DPM-Solver++ (Lu et al. 2022, ``sde-dpmsolver++``; beyond the paper, fewer steps)."""

    DDPM = "ddpm"
    DDIM = "ddim"
    DPMPP_SDE = "dpmpp-sde"


def parse_sampler(kind) -> Sampler:
    """``kind`` (a :class:`Sampler` or its name, any case) as a :class:`Sampler`; ``ValueError`` otherwise."""
    try:
        return Sampler(kind.value if isinstance(kind, Sampler) else str(kind).lower())
    except ValueError:
        raise ValueError(f"sampler must be one of {[s.value for s in Sampler]}, got {kind!r}") from None


class LossWeighting(str, enum.Enum):
    """Per-timestep weight of the epsilon MSE: the paper's uniform one, or min-SNR-gamma."""

    EPS = "eps"
    MIN_SNR = "min-snr"

    @classmethod
    def _missing_(cls, value):
        raise ValueError(f"loss_weighting must be one of {[m.value for m in cls]}, got {value!r}")


class CheckpointError(ValueError):
    """A run folder whose checkpoint is missing, unreadable or from another config."""


PRESETS_NAMES = ("paper", "cpu", "cpu-2000", "smoke")


@dataclass(frozen=True)
class DDPMConfig(JsonConfig):
    """Everything that defines a training run; stored as the run's ``config.json``."""

    TUPLE_FIELDS = ("channels", "attention")

    task: str
    preset: str
    size: int = 32
    n_train: int = 4000
    data_seed: int = 0
    backbone: str = Backbone.UNET.value
    # U-Net (diffusers UNet2DModel)
    channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    attention: tuple[bool, ...] = (False, False, False)  # per resolution level, down and up
    norm_num_groups: int = 8
    # DiT (diffusers DiTTransformer2DModel)
    dit_layers: int = 12
    dit_heads: int = 6
    dit_head_dim: int = 64
    dit_patch: int = 2
    # optimisation
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100
    lr_schedule: str = "cosine"  # "cosine" (decay to 0 at train_steps) or "constant" (after warm-up)
    grad_clip: float = 1.0
    train_steps: int = 3000
    ema_decay: float = 0.999
    # "eps": the paper's unweighted epsilon MSE; "min-snr": each timestep weighted by min(SNR, gamma) / SNR
    # (Hang et al. 2023, min-SNR-gamma for epsilon-prediction), a CPU-preset option, never the paper preset's
    loss_weighting: str = "eps"
    min_snr_gamma: float = 5.0
    channels_last: bool = True
    seed: int = 0
    # bookkeeping
    checkpoint_every: int = 250
    snapshot_every: int = 500
    log_every: int = 10
    # the paper's diffusion (fixed; recorded so that a run folder says what it used)
    num_train_timesteps: int = T_STEPS
    beta_start: float = BETA_START
    beta_end: float = BETA_END

    def __post_init__(self):
        Task.parse(self.task)
        if self.preset not in PRESETS_NAMES:
            raise ValueError(f"preset must be one of {', '.join(PRESETS_NAMES)}, got {self.preset!r}")
        check_int("size", self.size, 16, 512)
        if self.size % 8:
            raise ValueError(f"size must be a multiple of 8 (the U-Net halves it), got {self.size}")
        check_int("n_train", self.n_train, 1)
        check_int("data_seed", self.data_seed, 0)
        Backbone(self.backbone)
        unet = self.backbone == Backbone.UNET.value
        check_unet_shape(self.channels, self.attention, self.norm_num_groups, self.size if unet else None)
        if not unet and self.size % self.dit_patch:
            raise ValueError(f"size {self.size} must be divisible by dit_patch {self.dit_patch}")
        check_int("layers_per_block", self.layers_per_block, 1)
        check_int("batch_size", self.batch_size, 1)
        if self.batch_size > self.n_train:
            raise ValueError(f"batch_size ({self.batch_size}) must not exceed n_train ({self.n_train})")
        check_real("lr", self.lr, 1e-8, 1.0)
        check_real("weight_decay", self.weight_decay, 0.0, 1.0)
        check_int("warmup_steps", self.warmup_steps, 0)
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")
        check_real("grad_clip", self.grad_clip, 0.0)
        check_int("train_steps", self.train_steps, 1)
        check_real("ema_decay", self.ema_decay, 0.0, 1.0)
        LossWeighting(self.loss_weighting)
        check_real("min_snr_gamma", self.min_snr_gamma, 1e-3, 1e6)
        check_int("seed", self.seed, 0)
        for name in ("checkpoint_every", "snapshot_every", "log_every"):
            check_int(name, getattr(self, name), 1)
        if (self.num_train_timesteps, self.beta_start, self.beta_end) != (T_STEPS, BETA_START, BETA_END):
            raise ValueError("the diffusion is the paper's: num_train_timesteps=1000, beta 1e-4 -> 2e-2")

    @property
    def steps_per_epoch(self) -> int:
        return max(1, self.n_train // self.batch_size)

    @property
    def epochs(self) -> float:
        return self.train_steps / self.steps_per_epoch


# Preset -> field overrides (task-specific ones are filled in by make_config).
PRESETS: dict[str, dict] = {
    # App. D.1 on a GPU: U-Net with self-attention (~15M parameters), AdamW lr 3e-4, the paper's epochs.
    "paper": dict(channels=(96, 192, 192), layers_per_block=2, attention=(False, True, True), norm_num_groups=32,
                  batch_size=128, lr=3e-4, warmup_steps=0, lr_schedule="constant", ema_decay=0.9999,
                  channels_last=False, checkpoint_every=2000, snapshot_every=5000, log_every=50),
    # A laptop CPU: ~1M-parameter U-Net, channels_last, min-SNR-5 loss weighting, batch 32, 8000 steps
    # (<= 2 h per task on 2 idle cores). Chosen by the recipe probes of docs/section3/probes: at the
    # wall-clock time of 1000 steps of "cpu-2000", min-SNR-5 with batch 32 came closest to the training
    # images' marginals (background, sizes, colours) of every lever tried.
    "cpu": dict(channels=(32, 64, 64), layers_per_block=1, attention=(False, False, False), norm_num_groups=8,
                batch_size=32, lr=1e-3, warmup_steps=100, lr_schedule="cosine", ema_decay=0.999,
                loss_weighting="min-snr", min_snr_gamma=5.0, train_steps=8000, channels_last=True,
                checkpoint_every=200, snapshot_every=500, log_every=10),
    # The first CPU preset (Section 3's committed 2000-step runs, written as preset "cpu" before
    # 2026-12-04): the paper's unweighted loss, batch 64, 2000 steps (~40 min per task on 2 idle cores).
    "cpu-2000": dict(channels=(32, 64, 64), layers_per_block=1, attention=(False, False, False), norm_num_groups=8,
                     batch_size=64, lr=1e-3, warmup_steps=100, lr_schedule="cosine", ema_decay=0.999,
                     train_steps=2000, channels_last=True, checkpoint_every=100, snapshot_every=250, log_every=10),
    # Tests: trains, samples and evaluates end to end in well under a minute.
    "smoke": dict(n_train=64, channels=(16, 32), layers_per_block=1, attention=(False, False), norm_num_groups=8,
                  batch_size=16, lr=2e-3, warmup_steps=2, lr_schedule="constant", ema_decay=0.9,
                  train_steps=20, channels_last=True, checkpoint_every=10, snapshot_every=10, log_every=5),
}


def make_config(task, preset: str = "cpu", **overrides) -> DDPMConfig:
    """The config of ``preset`` for ``task`` (paper sizes and epochs filled in), with ``overrides``."""
    task = Task.parse(task)
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    base = dict(task=task.value, preset=preset, n_train=TRAIN_SIZES[task])
    base.update(PRESETS[preset])
    if preset == "paper" and overrides.get("train_steps") is None:
        n = overrides.get("n_train") or base["n_train"]
        batch = overrides.get("batch_size") or base["batch_size"]
        base["train_steps"] = PAPER_EPOCHS[task] * max(1, n // batch)
    return config_from_preset(DDPMConfig, base, overrides)


@dataclass(frozen=True)
class SampleSpec:
    """A reverse process: ``ddpm`` (ancestral, Ho et al.; ``steps`` < T respaces it) or ``ddim``
    with ``eta`` (0 deterministic, 1 ancestral-like noise)."""

    sampler: Sampler = Sampler.DDPM
    steps: int = T_STEPS
    eta: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "sampler", parse_sampler(self.sampler))
        check_int("steps", self.steps, 1)
        if self.steps > T_STEPS:
            raise ValueError(f"steps must be in [1, {T_STEPS}] (the number of training timesteps), got {self.steps}")
        check_real("eta", self.eta, 0.0, 1.0)
        if self.sampler is not Sampler.DDIM and self.eta != 0.0:
            raise ValueError(f"eta applies to the ddim sampler only, not {self.sampler.value}")

    @property
    def name(self) -> str:
        if self.sampler is Sampler.DDIM:
            return f"ddim-{self.steps}-eta{self.eta:g}"
        return f"{self.sampler.value}-{self.steps}"
