"""Filtered DDPM (Section 5, App. G.2, Fig. 18): pixel-space classifiers that keep rule-conforming samples.

App. G.2: on the contrastive data of App. G.1 (Fig. 16: class 1 obeys the fine rule, classes 0 and
2 break it on either side while keeping the coarse rule) the data are split 80:20 into training and
test sets, and a three-way classifier is trained on the clean images with an MLP, a ResNet-8 and a
U-Net, for 100 epochs at a learning rate of 3e-4; the test accuracies are 60-80 % (Fig. 18). DDPM
samples are then filtered, "keeping only samples predicted as Class 1" (MLP for Tasks A and B,
U-Net for C and D); Table 2's "Filtering" column measures what is kept.

Here:

* :class:`Architecture` selects the classifier, uint8 RGB [N, S, S, 3] -> logits [N, 3], inputs scaled
  to [-1, 1] (``empirics.ddpm.to_model_space``, the DDPM's own scaling):
  ``mlp`` (flatten -> ReLU hidden layers -> 3), ``resnet8`` (He et al. 2016's CIFAR ResNet with one
  basic block per stage, 6n + 2 = 8 weighted layers: stem conv, 3 stages x 2 convs, linear head;
  1x1 projection shortcuts are not counted, by the usual convention) and ``unet_encoder`` (the down
  path of a diffusers ``UNet2DModel``: ``conv_in`` and diffusers down blocks built by
  ``get_down_block`` without a time embedding, then GroupNorm, SiLU, global average pooling and a
  linear head);
* :func:`train_filter` trains one with AdamW and cross-entropy on a seeded stratified 80:20 split
  (:func:`train_test_split`) and reports the per-epoch training loss and the final test accuracy;
* :func:`filter_samples` is the filter: predicted class 1 with class-1 probability >= a threshold;
* :func:`oracle_filter` uses the evaluator itself as the filter (beyond the paper: the ceiling any
  learned filter approaches; Table 2 has no such row);
* :func:`random_subset_control` is the null a filter is measured against (beyond the paper): keeping
  as many samples at random. A filter whose Error or R^2 a random subset of its size also reaches has
  shown nothing about the rule, only that a smaller set has other CIs.

Seeding: the weights are drawn under ``torch.manual_seed(config.seed)`` (in a forked RNG, so the
caller's global state is untouched), the split from ``numpy.random.default_rng([seed, SPLIT_STREAM])``
and the order of epoch e from ``default_rng([seed, ORDER_STREAM, e])``; no dropout, no augmentation.
The same config and data give the same weights, bit for bit, on the same machine and thread count.

Where we differ from the text, and why:

* "U-Net" for a classifier: a U-Net maps an image to an image, so the classifier is its encoder
  half, as in the classifier Dhariwal & Nichol (2021) guide with (the down path of their U-Net
  followed by pooling). The ``paper`` preset's encoder is the down path of ``empirics.ddpm``'s
  ``paper`` U-Net (channels 96-192-192, two ResNet layers per block, self-attention at the two lower
  resolutions);
  the mid block and the up path are left out.
* The paper gives neither the optimiser, the batch size, the weight decay nor the layer sizes of the
  MLP and ResNet-8. We use AdamW (as for the DDPM, App. D.1) with weight decay 0.01 (PyTorch's
  default), batches of 64, an MLP with hidden layers 1024-512 and the ResNet-8 stage widths 16-32-64
  (He et al.'s CIFAR widths), and a constant learning rate.
* The split is stratified: each class gives ``round(test_fraction * n_class)`` images to the test
  set, so the test set has the classes' proportions and chance accuracy stays 1/3 on balanced data
  (App. G.1: 2000 images per class, so exactly 400 per class are held out). ``stratified=False``
  draws one permutation of all images instead (test size ``round(test_fraction * N)``).
* The reported test accuracy is that of the weights after the last epoch; no epoch is chosen by
  its test accuracy (that would make the test set a validation set).
* :func:`filter_samples` defaults to the paper's rule, "predicted as Class 1" (argmax alone,
  threshold 0); a threshold above 1/3 keeps only the more confident of those predictions.

The training data are App. G.1's three classes (``empirics.contrastive``, labels
``ContrastiveClass``); any uint8 images with labels in {0, 1, 2} will do.
"""

