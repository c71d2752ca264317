"""DDPM on the synthetic tasks (Section 3.2, App. D.1, D.3) over huggingface diffusers.

The paper trains an unconditional pixel-space DDPM (Ho et al. 2020) on each task: T = 1000, linear
beta from 1e-4 to 2e-2, epsilon-prediction with the mean-squared error at a uniform timestep, a
U-Net denoiser, AdamW. Here:

* the denoiser is diffusers' ``UNet2DModel`` (or ``DiTTransformer2DModel``, App. D.3), wrapped by
  :class:`Denoiser` so that every backbone is ``eps = net(x_t, t)``;
* the schedule is diffusers' ``DDPMScheduler`` (training noise and the ancestral sampler) and
  ``DDIMScheduler`` (the fast sampler); :func:`scheduler` builds either with the paper's values;
* weights are averaged by ``diffusers.training_utils.EMAModel`` and sampling uses the EMA weights
  (store / copy_to / restore around it);
* the loop runs as one process or under ``accelerate launch`` (data-parallel), unchanged;
* classifier guidance (Section 5) enters the samplers through a :class:`Guide`
  (``empirics.guidance.ClassifierGuide``), one step at a time in :func:`reverse_step`.

A run is a folder (:class:`RunFiles`): ``config.json``, the training set ``train.npz`` drawn by
``empirics.tasks.generate`` at the paper's sizes, ``checkpoint.pt`` (atomic; model, EMA,
optimiser, learning-rate schedule, step, RNG states, config), ``snapshots/`` (EMA weights every
``snapshot_every`` steps, for curves against training), ``loss.csv`` and ``samples/``.

Resuming is bit-identical: the batch, timesteps and noise of step k are drawn from generators seeded
by (seed, k, process rank), and the data order of epoch e from (seed, e), so a run interrupted and
resumed draws exactly what an uninterrupted one draws. The RNG states of torch, numpy and python
are saved too, for code that uses the global generators.

Where we differ from the text, and why:
* No random flips or crops (the paper does not mention augmentation): a flip would move Task A's
  sun to the other side and Task D's squares between halves, changing the rules' statistics.
* The ``cpu`` preset is a small U-Net (README "Section 3 on a CPU") with ``norm_num_groups=8``:
  with diffusers' default of 32 groups, every GroupNorm of a 32-channel block normalises each
  channel on its own and removes its mean, and the backgrounds came out grey. It uses a linear
  warm-up and cosine decay of the learning rate because its budget is a fixed number of steps.
* The paper's U-Net (App. D.1: "two convolutional layers followed by ReLU", self-attention in each
  down-sampling block, 14M parameters) is approximated by diffusers' ``UNet2DModel`` with SiLU,
  ``layers_per_block=2`` and attention blocks; the paper does not give its batch size (we use 128).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import enum
import io
import json
import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from empirics._checks import check_int, check_real
from empirics._config import JsonConfig
from empirics.atomic import atomic_folder, atomic_torch_save, atomic_write_bytes, atomic_write_text
from empirics.io import load_npz, save_npz
from empirics.tasks import Task, generate

__all__ = [
    "Backbone", "Sampler", "LossWeighting", "loss_weights", "DDPMConfig", "PRESETS", "PAPER_EPOCHS", "TRAIN_SIZES",
    "make_config",
    "RunFiles", "Denoiser", "build_denoiser", "scheduler", "train", "TrainSummary", "load_run",
    "LoadedRun", "ema_weights", "read_config", "create_run", "sample", "sample_images", "save_samples",
    "EmpiricalDenoiser", "SampleSpec", "CheckpointError", "Guide", "posterior_variance", "reverse_step",
]

# App. D.1 / Sec. 3.2: training-set sizes and epochs per task.
TRAIN_SIZES = {Task.A: 4000, Task.B: 2000, Task.C: 2000, Task.D: 2000}
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


class LossWeighting(str, enum.Enum):
    """Per-timestep weight of the epsilon MSE: the paper's uniform one, or min-SNR-gamma."""

    EPS = "eps"
    MIN_SNR = "min-snr"

    @classmethod
    def _missing_(cls, value):
        raise ValueError(f"loss_weighting must be one of {[m.value for m in cls]}, got {value!r}")


