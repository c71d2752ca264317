"""Classifier guidance toward the fine rule (Section 5, App. G.1).

Section 5 trains a time-conditioned classifier f_theta(x_t, t) on 3-class contrastive data (class 1
follows the fine rule, classes 0 and 2 break it on either side, App. G.1) with

    L_total = L_classification + lambda * L_contrastive                          # eq. (3)

(cross-entropy plus NT-Xent, eq. (9), lambda = 1, tau = 0.5) and guides the DDPM sampler with its
gradient (Dhariwal & Nichol 2021). Here:

* :func:`nt_xent` is eq. (9) in its supervised form (see its docstring for the reading);
* :class:`TimeConditionedClassifier` is a U-Net encoder from diffusers blocks (sinusoidal timestep
  embedding, ``get_down_block`` levels, ``UNetMidBlock2D``, GroupNorm, global average pooling) with an
  embedding head z (for NT-Xent) and a 3-class logit head;
* :func:`train_classifier` trains it on images noised by the DDPM schedule of :mod:`empirics.ddpm`
  (uniform t, x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps) with AdamW, lr 3e-4 (App. G.1);
  :func:`classifier_accuracy` measures held-out accuracy as a function of t;
* :class:`GuidanceSchedule` (constant, or App. G.1's piecewise ramp over the last 20 steps) and
  :class:`ClassifierGuide` plug into :func:`empirics.ddpm.sample_images`, which applies the gradient
  of log p(y = 1 | x_t, t) as :func:`empirics.ddpm.reverse_step` describes.

Where we differ from the text, and why:
* The paper's classifier is "a U-Net" without further detail; ours is the encoder half of diffusers'
  ``UNet2DModel`` (the classifier shape of Dhariwal & Nichol), sizes per preset. The paper gives no
  batch size or weight decay; the ``paper`` preset uses 128 and 0.
* NT-Xent needs positive pairs; the paper's setting has no augmented views, so the positives of an
  anchor are the other samples of its class (Khosla et al. 2020's supervised reading of eq. (9)).
* The piecewise schedule's ramp is scale * j / k at the j-th of the last k steps (j = 1..k): "activated
  only in the final 20 denoising steps" with every one of them active and the full scale at the last.
* Ancestral DDPM uses diffusers' fixed_small posterior variance, which is 0 at the last step (t = 0 ->
  x_0), so that step is unguided; Dhariwal & Nichol's code clips that variance to beta~_1 instead.
* DDIM adds the score form's displacement to diffusers' unguided step instead of handing eps_hat to
  the scheduler, whose clip of x0 would otherwise turn the guidance around (``empirics.ddpm.reverse_step``).
"""

from __future__ import annotations

import csv
import dataclasses
import enum
import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from empirics._checks import check_choice, check_class_labels, check_int, check_real, check_rgb_images
from empirics._config import JsonConfig
from empirics.atomic import atomic_torch_save, atomic_write_text
from empirics.ddpm import T_STEPS, CheckpointError, _device, _progress, _step_generator, scheduler, to_model_space
from empirics.tasks import Task

__all__ = [
    "N_CLASSES", "RULE_CLASS", "PAPER_TRAIN_ACCURACY", "nt_xent", "ClassifierConfig", "CLASSIFIER_PRESETS",
    "make_classifier_config", "ClassifierOutput", "TimeConditionedClassifier", "build_classifier",
    "ClassifierFiles", "ClassifierTrainSummary", "LogColumn", "train_classifier", "load_classifier",
    "classifier_log_prob", "classifier_accuracy", "GuidanceKind", "GuidanceSchedule", "default_scale",
    "paper_schedule", "ClassifierGuide",
]

N_CLASSES = 3  # App. G.1: class 1 follows the fine rule, 0 and 2 break it on either side
RULE_CLASS = 1
# App. G.1: accuracy of the paper's guidance classifiers on their training data.
PAPER_TRAIN_ACCURACY = {Task.A: 0.57, Task.B: 0.51, Task.C: 0.55, Task.D: 0.63}
_CHECKPOINT_FORMAT = "hidden-rules time-conditioned classifier v1"