from __future__ import annotations

import enum
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from empirics._checks import check_choice, check_class_labels, check_int, check_real, check_rgb_images
from empirics._config import JsonConfig, check_unet_shape, config_from_preset
from empirics.atomic import atomic_torch_save
from empirics.data.contrastive import ContrastiveClass
from empirics.ddpm import progress_bar, resolve_device, to_model_space
from empirics.evaluate import Evaluation
from empirics.evaluator.metrics import conforming
from empirics.mitigation.classifier import N_CLASSES
from empirics.tasks import TARGET_SLOPE, Task

__all__ = [
    "Architecture", "FilterConfig", "PRESETS", "filter_config", "build_filter_network", "as_model_input",
    "train_test_split", "epoch_order",
    "train_filter", "TrainedFilter", "predicted_class", "filter_samples", "oracle_filter",
    "random_subset_control", "RANDOM_SUBSET_DRAWS", "save_filter",
    "load_filter", "FILE_FORMAT",
]

SPLIT_STREAM, ORDER_STREAM = 0x5B11, 0x0DE5  # independent numpy streams of one seed
RANDOM_SUBSET_DRAWS = 200                    # random subsets behind random_subset_control's p-values
FILE_FORMAT = "hidden-rules filter classifier"
FILE_VERSION = 1
PREDICT_BATCH = 256


class Architecture(str, enum.Enum):
    """The pixel-space classifiers of App. G.2 / Fig. 18."""

    MLP = "mlp"
    RESNET8 = "resnet8"
    UNET_ENCODER = "unet_encoder"


@dataclass(frozen=True)
class FilterConfig(JsonConfig):
    """Everything that defines one classifier training (defaults: App. G.2 where it gives a value)."""

    TUPLE_FIELDS = ("hidden", "channels", "attention")
    KIND = "filter config"

    architecture: Architecture
    epochs: int = 100               # App. G.2
    lr: float = 3e-4                # App. G.2
    batch_size: int = 64
    weight_decay: float = 0.01
    test_fraction: float = 0.2      # App. G.2: 80:20
    stratified: bool = True
    seed: int = 0
    hidden: tuple[int, ...] = (1024, 512)       # mlp: widths of the hidden layers
    channels: tuple[int, ...] = (16, 32, 64)    # resnet8: the 3 stage widths; unet_encoder: one per down block
    layers_per_block: int = 2                   # unet_encoder: ResNet layers per down block
    attention: tuple[bool, ...] = ()            # unet_encoder: self-attention per down block (() = none)
    norm_num_groups: int = 8                    # unet_encoder: GroupNorm groups

    def __post_init__(self):
        arch = check_choice("architecture", self.architecture, Architecture)
        object.__setattr__(self, "architecture", arch)
        check_int("epochs", self.epochs, 1)
        check_real("lr", self.lr, 1e-8, 1.0)
        check_int("batch_size", self.batch_size, 1)
        check_real("weight_decay", self.weight_decay, 0.0, 1.0)
        fraction = check_real("test_fraction", self.test_fraction, 0.0, 1.0)
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"test_fraction must be strictly between 0 and 1, got {self.test_fraction!r}")
        if not isinstance(self.stratified, bool):
            raise ValueError(f"stratified must be True or False, got {self.stratified!r}")
        check_int("seed", self.seed, 0)
        for name in ("hidden", "channels", "attention"):
            if not isinstance(getattr(self, name), tuple):
                raise ValueError(f"{name} must be a tuple, got {getattr(self, name)!r}")
        if arch is Architecture.MLP:
            if not self.hidden:
                raise ValueError("hidden must give at least one hidden-layer width for the mlp")
            for width in self.hidden:
                check_int("hidden width", width, 1)
            return
        if not self.channels:
            raise ValueError(f"channels must give at least one width for {arch.value}")
        for width in self.channels:
            check_int("channel width", width, 1)
        if arch is Architecture.RESNET8 and len(self.channels) != 3:
            raise ValueError(f"resnet8 has exactly 3 stages (6n + 2 = 8 layers with n = 1); channels must give 3 "
                             f"widths, got {self.channels!r}")
        if arch is Architecture.UNET_ENCODER:
            check_int("layers_per_block", self.layers_per_block, 1)
            check_unet_shape(self.channels, self.attention, self.norm_num_groups, attention_may_be_empty=True,
                             level="down block")