def loss_weights(config: DDPMConfig, alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor | None:
    """Weights of the per-sample epsilon MSE at timesteps ``t`` (None: uniform, the paper's loss).

    min-SNR-gamma for epsilon-prediction: SNR(t) = abar_t / (1 - abar_t), weight min(SNR, gamma) / SNR,
    which caps the weight of the nearly clean timesteps (Hang et al. 2023, eq. for eps-prediction).
    """
    if LossWeighting(config.loss_weighting) is LossWeighting.EPS:
        return None
    abar = alphas_cumprod.to(torch.float64)[t]
    snr = abar / (1.0 - abar)
    return (torch.clamp(snr, max=config.min_snr_gamma) / snr).to(torch.float32)


class CheckpointError(ValueError):
    """A run folder whose checkpoint is missing, unreadable or from another config."""


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
        if not self.channels or any(check_int("channels", c, 1) <= 0 for c in self.channels):
            raise ValueError(f"channels must be positive integers, got {self.channels!r}")
        if len(self.attention) != len(self.channels):
            raise ValueError(f"attention must give one flag per level ({len(self.channels)}), got {self.attention!r}")
        if self.backbone == Backbone.UNET.value:
            if self.size % (2 ** (len(self.channels) - 1)):
                raise ValueError(f"size {self.size} is not divisible by 2^{len(self.channels) - 1} "
                                 f"for {len(self.channels)} U-Net levels")
            bad = [c for c in self.channels if c % self.norm_num_groups]
            if bad:
                raise ValueError(f"norm_num_groups={self.norm_num_groups} must divide every channel count, not {bad}")
        elif self.size % self.dit_patch:
            raise ValueError(f"size {self.size} must be divisible by dit_patch {self.dit_patch}")
        check_int("layers_per_block", self.layers_per_block, 1)
        check_int("norm_num_groups", self.norm_num_groups, 1)
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



PRESETS_NAMES = ("paper", "cpu", "smoke")

# Preset -> field overrides (task-specific ones are filled in by make_config).
PRESETS: dict[str, dict] = {
    # App. D.1 on a GPU: U-Net with self-attention (~15M parameters), AdamW lr 3e-4, the paper's epochs.
    "paper": dict(channels=(96, 192, 192), layers_per_block=2, attention=(False, True, True), norm_num_groups=32,
                  batch_size=128, lr=3e-4, warmup_steps=0, lr_schedule="constant", ema_decay=0.9999,
                  channels_last=False, checkpoint_every=2000, snapshot_every=5000, log_every=50),
    # A laptop CPU: ~1M-parameter U-Net, channels_last, <= 60 min per task on 2 cores (README).
    "cpu": dict(channels=(32, 64, 64), layers_per_block=1, attention=(False, False, False), norm_num_groups=8,
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
    fields_ = {f.name for f in dataclasses.fields(DDPMConfig)}
    bad = sorted(set(overrides) - fields_)
    if bad:
        raise ValueError(f"unknown config fields {bad}; allowed: {sorted(fields_)}")
    base = dict(task=task.value, preset=preset, n_train=TRAIN_SIZES[task])
    base.update(PRESETS[preset])
    base.update({k: v for k, v in overrides.items() if v is not None})
    if "channels" in overrides and "attention" not in overrides:
        base["attention"] = (False,) * len(base["channels"])
    if preset == "paper" and "train_steps" not in overrides:
        n = base["n_train"]
        base["train_steps"] = PAPER_EPOCHS[task] * max(1, n // base["batch_size"])
    for k in ("channels", "attention"):
        base[k] = tuple(base[k])
    return DDPMConfig(**base)


# ----------------------------------------------------------------------------------------------
# Networks and schedulers


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

    kind = _sampler(kind)
    common = dict(num_train_timesteps=T_STEPS, beta_start=BETA_START, beta_end=BETA_END, beta_schedule="linear",
                  prediction_type="epsilon")
    if kind is Sampler.DDPM:
        return DDPMScheduler(variance_type="fixed_small", clip_sample=True, **common)
    if kind is Sampler.DDIM:
        return DDIMScheduler(set_alpha_to_one=True, clip_sample=True, **common)
    # Dynamic thresholding with sample_max_value = 1 is the same static clip of x0 to [-1, 1].
    return DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++", solver_order=2, thresholding=True,
                                       sample_max_value=1.0, lower_order_final=True, **common)


def _sampler(kind) -> Sampler:
    try:
        return Sampler(kind.value if isinstance(kind, Sampler) else str(kind).lower())
    except ValueError:
        raise ValueError(f"sampler must be one of {[s.value for s in Sampler]}, got {kind!r}") from None


# ----------------------------------------------------------------------------------------------
# Run folders


@dataclass(frozen=True)
class RunFiles:
    """The files of a run folder."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def train_set(self) -> Path:
        return self.root / "train.npz"

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.pt"

    @property
    def loss_log(self) -> Path:
        return self.root / "loss.csv"

    @property
    def snapshots(self) -> Path:
        return self.root / "snapshots"

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    def snapshot(self, step: int) -> Path:
        return self.snapshots / f"ema_step_{step:07d}.pt"

    def snapshot_steps(self) -> list[int]:
        if not self.snapshots.is_dir():
            return []
        return sorted(int(p.stem.rsplit("_", 1)[1]) for p in self.snapshots.glob("ema_step_*.pt"))


def read_config(run_dir) -> DDPMConfig:
    """The config of a run folder; ``CheckpointError`` when it is not one."""
    files = RunFiles(Path(run_dir))
    if not files.config.is_file():
        raise CheckpointError(f"{str(files.root)!r} is not a run folder (no config.json)")
    try:
        return DDPMConfig.from_json(json.loads(files.config.read_text()))
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{str(files.config)!r} is not a valid run config: {exc}") from exc


def create_run(run_dir, config: DDPMConfig) -> RunFiles:
    """Create a run folder (config and training set) atomically: a half-made folder is never left."""
    if not isinstance(config, DDPMConfig):
        raise ValueError(f"config must be a DDPMConfig, got {type(config).__name__}")
    root = Path(run_dir)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ValueError(f"{str(root)!r} exists and is not an empty folder")
    with atomic_folder(root) as tmp:
        files = RunFiles(tmp)
        batch = generate(config.task, config.n_train, size=config.size, seed=config.data_seed)
        save_npz(batch, files.train_set)
        atomic_write_text(files.config, json.dumps(config.to_json(), indent=2) + "\n")
    return RunFiles(root)


def _load_train_images(files: RunFiles, config: DDPMConfig) -> torch.Tensor:

    batch = load_npz(files.train_set)
    if len(batch) != config.n_train or batch.size != config.size or batch.task.value != config.task:
        raise CheckpointError(f"{str(files.train_set)!r} does not match the run config "
                              f"({len(batch)} images of {batch.size} px, task {batch.task.value})")
    return torch.from_numpy(np.ascontiguousarray(batch.images.transpose(0, 3, 1, 2)))  # uint8 NCHW


def to_model_space(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW in [0, 255] -> float32 in [-1, 1]."""
    return images_u8.to(torch.float32) / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float NCHW in [-1, 1] -> uint8 NHWC RGB."""
    x = ((x.detach().to(torch.float64).clamp(-1, 1) + 1.0) * 127.5).round()
    return x.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


# ----------------------------------------------------------------------------------------------
# Training


def _step_generator(seed: int, *key: int) -> torch.Generator:
    """A torch generator seeded by (seed, *key): the randomness of one step, independent of history."""
    state = np.random.SeedSequence([seed, *key]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _batch_indices(config: DDPMConfig, step: int, rank: int, world: int) -> np.ndarray:
    """Indices of step ``step``'s global batch (a fresh permutation per epoch), this process's share."""
    epoch, j = divmod(step, config.steps_per_epoch)
    perm = np.random.default_rng([config.seed, 7919, epoch]).permutation(config.n_train)
    idx = perm[j * config.batch_size:(j + 1) * config.batch_size]
    return idx[rank::world]


def _rng_states() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])


def _lr_lambda(config: DDPMConfig):
    warm, total = config.warmup_steps, config.train_steps

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if config.lr_schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warm) / max(1, total - warm))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


@dataclass(frozen=True)
class TrainSummary:
    """What a call of :func:`train` did."""

    run_dir: Path
    start_step: int
    end_step: int
    finished: bool
    seconds: float
    last_loss: float


def _stored_config(ckpt: dict) -> dict | None:
    """The config a checkpoint was written with, as ``to_json``; a field added to ``DDPMConfig`` after
    the checkpoint was written takes its default (runs written before it stay readable)."""
    try:
        return DDPMConfig.from_json(ckpt.get("config")).to_json()
    except (ValueError, TypeError):
        return ckpt.get("config")


def _load_checkpoint(files: RunFiles, config: DDPMConfig) -> dict:
    try:
        ckpt = torch.load(files.checkpoint, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise CheckpointError(f"{str(files.checkpoint)!r} is corrupt or unreadable ({type(exc).__name__}: {exc}); "
                              "delete it to restart the run from its last good state, or start a new run") from exc
    if not isinstance(ckpt, dict) or "config" not in ckpt or "step" not in ckpt:
        raise CheckpointError(f"{str(files.checkpoint)!r} is not a training checkpoint of this package")
    stored = _stored_config(ckpt)
    if stored != config.to_json():
        diff = sorted(k for k in set(stored) | set(config.to_json())
                      if stored.get(k) != config.to_json().get(k))
        raise CheckpointError(f"{str(files.checkpoint)!r} was written by another config (differs in {diff})")
    return ckpt


def state_equal(a, b) -> bool:
    """True when two checkpoint states (nested dicts, lists and tuples of tensors, arrays and plain
    values) are equal bit for bit, tensor dtypes included."""
    if isinstance(a, dict) or isinstance(b, dict):
        return (isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys()
                and all(state_equal(a[k], b[k]) for k in a))
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and torch.equal(a, b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, list | tuple) or isinstance(b, list | tuple):
        return (isinstance(a, list | tuple) and isinstance(b, list | tuple) and len(a) == len(b)
                and all(state_equal(x, y) for x, y in zip(a, b)))
    return a == b


def _loss_rows(path: Path) -> list[list[str]]:
    """``loss.csv`` without its wall-clock column (step, loss, lr as written)."""
    return [row[:3] for row in csv.reader(path.read_text().splitlines())] if path.is_file() else []


def compare_runs(run_a, run_b) -> dict:
    """Is ``run_b`` the same training as ``run_a``, bit for bit? Each part is compared on its own:
    the config, the training set's images, the logged (step, loss, lr) rows (not their times), and
    the checkpoint's step, model weights and EMA weights. ``identical`` is True when all are equal.
    Both folders must be runs with a checkpoint (``CheckpointError`` otherwise)."""
    files = [RunFiles(Path(r)) for r in (run_a, run_b)]
    configs = [read_config(f.root) for f in files]
    for f in files:
        if not f.checkpoint.is_file():
            raise CheckpointError(f"{str(f.root)!r} has no checkpoint to compare")
    ckpts = [_load_checkpoint(f, c) for f, c in zip(files, configs)]
    images = [load_npz(f.train_set).images if f.train_set.is_file() else None for f in files]
    rows = [_loss_rows(f.loss_log) for f in files]
    parts = {
        "config": configs[0] == configs[1],
        "train_images": images[0] is not None and images[1] is not None and np.array_equal(*images),
        "loss_log": bool(rows[0]) and rows[0] == rows[1],
        "step": ckpts[0]["step"] == ckpts[1]["step"],
        "model": state_equal(ckpts[0]["model"], ckpts[1]["model"]),
        "ema": state_equal(ckpts[0]["ema"], ckpts[1]["ema"]),
    }
    return {"runs": [str(f.root) for f in files], "steps": [int(c["step"]) for c in ckpts],
            "loss_rows": [max(len(r) - 1, 0) for r in rows], **parts, "identical": all(parts.values())}


def compare_sample_sets(set_a, set_b) -> dict:
    """Are the shared samples of two sample folders (``samples.npz``) equal bit for bit? Sample i is
    drawn from its own seed, so sets of different sizes share their first ``min(n_a, n_b)`` samples
    when their seeds agree; ``identical`` is True when those seeds and images are equal."""
    loaded = []
    for folder in (Path(set_a), Path(set_b)):
        if not (folder / "samples.npz").is_file():
            raise ValueError(f"{str(folder)!r} holds no samples.npz; give a folder written by `hidden-rules sample`")
        with np.load(folder / "samples.npz") as z:
            loaded.append((z["images"], z["seeds"]))
    (ia, sa), (ib, sb) = loaded
    k = min(len(ia), len(ib))
    seeds = bool(np.array_equal(sa[:k], sb[:k]))
    differing = int(np.any(ia[:k] != ib[:k], axis=(1, 2, 3)).sum()) if ia.shape[1:] == ib.shape[1:] else k
    return {"sets": [str(set_a), str(set_b)], "n": [len(ia), len(ib)], "compared": k, "seeds_equal": seeds,
            "differing_samples": differing, "identical": seeds and differing == 0}


def _truncate_log(path: Path, step: int) -> None:
    """Drop loss-log rows after ``step`` (written after the last checkpoint of an interrupted run)."""
    if not path.exists():
        return
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    keep = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= step]
    buf = io.StringIO()
    csv.writer(buf).writerows(keep)
    atomic_write_text(path, buf.getvalue())


def train(run_dir, config: DDPMConfig | None = None, *, max_steps: int | None = None, force: bool = False,
          progress: bool = True, accelerator=None) -> TrainSummary:
    """Train (or resume) the DDPM of a run folder; eq. (Ho et al. 2020): E_t,x0,eps ||eps - net(x_t, t)||^2.

    ``config`` creates the run when ``run_dir`` is empty or absent; for an existing run it must equal
    the stored config (``CheckpointError`` otherwise). ``max_steps`` stops (with a checkpoint) at that
    global step, for interrupted runs and tests. A finished run is refused unless ``force``, which
    trains it again from step 0 in place. Works unchanged under ``accelerate launch``.
    """
    from accelerate import Accelerator
    from diffusers.training_utils import EMAModel

    if max_steps is not None:
        check_int("max_steps", max_steps, 1)
    acc = accelerator or Accelerator(cpu=not torch.cuda.is_available())
    files = RunFiles(Path(run_dir))
    if acc.is_main_process:
        _prepare_run(files, config, force)
    acc.wait_for_everyone()
    config = read_config(files.root)
    ckpt = _load_checkpoint(files, config) if files.checkpoint.exists() else None

    images = _load_train_images(files, config)
    model = build_denoiser(config)
    ema = EMAModel(model.parameters(), decay=config.ema_decay, use_ema_warmup=True, power=3 / 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config))
    start = 0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        optimizer.load_state_dict(ckpt["optimizer"])
        lr_sched.load_state_dict(ckpt["lr_schedule"])
        _set_rng_states(ckpt["rng"])
        start = int(ckpt["step"])
    if acc.is_main_process:
        _truncate_log(files.loss_log, start)
    model, optimizer = acc.prepare(model, optimizer)
    noise_sched = scheduler("ddpm")
    stop = config.train_steps if max_steps is None else min(config.train_steps, max_steps)
    fmt = torch.channels_last if config.channels_last and config.backbone == Backbone.UNET.value \
        else torch.contiguous_format
    t0 = time.perf_counter()
    window: list[float] = []
    last = float("nan")
    bar = _progress(range(start, stop), progress and acc.is_main_process, f"train {config.task}", start, stop)
    model.train()
    for step in bar:
        gen = _step_generator(config.seed, step, acc.process_index)
        idx = torch.from_numpy(_batch_indices(config, step, acc.process_index, acc.num_processes))
        x0 = to_model_space(images[idx]).to(acc.device).contiguous(memory_format=fmt)
        t = torch.randint(0, T_STEPS, (len(idx),), generator=gen).to(acc.device)
        noise = torch.randn(x0.shape, generator=gen).to(acc.device).contiguous(memory_format=fmt)
        x_t = noise_sched.add_noise(x0, noise, t)
        weights = loss_weights(config, noise_sched.alphas_cumprod, t)
        if weights is None:
            loss = torch.nn.functional.mse_loss(model(x_t, t).float(), noise)
        else:
            per_sample = (model(x_t, t).float() - noise).pow(2).flatten(1).mean(1)
            loss = (weights.to(per_sample.device) * per_sample).mean()
        optimizer.zero_grad(set_to_none=True)
        acc.backward(loss)
        if config.grad_clip > 0:
            acc.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        lr_sched.step()
        ema.step(acc.unwrap_model(model).parameters())
        window.append(acc.gather(loss.detach().reshape(1)).mean().item())
        done = step + 1
        if not math.isfinite(window[-1]):
            raise FloatingPointError(f"training loss is {window[-1]} at step {done}; lower lr (now {config.lr})")
        if acc.is_main_process:
            if done % config.log_every == 0 or done == stop:
                last = float(np.mean(window))
                _append_log(files.loss_log, done, last, lr_sched.get_last_lr()[0], time.perf_counter() - t0)
                window = []
                if hasattr(bar, "set_postfix"):
                    bar.set_postfix(loss=f"{last:.4f}")
            if done % config.snapshot_every == 0 or done == config.train_steps:
                atomic_torch_save({"step": done, "config": config.to_json(), "ema": ema.state_dict()},
                                   files.snapshot(done))
            if done % config.checkpoint_every == 0 or done == stop:
                atomic_torch_save({
                    "step": done, "config": config.to_json(), "model": acc.unwrap_model(model).state_dict(),
                    "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                    "lr_schedule": lr_sched.state_dict(), "rng": _rng_states(),
                    "finished": done == config.train_steps}, files.checkpoint)
        acc.wait_for_everyone() if acc.num_processes > 1 and done % config.checkpoint_every == 0 else None
    seconds = time.perf_counter() - t0
    if acc.is_main_process and stop > start:
        _record_session(files, start, stop, seconds, acc.num_processes)
    return TrainSummary(files.root, start, max(start, stop), max(start, stop) == config.train_steps, seconds, last)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB (Linux/macOS ``getrusage``)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def _record_session(files: RunFiles, start: int, stop: int, seconds: float, processes: int) -> None:
    """Append this call's steps, wall time and peak memory to ``train_stats.json`` (one entry per resume)."""
    path = files.root / "train_stats.json"
    stats = json.loads(path.read_text()) if path.exists() else {"sessions": []}
    stats["sessions"] = [s for s in stats["sessions"] if s["end_step"] <= start]
    stats["sessions"].append({"start_step": start, "end_step": stop, "seconds": round(seconds, 2),
                              "seconds_per_step": round(seconds / (stop - start), 4),
                              "peak_rss_mib": round(peak_rss_mib(), 1), "processes": processes,
                              "torch_threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d %H:%M")})
    stats["train_seconds_total"] = round(sum(s["seconds"] for s in stats["sessions"]), 2)
    atomic_write_text(path, json.dumps(stats, indent=2) + "\n")


def _prepare_run(files: RunFiles, config: DDPMConfig | None, force: bool) -> None:
    if config is not None and not isinstance(config, DDPMConfig):
        raise ValueError(f"config must be a DDPMConfig or None, got {type(config).__name__}")
    if not files.config.exists():
        if config is None:
            if files.root.exists():
                raise CheckpointError(f"{str(files.root)!r} is not a run folder (no config.json); "
                                      "give a task and preset to start one")
            raise CheckpointError(f"no run folder at {str(files.root)!r}")
        create_run(files.root, config)
        return
    stored = read_config(files.root)
    if config is not None and config != stored:
        diff = sorted(k for k, v in config.to_json().items() if stored.to_json().get(k) != v)
        raise CheckpointError(f"{str(files.root)!r} holds a run with another config (differs in {diff}); "
                              "choose another --out")
    if files.checkpoint.exists():
        ckpt = _load_checkpoint(files, stored)
        if ckpt.get("finished"):
            if not force:
                raise CheckpointError(f"{str(files.root)!r} holds a finished run ({ckpt['step']} steps); "
                                      "pass --force to train it again from step 0")
            files.checkpoint.unlink()
            if files.loss_log.exists():
                files.loss_log.unlink()
            shutil.rmtree(files.snapshots, ignore_errors=True)


def _append_log(path: Path, step: int, loss: float, lr: float, seconds: float) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        w = csv.writer(fh)
        if new:
            w.writerow(["step", "loss", "lr", "seconds"])
        w.writerow([step, f"{loss:.6g}", f"{lr:.6g}", f"{seconds:.2f}"])


def _progress(it, enabled: bool, desc: str, initial: int = 0, total: int | None = None):
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, initial=initial, total=total, dynamic_ncols=True, leave=False)


# ----------------------------------------------------------------------------------------------
# Loading and sampling


@dataclass(frozen=True)
class SampleSpec:
    """A reverse process: ``ddpm`` (ancestral, Ho et al.; ``steps`` < T respaces it) or ``ddim``
    with ``eta`` (0 deterministic, 1 ancestral-like noise)."""

    sampler: Sampler = Sampler.DDPM
    steps: int = T_STEPS
    eta: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "sampler", _sampler(self.sampler))
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