# ----------------------------------------------------------------------------------------------
# NT-Xent, eq. (9)


def nt_xent(z: torch.Tensor, labels, tau: float = 0.5) -> torch.Tensor:
    """NT-Xent (Sohn 2016; App. G.1 eq. (9)) with cosine similarity and temperature ``tau``, supervised form.

    eq. (9) is written for a batch of N positive pairs (2N views): for anchor i and its positive j,
    l(i, j) = -log( exp(sim_ij / tau) / sum_{k != i} exp(sim_ik / tau) ). The paper's classifier data
    has no augmented views, so the positives of anchor i are the other samples with its label:

        loss_i = mean_{j != i, y_j = y_i} -log( exp(sim_ij / tau) / sum_{k != i} exp(sim_ik / tau) ),

    averaged over the anchors that have at least one positive (0, still differentiable, when none
    has). When every anchor has exactly one positive this is eq. (9) averaged over all 2N ordered
    pairs, the SimCLR loss. ``z``: [N, D] embeddings; ``labels``: N integer class labels.
    """
    if not isinstance(z, torch.Tensor) or z.ndim != 2 or not z.is_floating_point():
        raise ValueError(f"z must be a 2-D float tensor [N, D], got "
                         f"{tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__}")
    labels = torch.as_tensor(labels, device=z.device)
    if labels.shape != (z.shape[0],) or labels.is_floating_point() or labels.is_complex() \
            or labels.dtype == torch.bool:
        raise ValueError(f"labels must be {z.shape[0]} integers (one per row of z), got {labels.dtype} "
                         f"{tuple(labels.shape)}")
    tau = check_real("tau", tau)
    if tau <= 0:
        raise ValueError(f"tau must be a finite number > 0, got {tau!r}")
    n = z.shape[0]
    unit = torch.nn.functional.normalize(z, dim=1, eps=1e-12)
    logits = unit @ unit.T / tau                              # sim(z_i, z_k) / tau
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    log_prob = logits - torch.logsumexp(logits.masked_fill(self_mask, -math.inf), dim=1, keepdim=True)
    positive = (labels[:, None] == labels[None, :]) & ~self_mask
    n_pos = positive.sum(1)
    anchors = n_pos > 0
    if not bool(anchors.any()):
        return z.sum() * 0.0
    per_anchor = -(log_prob.masked_fill(~positive, 0.0).sum(1)[anchors] / n_pos[anchors])
    return per_anchor.mean()


# ----------------------------------------------------------------------------------------------
# The classifier f_theta(x_t, t)


CLASSIFIER_PRESET_NAMES = ("paper", "cpu", "smoke")


@dataclass(frozen=True)
class ClassifierConfig(JsonConfig):
    """Everything that defines a classifier and its training (eq. (3), App. G.1); stored in its checkpoint."""

    TUPLE_FIELDS = ("channels", "attention")
    KIND = "classifier config"

    task: str
    preset: str
    size: int = 32
    # U-Net encoder (diffusers blocks)
    channels: tuple[int, ...] = (16, 32, 64)
    layers_per_block: int = 1
    attention: tuple[bool, ...] = (False, False, False)  # per resolution level, and the mid block (last)
    embedding_dim: int = 32
    norm_num_groups: int = 8
    # eq. (3) and App. G.1
    lr: float = 3e-4
    weight_decay: float = 0.0
    contrastive_weight: float = 1.0  # lambda of eq. (3)
    temperature: float = 0.5  # tau of eq. (9)
    train_steps: int = 20000
    batch_size: int = 128
    seed: int = 0
    # bookkeeping
    checkpoint_every: int = 500
    log_every: int = 50

    def __post_init__(self):
        object.__setattr__(self, "task", Task.parse(self.task).value)
        if self.preset not in CLASSIFIER_PRESET_NAMES:
            raise ValueError(f"preset must be one of {', '.join(CLASSIFIER_PRESET_NAMES)}, got {self.preset!r}")
        check_int("size", self.size, 8, 512)
        if not self.channels or any(check_int("channels", c, 1) <= 0 for c in self.channels):
            raise ValueError(f"channels must be positive integers, got {self.channels!r}")
        if len(self.attention) != len(self.channels):
            raise ValueError(f"attention must give one flag per level ({len(self.channels)}), got {self.attention!r}")
        if self.size % (2 ** (len(self.channels) - 1)):
            raise ValueError(f"size {self.size} is not divisible by 2^{len(self.channels) - 1} "
                             f"for {len(self.channels)} levels")
        check_int("norm_num_groups", self.norm_num_groups, 1)
        bad = [c for c in self.channels if c % self.norm_num_groups]
        if bad:
            raise ValueError(f"norm_num_groups={self.norm_num_groups} must divide every channel count, not {bad}")
        check_int("layers_per_block", self.layers_per_block, 1)
        check_int("embedding_dim", self.embedding_dim, 1)
        check_real("lr", self.lr, 1e-8, 1.0)
        check_real("weight_decay", self.weight_decay, 0.0, 1.0)
        check_real("contrastive_weight", self.contrastive_weight, 0.0)
        if check_real("temperature", self.temperature) <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        check_int("train_steps", self.train_steps, 1)
        check_int("batch_size", self.batch_size, 2)
        check_int("seed", self.seed, 0)
        check_int("checkpoint_every", self.checkpoint_every, 1)
        check_int("log_every", self.log_every, 1)