# Preset -> common fields and per-architecture fields.
PRESETS: dict[str, dict] = {
    # App. G.2: 100 epochs, lr 3e-4, 80:20; the U-Net encoder is the down path of the ddpm "paper" U-Net.
    "paper": {
        "common": dict(epochs=100, lr=3e-4, batch_size=64, weight_decay=0.01, test_fraction=0.2),
        Architecture.MLP: dict(hidden=(1024, 512)),
        Architecture.RESNET8: dict(channels=(16, 32, 64)),
        Architecture.UNET_ENCODER: dict(channels=(96, 192, 192), layers_per_block=2, attention=(False, True, True),
                                        norm_num_groups=32),
    },
    # Two CPU cores, one task (App. G.1's 6000 images, 4800 for training), minutes per architecture:
    # one epoch took 6.6 / 34 / 49 s wall (mlp / resnet8 / unet_encoder; torch on 2 threads, nice'd,
    # beside a DDPM training on the same 2 cores), so 10 epochs take about 1 / 6 / 8 min there and
    # less on idle cores. Smaller conv nets than "paper" (ResNet-8 at half width, a 16-32-32 encoder),
    # larger batches and a larger learning rate for the short budget.
    "cpu": {
        "common": dict(epochs=10, lr=1e-3, batch_size=128, weight_decay=0.01, test_fraction=0.2),
        Architecture.MLP: dict(hidden=(512, 256)),
        Architecture.RESNET8: dict(channels=(8, 16, 32)),
        Architecture.UNET_ENCODER: dict(channels=(16, 32, 32), layers_per_block=1, attention=(),
                                        norm_num_groups=8),
    },
    # Tests: trains in about a second on a few dozen 16-32 px images.
    "smoke": {
        "common": dict(epochs=3, lr=3e-3, batch_size=16, weight_decay=0.0, test_fraction=0.2),
        Architecture.MLP: dict(hidden=(32,)),
        Architecture.RESNET8: dict(channels=(4, 8, 8)),
        Architecture.UNET_ENCODER: dict(channels=(8, 16), layers_per_block=1, attention=(), norm_num_groups=4),
    },
}


def filter_config(architecture, preset: str = "cpu", **overrides) -> FilterConfig:
    """The config of ``preset`` (``paper``, ``cpu`` or ``smoke``) for ``architecture``, with ``overrides``."""
    arch = check_choice("architecture", architecture, Architecture)
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    base = {**PRESETS[preset]["common"], **PRESETS[preset][arch]}
    return config_from_preset(FilterConfig, base, {**overrides, "architecture": arch}, attention_follows_channels=False)


# ----------------------------------------------------------------------------------------------
# Networks