@dataclass
class LoadedRun:
    """A trained denoiser with its EMA weights, ready to sample."""

    model: Denoiser
    ema: object
    config: DDPMConfig
    step: int
    files: RunFiles


def load_run(run_dir, snapshot_step: int | None = None, device="auto") -> LoadedRun:
    """The denoiser and EMA of a run's checkpoint (or of the EMA snapshot at ``snapshot_step``)."""
    from diffusers.training_utils import EMAModel

    files = RunFiles(Path(run_dir))
    if not files.root.is_dir():
        raise CheckpointError(f"no run folder at {str(files.root)!r}")
    config = read_config(files.root)
    dev = _device(device)
    model = build_denoiser(config)
    ema = EMAModel(model.parameters(), decay=config.ema_decay, use_ema_warmup=True, power=3 / 4)
    if snapshot_step is None:
        if not files.checkpoint.exists():
            raise CheckpointError(f"{str(files.root)!r} has no checkpoint yet; train it first "
                                  f"(hidden-rules train {config.task} --preset {config.preset} --out {files.root})")
        ckpt = _load_checkpoint(files, config)
        model.load_state_dict(ckpt["model"])
        step = int(ckpt["step"])
    else:
        path = files.snapshot(check_int("snapshot_step", snapshot_step, 1))
        if not path.exists():
            raise CheckpointError(f"no EMA snapshot at step {snapshot_step} in {str(files.root)!r}; "
                                  f"have {files.snapshot_steps()}")
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(f"{str(path)!r} is corrupt or unreadable: {exc}") from exc
        if _stored_config(ckpt) != config.to_json():
            raise CheckpointError(f"{str(path)!r} was written by another config")
        step = int(ckpt["step"])
    ema.load_state_dict(ckpt["ema"])
    model.to(dev).eval()
    ema.to(dev)
    return LoadedRun(model, ema, config, step, files)


