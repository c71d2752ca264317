"""The guidance classifier f_theta(x_t, t) of Section 5 and its loss, eq. (3) (App. G.1).

Section 5 trains a time-conditioned classifier f_theta(x_t, t) on 3-class contrastive data (class 1
follows the fine rule, classes 0 and 2 break it on either side, App. G.1) with

    L_total = L_classification + lambda * L_contrastive                          # eq. (3)

(cross-entropy plus NT-Xent, eq. (9), lambda = 1, tau = 0.5). Here:

* :func:`nt_xent` is eq. (9) in its supervised form (see its docstring for the reading);
* :class:`TimeConditionedClassifier` is a U-Net encoder from diffusers blocks (sinusoidal timestep
  embedding, ``get_down_block`` levels, ``UNetMidBlock2D``, GroupNorm, global average pooling) with an
  embedding head z (for NT-Xent) and a 3-class logit head. Its training is
  :mod:`empirics.mitigation.classifier_train`; guidance with it is :mod:`empirics.mitigation.guide`.

Where we differ from the text, and why:
* The paper's classifier is "a U-Net" without further detail; ours is the encoder half of diffusers'
  ``UNet2DModel`` (the classifier shape of Dhariwal & Nichol), sizes per preset. The paper gives no
  batch size or weight decay; the ``paper`` preset uses 128 and 0.
* NT-Xent needs positive pairs; the paper's setting has no augmented views, so the positives of an
  anchor are the other samples of its class (Khosla et al. 2020's supervised reading of eq. (9)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from empirics._checks import check_int, check_real
from empirics._config import JsonConfig, check_unet_shape, config_from_preset
from empirics.data.contrastive import ContrastiveClass
from empirics.tasks import Task

__all__ = [
    "N_CLASSES", "RULE_CLASS", "PAPER_TRAIN_ACCURACY", "nt_xent", "CLASSIFIER_PRESET_NAMES", "ClassifierConfig",
    "CLASSIFIER_PRESETS", "make_classifier_config", "ClassifierOutput", "TimeConditionedClassifier",
    "build_time_classifier", "classifier_logits", "check_classifier", "module_device",
]

N_CLASSES = len(ContrastiveClass)  # App. G.1: class 1 follows the fine rule, 0 and 2 break it on either side
RULE_CLASS = int(ContrastiveClass.RULE)
# App. G.1: accuracy of the paper's guidance classifiers on their training data.
PAPER_TRAIN_ACCURACY = {Task.A: 0.57, Task.B: 0.51, Task.C: 0.55, Task.D: 0.63}



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
        check_unet_shape(self.channels, self.attention, self.norm_num_groups, self.size)
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
    base = dict(task=Task.parse(task).value, preset=preset, **CLASSIFIER_PRESETS[preset])
    return config_from_preset(ClassifierConfig, base, overrides)


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


def build_time_classifier(config: ClassifierConfig) -> TimeConditionedClassifier:
    """A freshly initialised classifier (weights seeded by ``config.seed``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return TimeConditionedClassifier(config)


def classifier_logits(out) -> torch.Tensor:
    """The [N, 3] logits of a classifier's output (a :class:`ClassifierOutput` or the logits themselves)."""
    logits = out.logits if isinstance(out, ClassifierOutput) else out
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[1] != N_CLASSES:
        raise ValueError(f"the classifier must return {N_CLASSES} logits per sample, got "
                         f"{tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__}")
    return logits


def check_classifier(classifier) -> torch.nn.Module:
    """``classifier`` if it is a torch module f(x_t, t) -> logits; ``ValueError`` otherwise."""
    if not isinstance(classifier, torch.nn.Module):
        raise ValueError(f"classifier must be a torch module f(x_t, t) -> logits, got {type(classifier).__name__}")
    return classifier


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter (or buffer); CPU for a module with neither."""
    tensor = next(module.parameters(), None)
    if tensor is None:
        tensor = next(module.buffers(), None)
    return torch.device("cpu") if tensor is None else tensor.device