CLASSIFIER_PRESETS: dict[str, dict] = {
    # App. G.1 on a GPU: 20000 iterations, lr 3e-4, lambda 1, tau 0.5; a U-Net encoder with attention.
    "paper": dict(channels=(64, 128, 256), layers_per_block=2, attention=(False, True, True), embedding_dim=128,
                  norm_num_groups=32, batch_size=128, train_steps=20000, checkpoint_every=1000, log_every=100),
    # Two CPU cores: one task in ~10 minutes (~0.3 s/step on quiet cores: measured at 0.17x the step of
    # the DDPM cpu preset side by side, which takes 1.66 s quiet).
    "cpu": dict(channels=(16, 32, 64), layers_per_block=1, attention=(False, False, False), embedding_dim=32,
                norm_num_groups=8, batch_size=64, train_steps=2000, checkpoint_every=250, log_every=25),
    # Tests: seconds.
    "smoke": dict(channels=(8, 16), layers_per_block=1, attention=(False, False), embedding_dim=8,
                  norm_num_groups=4, batch_size=16, train_steps=4, checkpoint_every=2, log_every=1),
}


def make_classifier_config(task, preset: str = "cpu", **overrides) -> ClassifierConfig:
    """The classifier config of ``preset`` for ``task``, with ``overrides`` (``None`` values ignored)."""
    if preset not in CLASSIFIER_PRESETS:
        raise ValueError(f"preset must be one of {', '.join(CLASSIFIER_PRESETS)}, got {preset!r}")
    names = {f.name for f in dataclasses.fields(ClassifierConfig)}
    bad = sorted(set(overrides) - names)
    if bad:
        raise ValueError(f"unknown classifier config fields {bad}; allowed: {sorted(names)}")
    base = dict(task=Task.parse(task).value, preset=preset, **CLASSIFIER_PRESETS[preset])
    base.update({k: v for k, v in overrides.items() if v is not None})
    if "channels" in overrides and "attention" not in overrides:
        base["attention"] = (False,) * len(base["channels"])
    for k in ("channels", "attention"):
        base[k] = tuple(base[k])
    return ClassifierConfig(**base)


class ClassifierOutput(NamedTuple):
    """``logits`` [N, 3] (the classification head) and ``embedding`` z [N, D] (the NT-Xent head)."""

    logits: torch.Tensor
    embedding: torch.Tensor