@contextlib.contextmanager
def ema_weights(model: torch.nn.Module, ema):
    """Sample with the EMA weights: store the live weights, copy the EMA in, restore afterwards."""
    ema.store(model.parameters())
    ema.copy_to(model.parameters())
    try:
        yield model
    finally:
        ema.restore(model.parameters())


def _device(device) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device) not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but CUDA is not available")
    return torch.device(device)


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


def sample_images(model, n: int, size: int, spec: SampleSpec = SampleSpec(), *, seed: int = 0,
                  batch_size: int = 256, device="auto", progress: bool = False, channels_last: bool = False,
                  guide: Guide | None = None, compile_model: bool = False, done: np.ndarray | None = None,
                  on_batch=None) -> np.ndarray:
    """``n`` samples (uint8 [n, size, size, 3] RGB) of the reverse process ``spec`` for ``eps = model(x_t, t)``.

    Sample i uses the seed ``seed + i`` for its initial noise and every noise draw after it, so it
    does not depend on ``n``, ``batch_size`` or the other samples (up to float round-off of batched
    convolutions). ``guide`` (a :class:`Guide`, e.g. ``empirics.guidance.ClassifierGuide``) adds
    classifier guidance as :func:`reverse_step` describes; at a step whose scale is 0 no gradient is
    computed and nothing is added, so a guide of scale 0 returns the unguided samples bit for bit.
    ``None`` samples the model as is. ``compile_model`` runs the model through ``torch.compile``
    (every batch is padded to ``batch_size`` so that it compiles once).

    Resuming: ``done`` holds the first k finished samples (k a multiple of ``batch_size``, or n), which
    are kept and not drawn again; ``on_batch(stop, images)`` is called after each batch with the
    samples ``images[:stop]`` finished so far. Batches keep their composition (rows
    ``[j·batch_size, (j+1)·batch_size)``), so a resumed set equals an uninterrupted one bit for bit.
    """
    n = check_int("n", n, 1)
    size = check_int("size", size, 1)
    seed = check_int("seed", seed, 0)
    batch_size = check_int("batch_size", batch_size, 1)
    if not isinstance(spec, SampleSpec):
        raise ValueError(f"spec must be a SampleSpec, got {type(spec).__name__}")
    if guide is not None and not isinstance(guide, Guide):
        raise ValueError(f"guide must have scales(n_steps) and grad_log_prob(x_t, t) (a Guide), "
                         f"got {type(guide).__name__}")
    dev = _device(device)
    sched = scheduler(spec.sampler)
    sched.set_timesteps(spec.steps, device=dev)
    n_steps = len(sched.timesteps)
    scales = [0.0] * n_steps if guide is None else [float(s) for s in guide.scales(n_steps)]
    if len(scales) != n_steps or not all(math.isfinite(s) for s in scales):
        raise ValueError(f"guide.scales({n_steps}) must give {n_steps} finite scales, got {len(scales)}")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = np.empty((n, size, size, 3), np.uint8)
    first = 0
    if done is not None:
        done = np.asarray(done)
        first = len(done)
        if done.dtype != np.uint8 or done.shape[1:] != (size, size, 3) or done.ndim != 4:
            raise ValueError(f"done must be uint8 [k, {size}, {size}, 3], got {done.dtype} {done.shape}")
        if first > n or (first % batch_size and first != n):
            raise ValueError(f"done must hold a whole number of batches of {batch_size} (or all {n} "
                             f"samples), got {first}")
        out[:first] = done
    if on_batch is not None and not callable(on_batch):
        raise ValueError(f"on_batch must be callable(stop, images) or None, got {type(on_batch).__name__}")
    n_batches = math.ceil(n / batch_size)
    total = n_batches * n_steps
    initial = (first // batch_size) * n_steps if first < n else total
    bar = _progress(range(initial, total), progress, f"sample {spec.name}", initial, total)
    ticks = iter(bar)
    net = torch.compile(model, dynamic=False) if compile_model else model
    # Guidance differentiates through the classifier, so only the denoiser runs in inference mode.
    with torch.inference_mode() if guide is None else contextlib.nullcontext():
        for start in range(first, n, batch_size):
            stop = min(n, start + batch_size)
            # padding rows (compiled model only) use seeds past the last sample and are discarded
            rows = range(start, start + batch_size) if compile_model else range(start, stop)
            gens = [torch.Generator().manual_seed(seed + i) for i in rows]
            x = torch.stack([torch.randn((3, size, size), generator=g) for g in gens]).to(dev)
            x = x.contiguous(memory_format=fmt)
            for i, t in enumerate(sched.timesteps):
                tt = torch.full((len(gens),), int(t), device=dev, dtype=torch.long)
                with torch.inference_mode():
                    eps = net(x, tt)
                grad = guide.grad_log_prob(x, tt) if scales[i] != 0.0 else None
                x = reverse_step(sched, spec, x, t, eps, gens, scale=scales[i], grad=grad)
                next(ticks, None)
            out[start:stop] = to_uint8(x[: stop - start])
            if on_batch is not None:
                on_batch(stop, out)
    if hasattr(bar, "close"):
        bar.close()
    return out


def save_samples(images: np.ndarray, task, out_dir, *, seeds: np.ndarray, meta: dict, overwrite: bool = False) -> Path:
    """Write ``samples.npz`` (images, seeds), a PNG folder ``<task>/`` with ``samples.csv``, and ``sample.json``.

    The folder is what ``hidden-rules eval <task> <out_dir>`` reads as-is.
    """
    import cv2

    task = Task.parse(task)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{str(out)!r} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"{str(out)!r} already holds samples; pass --overwrite to replace them")
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 [N, S, S, 3], got {images.dtype} {images.shape}")
    seeds = np.asarray(seeds, np.int64)
    if seeds.shape != (len(images),):
        raise ValueError(f"seeds must have shape ({len(images)},), got {seeds.shape}")
    with atomic_folder(out, overwrite=overwrite) as tmp:
        (tmp / task.value).mkdir()
        rows = ["file_name,seed"]
        for i, img in enumerate(images):
            name = f"{task.value}/{i:06d}.png"
            ok, enc = cv2.imencode(".png", np.ascontiguousarray(img[:, :, ::-1]))
            if not ok:  # pragma: no cover - OpenCV failure
                raise RuntimeError(f"PNG encoding failed for sample {i}")
            (tmp / name).write_bytes(enc.tobytes())
            rows.append(f"{name},{int(seeds[i])}")
        (tmp / "samples.csv").write_text("\n".join(rows) + "\n")
        np.savez_compressed(tmp / "samples.npz", images=images, seeds=seeds, task=np.array(task.value))
        (tmp / "sample.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def sample(run_dir, n: int, spec: SampleSpec = SampleSpec(), *, seed: int = 0, out=None, snapshot_step=None,
           batch_size: int = 256, device="auto", overwrite: bool = False, progress: bool = True,
           compile_model: bool = False, guide: Guide | None = None) -> Path:
    """Sample ``n`` images from a run's EMA weights and save them (default ``<run>/samples/<spec.name>``,
    with ``-<guide.name>`` appended for a guided set, e.g. ``ddim-50-eta1-guided-constant-s7``).

    Returns the output folder; its ``sample.json`` records the spec, seeds, step, guide and wall time.
    ``guide``: classifier guidance (a :class:`Guide`, ``empirics.guidance.ClassifierGuide``), whose
    classifier is moved to the run's device.

    Long sets resume: after each batch the finished samples are written atomically to
    ``.<out name>.partial.npz`` beside ``out``. A later call with the same run step, sampler, seed,
    ``n``, batch size, compilation and guide continues from there (the set equals an uninterrupted
    one bit for bit; ``seconds`` sums the sessions' sampling time); any other call is refused until
    that file is removed. The file is deleted once the set is saved.
    """
    n = check_int("n", n, 1)
    if not isinstance(spec, SampleSpec):
        raise ValueError(f"spec must be a SampleSpec, got {type(spec).__name__}")
    if guide is not None and not isinstance(guide, Guide):
        raise ValueError(f"guide must have scales(n_steps) and grad_log_prob(x_t, t) (a Guide), "
                         f"got {type(guide).__name__}")
    run = load_run(run_dir, snapshot_step=snapshot_step, device=device)
    name = spec.name if snapshot_step is None else f"{spec.name}-step{run.step}"
    if guide is not None:
        name = f"{name}-{getattr(guide, 'name', 'guided')}"
        if hasattr(guide, "to"):
            guide.to(next(run.model.parameters()).device)
    out = Path(out) if out is not None else run.files.samples / name
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"{str(out)!r} already holds samples; pass --overwrite to replace them")
    batch_size = check_int("batch_size", batch_size, 1)
    partial = _PartialSamples(out.with_name(f".{out.name}.partial.npz"), {
        "run": str(run.files.root.resolve()), "train_step": run.step, "sampler": spec.name, "seed": seed,
        "n": n, "batch_size": batch_size, "compiled": bool(compile_model),
        "guidance": guide.describe() if hasattr(guide, "describe") else (None if guide is None else repr(guide))})
    done, seconds_before, sessions = partial.load(run.config.size)
    t0 = time.perf_counter()

    def checkpoint(stop: int, images: np.ndarray) -> None:
        if stop < n:
            partial.save(images[:stop], seconds_before + time.perf_counter() - t0, sessions)

    with ema_weights(run.model, run.ema):
        images = sample_images(run.model, n, run.config.size, spec, seed=seed, batch_size=batch_size,
                               device=next(run.model.parameters()).device, progress=progress,
                               channels_last=run.config.channels_last and run.config.backbone == "unet",
                               compile_model=compile_model, guide=guide, done=done, on_batch=checkpoint)
    seconds = seconds_before + time.perf_counter() - t0
    meta = {"run": str(run.files.root), "task": run.config.task, "preset": run.config.preset,
            "train_step": run.step, "sampler": spec.sampler.value, "steps": spec.steps, "eta": spec.eta,
            "n": n, "seed": seed, "seeds": f"{seed}..{seed + n - 1} (sample i uses seed + i)",
            "batch_size": batch_size, "compiled": compile_model, "seconds": round(seconds, 2),
            "torch_threads": torch.get_num_threads(),
            "device": str(next(run.model.parameters()).device), "peak_rss_mib": round(peak_rss_mib(), 1),
            "guidance": partial.key["guidance"]}
    if sessions > 1:
        meta["sessions"] = sessions
        meta["timing"] = f"summed over {sessions} sessions (resumed from {partial.path.name})"
    saved = save_samples(images, run.config.task, out, seeds=np.arange(seed, seed + n), meta=meta,
                         overwrite=overwrite)
    partial.path.unlink(missing_ok=True)
    return saved