class _MLP(torch.nn.Module):
    def __init__(self, size: int, hidden: tuple[int, ...]):
        super().__init__()
        layers, width = [torch.nn.Flatten()], 3 * size * size
        for h in hidden:
            layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
            width = h
        layers.append(torch.nn.Linear(width, N_CLASSES))
        self.net = torch.nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _BasicBlock(torch.nn.Module):
    """He et al. (2016): two 3x3 conv + BatchNorm, identity shortcut (1x1 projection when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(c_out)
        self.conv2 = torch.nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(c_out)
        self.shortcut = torch.nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = torch.nn.Sequential(torch.nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                                torch.nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class _ResNet8(torch.nn.Module):
    """Stem conv, three stages of one basic block (stride 1, 2, 2), global average pool, linear head."""

    def __init__(self, channels: tuple[int, int, int]):
        super().__init__()
        c0 = channels[0]
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, c0, 3, 1, 1, bias=False), torch.nn.BatchNorm2d(c0),
                                        torch.nn.ReLU())
        blocks, c_in = [], c0
        for i, c in enumerate(channels):
            blocks.append(_BasicBlock(c_in, c, 1 if i == 0 else 2))
            c_in = c
        self.stages = torch.nn.Sequential(*blocks)
        self.head = torch.nn.Linear(c_in, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)).mean(dim=(2, 3)))


class _UNetEncoder(torch.nn.Module):
    """The down path of diffusers' ``UNet2DModel`` (no time embedding), pooled into a linear head."""

    def __init__(self, config: FilterConfig):
        from diffusers.models.unets.unet_2d_blocks import get_down_block

        super().__init__()
        ch = config.channels
        attention = config.attention or (False,) * len(ch)
        self.conv_in = torch.nn.Conv2d(3, ch[0], 3, padding=1)
        blocks, c_in = [], ch[0]
        for i, (c, attn) in enumerate(zip(ch, attention)):
            # As in UNet2DModel: every block but the last halves the resolution; temb_channels=None
            # builds ResNet layers without the time projection.
            blocks.append(get_down_block(
                "AttnDownBlock2D" if attn else "DownBlock2D", num_layers=config.layers_per_block, in_channels=c_in,
                out_channels=c, temb_channels=None, add_downsample=i < len(ch) - 1, resnet_eps=1e-5,
                resnet_act_fn="silu", resnet_groups=config.norm_num_groups, attention_head_dim=8,
                downsample_padding=1))
            c_in = c
        self.down = torch.nn.ModuleList(blocks)
        self.norm = torch.nn.GroupNorm(config.norm_num_groups, c_in, eps=1e-5)
        self.head = torch.nn.Linear(c_in, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for block in self.down:
            h, _ = block(h, None)
        return self.head(torch.nn.functional.silu(self.norm(h)).mean(dim=(2, 3)))


def build_filter_network(config: FilterConfig, size: int) -> torch.nn.Module:
    """The network of ``config`` for ``size`` x ``size`` images, freshly initialised (seeded by ``config.seed``)."""
    if not isinstance(config, FilterConfig):
        raise ValueError(f"config must be a FilterConfig, got {type(config).__name__}")
    size = check_int("size", size, 8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        if config.architecture is Architecture.MLP:
            return _MLP(size, config.hidden)
        if config.architecture is Architecture.RESNET8:
            return _ResNet8(config.channels)
        return _UNetEncoder(config)


# ----------------------------------------------------------------------------------------------
# Data


def as_model_input(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> float32 NCHW in [-1, 1] (the DDPM's scaling)."""
    return to_model_space(torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)).contiguous()


def _half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def train_test_split(labels, test_fraction: float = 0.2, seed: int = 0, stratified: bool = True
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split into (train, test) index arrays, each sorted ascending, disjoint, covering all images.

    Stratified: class c gives ``round(test_fraction * n_c)`` images (half rounded up) to the test set.
    Otherwise ``round(test_fraction * N)`` images drawn from one permutation. Both sets must be non-empty.
    """
    lab = np.asarray(labels)
    if lab.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {lab.shape}")
    lab = check_class_labels(lab, len(lab))
    fraction = check_real("test_fraction", test_fraction, 0.0, 1.0)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"test_fraction must be strictly between 0 and 1, got {test_fraction!r}")
    seed = check_int("seed", seed, 0)
    rng = np.random.default_rng([seed, SPLIT_STREAM])
    if stratified:
        test = [rng.permutation(np.flatnonzero(lab == c))[:_half_up(fraction * np.sum(lab == c))]
                for c in range(N_CLASSES)]
        test_idx = np.sort(np.concatenate(test))
    else:
        test_idx = np.sort(rng.permutation(len(lab))[:_half_up(fraction * len(lab))])
    train_idx = np.setdiff1d(np.arange(len(lab)), test_idx)
    if test_idx.size == 0 or train_idx.size == 0:
        raise ValueError(f"a {fraction:g} test fraction of {len(lab)} images leaves {train_idx.size} for training "
                         f"and {test_idx.size} for testing; both need at least one")
    return train_idx.astype(np.int64), test_idx.astype(np.int64)


# ----------------------------------------------------------------------------------------------
# Training and prediction


def predicted_class(probabilities) -> np.ndarray:
    """The predicted class of each row: ``argmax``, the first of tied maxima (numpy's and torch's rule)."""
    return np.argmax(_check_probabilities(probabilities), axis=1)


@dataclass
class TrainedFilter:
    """A trained classifier with its config, split, per-epoch training loss and final test accuracy."""

    model: torch.nn.Module
    config: FilterConfig
    size: int
    train_index: np.ndarray
    test_index: np.ndarray
    train_loss: np.ndarray            # float64 [epochs]: mean cross-entropy over each epoch's batches
    test_accuracy: float              # share of test images whose predicted class is their label
    seconds: float = float("nan")     # wall time of training (NaN for a loaded filter)
    task: Task | None = field(default=None)   # set by load_filter (the file records it)

    def predict_proba(self, images, batch_size: int = PREDICT_BATCH) -> np.ndarray:
        """Class probabilities float64 [N, 3] (softmax of the logits, computed in float64)."""
        imgs = check_rgb_images(images, self.size)
        batch_size = check_int("batch_size", batch_size, 1)
        return _probabilities(self.model, imgs, batch_size)

    def keep(self, images, threshold: float = 0.0) -> np.ndarray:
        """Filtered sampling (App. G.2): the mask of ``filter_samples`` on this classifier's probabilities."""
        return filter_samples(self.predict_proba(images), threshold)


def _probabilities(model: torch.nn.Module, images: np.ndarray, batch_size: int) -> np.ndarray:
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = np.empty((len(images), N_CLASSES), np.float64)
    try:
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                x = as_model_input(images[start:start + batch_size]).to(device)
                out[start:start + len(x)] = torch.softmax(model(x).to(torch.float64), dim=1).cpu().numpy()
    finally:
        model.train(was_training)
    return out


def epoch_order(config: FilterConfig, epoch: int, n: int) -> torch.Tensor:
    """The order of the ``n`` training images in ``epoch`` (seeded by ``config.seed`` alone); epoch
    ``config.epochs`` is the pass that recomputes the BatchNorm statistics."""
    return torch.from_numpy(np.random.default_rng([config.seed, ORDER_STREAM, epoch]).permutation(n))


def _recompute_batch_norm(model: torch.nn.Module, x_train: torch.Tensor, batch_size: int) -> None:
    """Set every BatchNorm's running statistics to those of the final weights over the training split.

    The running averages (momentum 0.1) follow weights that AdamW still moves in the last batches; on
    the contrastive data they lag so far that ResNet-8's eval-mode predictions collapse to one class
    (Task B's cpu ResNet-8: test accuracy 0.333 with the running averages; 0.948 with this step).
    ``torch.optim.swa_utils.update_bn`` recomputes them as the average of the batch statistics over
    one pass over ``x_train``, ``batch_size`` images per batch. Pass it shuffled, as in training
    (``epoch_order``): the split is sorted by class, and batches of one class would leave the
    between-class variance out of the variance. A net without BatchNorm is left as it is.
    """
    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return
    from torch.optim.swa_utils import update_bn

    with torch.no_grad():
        update_bn((x_train[i:i + batch_size] for i in range(0, len(x_train), batch_size)), model)


def train_filter(images, labels, config: FilterConfig, *, progress: bool = False, device="cpu") -> TrainedFilter:
    """Train the classifier of ``config`` on ``images`` (uint8 [N, S, S, 3]) with ``labels`` in {0, 1, 2}.

    App. G.2: a seeded 80:20 split (:func:`train_test_split`, stratified unless ``config.stratified``
    is False), ``config.epochs`` epochs of AdamW on the cross-entropy, inputs scaled to [-1, 1]; then
    BatchNorm statistics recomputed for the final weights (:func:`_recompute_batch_norm`; ResNet-8
    only) and the test accuracy of the final weights. Reproducible for a given config, data and
    thread count.
    """
    if not isinstance(config, FilterConfig):
        raise ValueError(f"config must be a FilterConfig (see filter_config), got {type(config).__name__}")
    imgs = check_rgb_images(images)
    lab = check_class_labels(labels, len(imgs))
    train_idx, test_idx = train_test_split(lab, config.test_fraction, config.seed, config.stratified)
    dev = resolve_device(device)
    size = int(imgs.shape[1])
    model = build_filter_network(config, size).to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    x_train = as_model_input(imgs[train_idx]).to(dev)
    y_train = torch.from_numpy(lab[train_idx]).to(dev)
    losses = np.empty(config.epochs, np.float64)
    epochs = progress_bar(range(config.epochs), progress, f"train {config.architecture.value}")
    t0 = time.perf_counter()
    model.train()
    for epoch in epochs:
        order = epoch_order(config, epoch, len(train_idx))
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            idx = order[start:start + config.batch_size].to(dev)
            loss = torch.nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
        losses[epoch] = total / len(order)
        if hasattr(epochs, "set_postfix"):
            epochs.set_postfix(loss=f"{losses[epoch]:.4f}")
    _recompute_batch_norm(model, x_train[epoch_order(config, config.epochs, len(train_idx)).to(dev)],
                          config.batch_size)
    seconds = time.perf_counter() - t0
    model.eval()
    proba = _probabilities(model, imgs[test_idx], PREDICT_BATCH)
    accuracy = float(np.mean(predicted_class(proba) == lab[test_idx]))
    return TrainedFilter(model, config, size, train_idx, test_idx, losses, accuracy, seconds)


# ----------------------------------------------------------------------------------------------
# Filters


def _check_probabilities(probabilities) -> np.ndarray:
    p = np.asarray(probabilities)
    if p.ndim != 2 or p.shape[1] != N_CLASSES or not np.issubdtype(p.dtype, np.floating):
        raise ValueError(f"probabilities must be a float array [N, 3] (one row per sample), got {p.dtype} {p.shape}")
    p = p.astype(np.float64, copy=False)
    if not np.all(np.isfinite(p)) or np.any(p < 0) or np.any(p > 1):
        raise ValueError("probabilities must be finite and in [0, 1] (pass softmax outputs, not logits)")
    if p.size and not np.allclose(p.sum(axis=1), 1.0, rtol=0.0, atol=1e-6):
        worst = float(np.max(np.abs(p.sum(axis=1) - 1.0)))
        raise ValueError(f"each row of probabilities must sum to 1 (off by up to {worst:.3g}); pass softmax outputs")
    return p


def filter_samples(probabilities, threshold: float = 0.0) -> np.ndarray:
    """App. G.2's filter: keep the samples predicted as class 1 whose class-1 probability is >= ``threshold``.

    Sample i is kept exactly when ``argmax(p_i) == 1`` and ``p_i[1] >= threshold``. The argmax takes
    the first of tied maxima (:func:`predicted_class`, the rule of the test accuracy too), so a tie
    between classes 0 and 1 is dropped and a tie between classes 1 and 2 is kept; a probability
    equal to the threshold is kept. Any threshold <= 1/3 is not binding (the argmax of three
    probabilities is >= 1/3) and gives the paper's rule, "keeping only samples predicted as Class 1";
    a larger one keeps only confident predictions. ``threshold`` must be a finite number in [0, 1].
    """
    threshold = check_real("threshold", threshold, 0.0, 1.0)
    p = _check_probabilities(probabilities)
    return (np.argmax(p, axis=1) == ContrastiveClass.RULE) & (p[:, ContrastiveClass.RULE] >= threshold)


def oracle_filter(evaluation: Evaluation, tolerance: float = 0.05) -> np.ndarray:
    """The evaluator as the filter: keep valid samples with |y / (k x) - 1| <= ``tolerance`` (inclusive).

    x, y are the evaluator's fine-rule features (``Evaluation.x``, ``.y``) and k the task's slope
    (``empirics.tasks.TARGET_SLOPE``): ``metrics.conforming`` with rtol = ``tolerance``, the test behind
    Fig. 5a's conforming fraction. Beyond the paper: the ceiling a learned filter approaches (a perfect
    classifier of App. G.1's classes), not a row of Table 2. The coarse rule is not checked.
    Invalid samples and samples with x <= 0 are dropped.
    """
    if not isinstance(evaluation, Evaluation):
        raise ValueError(f"evaluation must be an Evaluation (empirics.evaluate.evaluate), got "
                         f"{type(evaluation).__name__}")
    tolerance = check_real("tolerance", tolerance, 0.0)
    if tolerance <= 0:
        raise ValueError(f"tolerance must be a finite number > 0, got {tolerance!r}")
    return np.asarray(evaluation.valid, bool) & conforming(evaluation.x, evaluation.y, TARGET_SLOPE[evaluation.task],
                                                           rtol=tolerance)


def random_subset_control(evaluation: Evaluation, keep, *, draws: int = RANDOM_SUBSET_DRAWS, seed: int = 0,
                          trim=(2.5, 97.5)) -> dict | None:
    """Does a filter beat chance? Error (eq. (4)) and R^2 of ``draws`` random subsets of the samples, each
    as large as the filter's kept set, against the kept set's own.

    ``keep`` is the filter's boolean mask over ``evaluation`` (invalid samples included, as a filter sees
    them). Each draw keeps ``keep.sum()`` samples uniformly without replacement (numpy
    ``default_rng([seed, draw])``) and is measured with the same trimmed fit (no bootstrap). Returns the
    kept set's Error and R^2, the draws' median and 2.5/97.5 percentiles, and the one-sided Monte Carlo
    p-values ``p_error_lower = (1 + #{draw Error <= kept Error}) / (fitted draws + 1)`` and
    ``p_r2_higher`` likewise, with ``beats_chance`` (p < 0.05) for each; ``None`` when the filter keeps
    fewer than 3 valid samples or no draw can be fitted. Draws whose fit fails (fewer than 3 valid
    samples) are counted in ``unfitted`` and left out of the p-values. Beyond the paper (Table 2 has no
    null for its Filtering row).
    """
    if not isinstance(evaluation, Evaluation):
        raise ValueError(f"evaluation must be an Evaluation (empirics.evaluate.evaluate), got "
                         f"{type(evaluation).__name__}")
    keep = np.asarray(keep)
    if keep.dtype != bool or keep.shape != (len(evaluation),):
        raise ValueError(f"keep must be a boolean mask of shape ({len(evaluation)},), got dtype {keep.dtype} "
                         f"and shape {keep.shape}")
    draws = check_int("draws", draws, 1)
    seed = check_int("seed", seed, 0)
    observed = evaluation.take(keep).summary(trim=trim, n_boot=0)
    if observed["error"] is None or observed["r2"] is None:
        return None
    n, n_keep = len(evaluation), int(keep.sum())
    errors, r2s, unfitted = [], [], 0
    for d in range(draws):
        idx = np.random.default_rng([seed, d]).choice(n, n_keep, replace=False)
        s = evaluation.take(np.sort(idx)).summary(trim=trim, n_boot=0)
        if s["error"] is None or s["r2"] is None:
            unfitted += 1
            continue
        errors.append(s["error"])
        r2s.append(s["r2"])
    if not errors:
        return None
    errors, r2s = np.asarray(errors), np.asarray(r2s)
    m = errors.size
    p_err = (1 + int(np.sum(errors <= observed["error"]))) / (m + 1)
    p_r2 = (1 + int(np.sum(r2s >= observed["r2"]))) / (m + 1)

    def band(v):
        return {"median": float(np.median(v)), "p2.5": float(np.percentile(v, 2.5)),
                "p97.5": float(np.percentile(v, 97.5))}

    return {"draws": draws, "seed": seed, "n_keep": n_keep, "unfitted": unfitted,
            "kept": {"error": observed["error"], "r2": observed["r2"]},
            "random": {"error": band(errors), "r2": band(r2s)},
            "p_error_lower": p_err, "p_r2_higher": p_r2,
            "beats_chance": {"error": p_err < 0.05, "r2": p_r2 < 0.05}}


# ----------------------------------------------------------------------------------------------
# Files


def save_filter(trained: TrainedFilter, path, task, size: int) -> Path:
    """Write ``trained`` (weights, config, split, losses, accuracy) for ``task`` and ``size`` px, atomically."""
    if not isinstance(trained, TrainedFilter):
        raise ValueError(f"trained must be a TrainedFilter, got {type(trained).__name__}")
    task = Task.parse(task)
    size = check_int("size", size, 8)
    if size != trained.size:
        raise ValueError(f"size {size} does not match the classifier's image size {trained.size}")
    if trained.task is not None and trained.task is not task:
        raise ValueError(f"this classifier was loaded for task {trained.task.value}, not {task.value}")
    state = {k: v.detach().cpu() for k, v in trained.model.state_dict().items()}
    payload = {
        "format": FILE_FORMAT, "version": FILE_VERSION, "task": task.value, "size": size,
        "config": trained.config.to_json(), "state_dict": state,
        "train_index": torch.from_numpy(np.asarray(trained.train_index, np.int64)),
        "test_index": torch.from_numpy(np.asarray(trained.test_index, np.int64)),
        "train_loss": torch.from_numpy(np.asarray(trained.train_loss, np.float64)),
        "test_accuracy": float(trained.test_accuracy), "seconds": float(trained.seconds),
    }
    out = Path(path)
    atomic_torch_save(payload, out)
    return out


def load_filter(path, task=None, size: int | None = None, device="cpu") -> TrainedFilter:
    """The classifier saved by :func:`save_filter`; ``ValueError`` if the file is missing, corrupt, or
    for another ``task`` or image ``size`` than asked (``None``: accept the file's)."""
    want_task = None if task is None else Task.parse(task)
    want_size = None if size is None else check_int("size", size, 8)
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"no filter file at {str(p)!r}")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise ValueError(f"{str(p)!r} is corrupt or not a filter file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FILE_FORMAT:
        raise ValueError(f"{str(p)!r} is not a filter file of this package")
    if payload.get("version") != FILE_VERSION:
        raise ValueError(f"{str(p)!r} has filter file version {payload.get('version')!r}; this code reads "
                         f"{FILE_VERSION}")
    try:
        file_task = Task.parse(payload["task"])
        file_size = int(payload["size"])
        config = FilterConfig.from_json(payload["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{str(p)!r} is corrupt: {exc}") from exc
    if want_task is not None and file_task is not want_task:
        raise ValueError(f"{str(p)!r} holds a classifier for task {file_task.value}, not {want_task.value}")
    if want_size is not None and file_size != want_size:
        raise ValueError(f"{str(p)!r} holds a classifier for {file_size} px images, not {want_size} px")
    model = build_filter_network(config, file_size)
    try:
        model.load_state_dict(payload["state_dict"])
        train_index = payload["train_index"].numpy().astype(np.int64)
        test_index = payload["test_index"].numpy().astype(np.int64)
        train_loss = payload["train_loss"].numpy().astype(np.float64)
        accuracy = float(payload["test_accuracy"])
        seconds = float(payload.get("seconds", float("nan")))
    except (KeyError, TypeError, AttributeError, RuntimeError) as exc:
        raise ValueError(f"{str(p)!r} is corrupt: {exc}") from exc
    model.to(resolve_device(device)).eval()
    return TrainedFilter(model, config, file_size, train_index, test_index, train_loss, accuracy, seconds,
                         task=file_task)