class TimeConditionedClassifier(torch.nn.Module):
    """f_theta(x_t, t) of Section 5: a U-Net encoder over x_t in [-1, 1] scale and integer timesteps t."""

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps
        from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2D, get_down_block

        if not isinstance(config, ClassifierConfig):
            raise ValueError(f"config must be a ClassifierConfig, got {type(config).__name__}")
        self.config = config
        ch, groups = config.channels, config.norm_num_groups
        temb = 4 * ch[0]
        self.time_proj = Timesteps(ch[0], flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(ch[0], temb)
        self.conv_in = torch.nn.Conv2d(3, ch[0], kernel_size=3, padding=1)
        self.down_blocks = torch.nn.ModuleList()
        for i, (c_in, c_out) in enumerate(zip((ch[0], *ch[:-1]), ch)):
            self.down_blocks.append(get_down_block(
                "AttnDownBlock2D" if config.attention[i] else "DownBlock2D", num_layers=config.layers_per_block,
                in_channels=c_in, out_channels=c_out, temb_channels=temb, add_downsample=i < len(ch) - 1,
                resnet_eps=1e-5, resnet_act_fn="silu", resnet_groups=groups, attention_head_dim=8,
                downsample_padding=1))
        self.mid_block = UNetMidBlock2D(in_channels=ch[-1], temb_channels=temb, resnet_eps=1e-5,
                                        resnet_act_fn="silu", resnet_groups=groups, attention_head_dim=8,
                                        add_attention=config.attention[-1])
        self.norm_out = torch.nn.GroupNorm(groups, ch[-1], eps=1e-5)
        self.logit_head = torch.nn.Linear(ch[-1], N_CLASSES)
        self.embedding_head = torch.nn.Sequential(  # SimCLR's projection head
            torch.nn.Linear(ch[-1], ch[-1]), torch.nn.SiLU(), torch.nn.Linear(ch[-1], config.embedding_dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> ClassifierOutput:
        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(x.shape[0])
        emb = self.time_embedding(self.time_proj(t).to(x.dtype))
        h = self.conv_in(x)
        for block in self.down_blocks:
            h, _ = block(h, emb)
        h = self.mid_block(h, emb)
        h = torch.nn.functional.silu(self.norm_out(h)).mean(dim=(2, 3))  # global average pooling
        return ClassifierOutput(self.logit_head(h), self.embedding_head(h))


def build_classifier(config: ClassifierConfig) -> TimeConditionedClassifier:
    """A freshly initialised classifier (weights seeded by ``config.seed``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return TimeConditionedClassifier(config)


# ----------------------------------------------------------------------------------------------
# Training, eq. (3)


@dataclass(frozen=True)
class ClassifierFiles:
    """The files of a classifier folder: ``checkpoint.pt`` (atomic) and ``loss.csv``."""

    root: Path

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.pt"

    @property
    def loss_log(self) -> Path:
        return self.root / "loss.csv"


@dataclass(frozen=True)
class ClassifierTrainSummary:
    """What a call of :func:`train_classifier` did (``last_*``: the mean over the last logged window)."""

    out_dir: Path
    start_step: int
    end_step: int
    finished: bool
    seconds: float
    last_loss: float
    last_accuracy: float
    total_seconds: float | None = None  # training time of steps 0..end_step over every session (None: unknown)


class LogColumn(enum.IntEnum):
    """Columns of ``loss.csv``: the window means of eq. (3)'s total and its two terms, batch accuracy."""

    STEP = 0
    LOSS = 1
    CROSS_ENTROPY = 2
    NT_XENT = 3
    ACCURACY = 4
    SECONDS = 5


def _data_digest(images: np.ndarray, labels: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(str(images.shape).encode())
    h.update(np.ascontiguousarray(images).tobytes())
    h.update(labels.tobytes())
    return h.hexdigest()


def _batch_indices(config: ClassifierConfig, n: int, step: int) -> np.ndarray:
    """Step ``step``'s batch: consecutive slices of a fresh permutation per epoch (seeded by (seed, epoch))."""
    per_epoch = max(1, n // config.batch_size)
    epoch, j = divmod(step, per_epoch)
    perm = np.random.default_rng([config.seed, 104729, epoch]).permutation(n)
    return perm[j * config.batch_size:(j + 1) * config.batch_size]


def _read_checkpoint(path: Path) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise CheckpointError(f"{str(path)!r} is corrupt or unreadable ({type(exc).__name__}: {exc})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != _CHECKPOINT_FORMAT or \
            not {"config", "model", "step"} <= set(ckpt):
        raise CheckpointError(f"{str(path)!r} is not a classifier checkpoint of this package")
    try:
        ckpt["config"] = ClassifierConfig.from_json(ckpt["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{str(path)!r} holds an invalid classifier config: {exc}") from exc
    return ckpt


def _append_log(path: Path, row: list) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        w = csv.writer(fh)
        if new:
            w.writerow([c.name.lower() for c in LogColumn])
        w.writerow(row)


def _truncate_log(path: Path, step: int) -> None:
    """Drop log rows after ``step`` (written after the last checkpoint of an interrupted run)."""
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    keep = lines[:1] + [ln for ln in lines[1:] if ln and int(ln.split(",")[LogColumn.STEP]) <= step]
    atomic_write_text(path, "\n".join(keep) + "\n")


def train_classifier(images_uint8, labels, config: ClassifierConfig, out_dir, *, max_steps: int | None = None,
                     force: bool = False, progress: bool = True, device="auto") -> ClassifierTrainSummary:
    """Train f_theta(x_t, t) on ``images_uint8`` (uint8 [N, S, S, 3]) with ``labels`` in {0, 1, 2}: eq. (3).

    Each step draws a batch, t uniform in {0, ..., T-1} and eps ~ N(0, I), noises the images with the
    DDPM schedule of :mod:`empirics.ddpm` and minimises CE(logits, y) + lambda * NT-Xent(z, y, tau) with
    AdamW. The randomness of step k is seeded by (seed, k), so a run resumed from its checkpoint
    (written atomically every ``checkpoint_every`` steps and at the end; model, optimiser, step,
    config with task and image size, a digest of the data) draws what an uninterrupted one draws.
    ``max_steps`` stops early with a checkpoint; a finished classifier is refused unless ``force``.
    """
    if not isinstance(config, ClassifierConfig):
        raise ValueError(f"config must be a ClassifierConfig, got {type(config).__name__}")
    images = check_rgb_images(images_uint8, config.size)
    labels = check_class_labels(labels, len(images))
    if config.batch_size > len(images):
        raise ValueError(f"batch_size ({config.batch_size}) must not exceed the number of images ({len(images)})")
    if max_steps is not None:
        check_int("max_steps", max_steps, 1)
    files = ClassifierFiles(Path(out_dir))
    if files.root.exists() and not files.root.is_dir():
        raise ValueError(f"{str(files.root)!r} exists and is not a folder")
    digest = _data_digest(images, labels)
    dev = _device(device)
    model = build_classifier(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    start, before = 0, 0.0   # before: training seconds of the checkpointed steps (None: not recorded)
    if files.checkpoint.exists():
        ckpt = _read_checkpoint(files.checkpoint)
        if ckpt["config"] != config:
            diff = sorted(k for k, v in config.to_json().items() if ckpt["config"].to_json().get(k) != v)
            raise CheckpointError(f"{str(files.checkpoint)!r} holds a classifier with another config "
                                  f"(differs in {diff}); choose another folder")
        if ckpt.get("data_sha256") != digest:
            raise CheckpointError(f"{str(files.checkpoint)!r} was trained on other images or labels; "
                                  "choose another folder")
        if ckpt.get("finished") and not force:
            raise CheckpointError(f"{str(files.checkpoint)!r} holds a finished classifier ({ckpt['step']} steps); "
                                  "pass force=True to train it again from step 0")
        if ckpt.get("finished"):
            files.checkpoint.unlink()
            files.loss_log.unlink(missing_ok=True)
        else:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            start = int(ckpt["step"])
            before = float(ckpt["seconds"]) if ckpt.get("seconds") is not None else None  # older checkpoints: absent
    files.root.mkdir(parents=True, exist_ok=True)
    _truncate_log(files.loss_log, start)

    model.to(dev).train()
    x_all = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    y_all = torch.from_numpy(labels)
    noise_sched = scheduler("ddpm")
    stop = config.train_steps if max_steps is None else min(config.train_steps, max_steps)
    t0 = time.perf_counter()
    window: list[tuple[float, float, float, float]] = []
    last = (math.nan,) * 4
    bar = _progress(range(start, stop), progress, f"classifier {config.task}", start, stop)
    for step in bar:
        gen = _step_generator(config.seed, step)
        idx = torch.from_numpy(_batch_indices(config, len(images), step))
        x0 = to_model_space(x_all[idx])
        y = y_all[idx].to(dev)
        t = torch.randint(0, T_STEPS, (len(idx),), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        x_t = noise_sched.add_noise(x0, noise, t).to(dev)
        out = model(x_t, t.to(dev))
        ce = torch.nn.functional.cross_entropy(out.logits, y)
        con = nt_xent(out.embedding, y, config.temperature)
        loss = ce + config.contrastive_weight * con  # eq. (3)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        acc = (out.logits.argmax(1) == y).float().mean()
        window.append((loss.item(), ce.item(), con.item(), acc.item()))
        done = step + 1
        if not math.isfinite(window[-1][0]):
            raise FloatingPointError(f"classifier loss is {window[-1][0]} at step {done}; lower lr (now {config.lr})")
        if done % config.log_every == 0 or done == stop:
            last = tuple(float(v) for v in np.mean(window, axis=0))
            # seconds since step 0 over every session (since this session's start when that is unknown)
            _append_log(files.loss_log, [done, *(f"{v:.6g}" for v in last),
                                         f"{(before or 0.0) + time.perf_counter() - t0:.2f}"])
            window = []
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{last[0]:.4f}", acc=f"{last[3]:.3f}")
        if done % config.checkpoint_every == 0 or done == stop:
            atomic_torch_save({"format": _CHECKPOINT_FORMAT, "step": done, "config": config.to_json(),
                               "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                               "data_sha256": digest, "n_images": len(images),
                               "finished": done == config.train_steps,
                               "seconds": None if before is None else before + time.perf_counter() - t0},
                              files.checkpoint)
    model.eval()
    end = max(start, stop)
    elapsed = time.perf_counter() - t0
    return ClassifierTrainSummary(files.root, start, end, end == config.train_steps, elapsed,
                                  last[0], last[3], None if before is None else before + elapsed)


def load_classifier(path, task=None, size: int | None = None, device="cpu") -> TimeConditionedClassifier:
    """The classifier of a checkpoint (a file, or a folder holding ``checkpoint.pt``), in eval mode.

    ``task`` / ``size``, when given, must be those it was trained for: a classifier checkpoint for
    another task or image size is a ``CheckpointError`` (a ``ValueError``), as is a corrupt file.
    """
    path = Path(path)
    if path.is_dir():
        path = ClassifierFiles(path).checkpoint
    if not path.is_file():
        raise CheckpointError(f"no classifier checkpoint at {str(path)!r}")
    ckpt = _read_checkpoint(path)
    config: ClassifierConfig = ckpt["config"]
    want_task = None if task is None else Task.parse(task).value
    want_size = None if size is None else check_int("size", size, 1)
    if (want_task is not None and want_task != config.task) or (want_size is not None and want_size != config.size):
        raise CheckpointError(
            f"{str(path)!r} is a classifier checkpoint for another task or image size: it was trained for "
            f"task {config.task} at {config.size} px, asked for task {want_task or config.task} "
            f"at {want_size or config.size} px")
    model = build_classifier(config)
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{str(path)!r} is corrupt: its weights do not fit its config ({exc})") from exc
    return model.to(_device(device)).eval()


def classifier_log_prob(classifier, images_uint8, t: int = 0, target: int = RULE_CLASS, *, seed: int = 0,
                        batch_size: int = 256) -> np.ndarray:
    """log p(y = ``target`` | x_t, t) for each image, x_t its DDPM noising at ``t`` (t = 0: nearly clean).

    The noise of image i is the i-th draw of a generator seeded by (seed, t); ``classifier`` is as for
    :class:`ClassifierGuide`.
    """
    return _log_probs(classifier, images_uint8, t, seed, batch_size)[:, check_int("target", target, 0, N_CLASSES - 1)]


def classifier_accuracy(classifier, images_uint8, labels, t_values, *, seed: int = 0,
                        batch_size: int = 256) -> dict[int, float]:
    """Held-out accuracy t -> mean(argmax f_theta(x_t, t) == label) on ``images_uint8`` noised at each t.

    App. G.1 reports 0.57 / 0.51 / 0.55 / 0.63 (Tasks A-D) on the *training* data, t not stated
    (:data:`PAPER_TRAIN_ACCURACY`); accuracy falls toward 1/3 as t grows and x_t forgets x_0.
    """
    images = check_rgb_images(images_uint8)
    labels = check_class_labels(labels, len(images))
    t_list = [check_int("t", t, 0, T_STEPS - 1) for t in np.atleast_1d(np.asarray(t_values)).tolist()]
    if not t_list:
        raise ValueError("t_values must hold at least one timestep")
    return {t: float(np.mean(_log_probs(classifier, images, t, seed, batch_size).argmax(1) == labels))
            for t in t_list}


def _logits(out) -> torch.Tensor:
    """The [N, 3] logits of a classifier's output (a :class:`ClassifierOutput` or the logits themselves)."""
    logits = out.logits if isinstance(out, ClassifierOutput) else out
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[1] != N_CLASSES:
        raise ValueError(f"the classifier must return {N_CLASSES} logits per sample, got "
                         f"{tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__}")
    return logits


def _check_classifier(classifier) -> torch.nn.Module:
    if not isinstance(classifier, torch.nn.Module):
        raise ValueError(f"classifier must be a torch module f(x_t, t) -> logits, got {type(classifier).__name__}")
    return classifier


def _log_probs(classifier, images_uint8, t: int, seed: int, batch_size: int) -> np.ndarray:
    config = getattr(_check_classifier(classifier), "config", None)
    images = check_rgb_images(images_uint8, config.size if isinstance(config, ClassifierConfig) else None)
    t = check_int("t", t, 0, T_STEPS - 1)
    seed = check_int("seed", seed, 0)
    batch_size = check_int("batch_size", batch_size, 1)
    dev = _module_device(classifier)
    x0 = to_model_space(torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))))
    noise = torch.randn(x0.shape, generator=_step_generator(seed, t))
    x_t = scheduler("ddpm").add_noise(x0, noise, torch.full((len(x0),), t, dtype=torch.long))
    out = []
    with torch.inference_mode():
        for s in range(0, len(x_t), batch_size):
            xb = x_t[s:s + batch_size].to(dev)
            logits = _logits(classifier(xb, torch.full((len(xb),), t, dtype=torch.long, device=dev)))
            out.append(torch.log_softmax(logits.double(), dim=1).cpu())
    return torch.cat(out).numpy()


def _module_device(module: torch.nn.Module) -> torch.device:
    tensor = next(module.parameters(), None)
    if tensor is None:
        tensor = next(module.buffers(), None)
    return torch.device("cpu") if tensor is None else tensor.device


# ----------------------------------------------------------------------------------------------
# Guidance (Dhariwal & Nichol 2021; Section 5, App. G.1)


class GuidanceKind(str, enum.Enum):
    """How the guidance scale varies over the sampling steps (App. G.1)."""

    CONSTANT = "constant"  # the scale at every step ("standard weighting")
    PIECEWISE = "piecewise"  # 0, then a linear ramp to the scale over the last k steps


# App. G.1: gradient scales and the better of the two schedules per task.
_PAPER_SCALE = {Task.A: 7.0, Task.B: 10.0, Task.C: 7.0, Task.D: 10.0}
_PAPER_KIND = {Task.A: GuidanceKind.CONSTANT, Task.B: GuidanceKind.CONSTANT, Task.C: GuidanceKind.PIECEWISE,
               Task.D: GuidanceKind.CONSTANT}


def default_scale(task) -> float:
    """App. G.1's gradient scale: 7 for Tasks A and C, 10 for B and D."""
    return _PAPER_SCALE[Task.parse(task)]


@dataclass(frozen=True)
class GuidanceSchedule:
    """The guidance scale s_i of sampling step i (App. G.1).

    ``constant``: s_i = ``scale``. ``piecewise``: s_i = 0 before the last ``last_k`` steps and
    ``scale`` * j / k at the j-th of them (j = 1..k), so every one of the last k steps is guided and the
    last gets the full scale. ``last_k`` must not exceed the number of sampling steps, checked by
    :meth:`scales` when sampling starts.
    """

    kind: GuidanceKind = GuidanceKind.CONSTANT
    scale: float = 1.0
    last_k: int = 20

    def __post_init__(self):
        object.__setattr__(self, "kind", check_choice("kind", self.kind, GuidanceKind))
        object.__setattr__(self, "scale", check_real("scale", self.scale))
        object.__setattr__(self, "last_k", check_int("last_k", self.last_k, 1))

    def scales(self, n_steps: int) -> np.ndarray:
        """s_i for i = 0 (first sampling step) .. n_steps - 1 (last)."""
        n_steps = check_int("n_steps", n_steps, 1)
        if self.kind is GuidanceKind.CONSTANT:
            return np.full(n_steps, self.scale)
        if self.last_k > n_steps:
            raise ValueError(f"the piecewise guidance ramp spans last_k={self.last_k} steps, more than the "
                             f"{n_steps} sampling steps; use last_k <= {n_steps}")
        out = np.zeros(n_steps)
        out[n_steps - self.last_k:] = self.scale * np.arange(1, self.last_k + 1) / self.last_k
        return out


def paper_schedule(task) -> GuidanceSchedule:
    """App. G.1's choice for ``task``: constant for A, B and D, piecewise over the last 20 steps for C."""
    task = Task.parse(task)
    return GuidanceSchedule(_PAPER_KIND[task], _PAPER_SCALE[task], 20)


class ClassifierGuide:
    """Classifier guidance toward class ``target`` for :func:`empirics.ddpm.sample_images` (a ``Guide``).

    ``classifier``: a :class:`TimeConditionedClassifier` or any torch module f(x_t, t) returning
    :class:`ClassifierOutput` or [N, 3] logits.

    ``grad_log_prob(x_t, t)`` = grad_x log softmax(f_theta(x_t, t))[target], by autograd at x_t (as the
    paper does: the classifier sees the current noisy sample, not a denoised estimate). Each sample's
    gradient depends on that sample only (GroupNorm normalises per sample). ``scales(n)`` is the
    schedule's.
    """

    def __init__(self, classifier: TimeConditionedClassifier, schedule: GuidanceSchedule,
                 target: int = RULE_CLASS, source: str | None = None):
        _check_classifier(classifier)
        self.source = None if source is None else str(source)     # where the classifier came from (sample.json)
        if not isinstance(schedule, GuidanceSchedule):
            raise ValueError(f"schedule must be a GuidanceSchedule, got {type(schedule).__name__}")
        self.classifier = classifier
        self.schedule = schedule
        self.target = check_int("target", target, 0, N_CLASSES - 1)

    def scales(self, n_steps: int) -> np.ndarray:
        return self.schedule.scales(n_steps)

    @property
    def name(self) -> str:
        """Suffix of a guided sample set's folder, e.g. ``guided-constant-s7`` or ``guided-piecewise-s7-k20``."""
        s = self.schedule
        tail = f"-k{s.last_k}" if s.kind is GuidanceKind.PIECEWISE else ""
        target = "" if self.target == RULE_CLASS else f"-y{self.target}"
        return f"guided-{s.kind.value}-s{s.scale:g}{tail}{target}"

    def describe(self) -> dict:
        """JSON-able record of the guide (``sample.json``)."""
        s = self.schedule
        return {"kind": s.kind.value, "scale": s.scale, "last_k": s.last_k, "target": self.target,
                "classifier": self.source}

    def to(self, device) -> ClassifierGuide:
        self.classifier.to(device)
        return self

    def grad_log_prob(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        dev = _module_device(self.classifier)
        with torch.inference_mode(False), torch.enable_grad():
            x_in = x.detach().to(dev).clone().requires_grad_(True)
            logits = _logits(self.classifier(x_in, t.to(dev)))
            log_p = torch.log_softmax(logits.float(), dim=1)[:, self.target].sum()
            (grad,) = torch.autograd.grad(log_p, x_in)
        return grad.to(x.device)

    def __repr__(self) -> str:
        s = self.schedule
        return f"ClassifierGuide(target={self.target}, {s.kind.value}, scale={s.scale:g}, last_k={s.last_k})"