class _PartialSamples:
    """The finished leading samples of an interrupted :func:`sample` call, with what they were drawn by."""

    def __init__(self, path: Path, key: dict):
        self.path, self.key = path, json.loads(json.dumps(key))  # as it reads back (tuples become lists)

    def load(self, size: int) -> tuple[np.ndarray | None, float, int]:
        """(images so far or None, seconds spent, number of this session); a mismatch is refused."""
        if not self.path.exists():
            return None, 0.0, 1
        try:
            with np.load(self.path) as z:
                images, meta = z["images"], json.loads(str(z["meta"]))
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same message
            raise ValueError(f"{str(self.path)!r} (samples of an interrupted run) is unreadable ({exc}); "
                             f"delete it to start the set again") from exc
        if meta.get("key") != self.key:
            diff = sorted(k for k in self.key if meta.get("key", {}).get(k) != self.key[k])
            raise ValueError(f"{str(self.path)!r} holds an interrupted set drawn with other settings "
                             f"({', '.join(diff)} differ); resume with the same settings or delete it")
        if images.dtype != np.uint8 or images.shape[1:] != (size, size, 3):
            raise ValueError(f"{str(self.path)!r} holds images of shape {images.shape}, expected "
                             f"[k, {size}, {size}, 3]; delete it to start the set again")
        return images, float(meta["seconds"]), int(meta["sessions"]) + 1

    def save(self, images: np.ndarray, seconds: float, sessions: int) -> None:
        meta = {"key": self.key, "seconds": seconds, "sessions": sessions}
        buf = io.BytesIO()
        np.savez(buf, images=images, meta=np.array(json.dumps(meta)))
        atomic_write_bytes(self.path, buf.getvalue())


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
