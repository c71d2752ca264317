"""Training, loading and measuring the guidance classifier of eq. (3) (Section 5, App. G.1).

:func:`train_classifier` trains f_theta(x_t, t) on images noised by the DDPM schedule of
:mod:`empirics.ddpm` (uniform t, x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps) with AdamW, lr 3e-4
(App. G.1); :func:`classifier_accuracy` measures held-out accuracy as a function of t.
"""

from __future__ import annotations

import enum
import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from empirics._checks import check_class_labels, check_int, check_rgb_images
from empirics.atomic import atomic_torch_save
from empirics.ddpm import (
    T_STEPS,
    CheckpointError,
    LossLog,
    progress_bar,
    read_torch_file,
    resolve_device,
    scheduler,
    step_generator,
    to_model_space,
)
from empirics.mitigation.classifier import (
    N_CLASSES,
    RULE_CLASS,
    ClassifierConfig,
    TimeConditionedClassifier,
    build_time_classifier,
    check_classifier,
    classifier_logits,
    module_device,
    nt_xent,
)
from empirics.tasks import Task

__all__ = ["CHECKPOINT_FORMAT", "ClassifierFiles", "ClassifierTrainSummary", "LogColumn", "train_classifier",
           "load_classifier", "classifier_log_prob", "classifier_accuracy"]

CHECKPOINT_FORMAT = "hidden-rules time-conditioned classifier v1"


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
    ckpt = read_torch_file(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or \
            not {"config", "model", "step"} <= set(ckpt):
        raise CheckpointError(f"{str(path)!r} is not a classifier checkpoint of this package")
    try:
        ckpt["config"] = ClassifierConfig.from_json(ckpt["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{str(path)!r} holds an invalid classifier config: {exc}") from exc
    return ckpt


def _resume(files: ClassifierFiles, config: ClassifierConfig, digest: str, force: bool, model,
            optimizer) -> tuple[int, float | None]:
    """Load the folder's checkpoint into ``model`` and ``optimizer``: (step, training seconds so far)."""
    if not files.checkpoint.exists():
        return 0, 0.0
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
        return 0, 0.0
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    # older checkpoints do not record the seconds
    return int(ckpt["step"]), float(ckpt["seconds"]) if ckpt.get("seconds") is not None else None


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
    dev = resolve_device(device)
    model = build_time_classifier(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    # before: training seconds of the checkpointed steps (None: not recorded)
    start, before = _resume(files, config, digest, force, model, optimizer)
    files.root.mkdir(parents=True, exist_ok=True)
    log = LossLog(files.loss_log, [c.name.lower() for c in LogColumn])
    log.truncate(start)

    model.to(dev).train()
    x_all = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    y_all = torch.from_numpy(labels)
    noise_sched = scheduler("ddpm")
    stop = config.train_steps if max_steps is None else min(config.train_steps, max_steps)
    t0 = time.perf_counter()
    window: list[tuple[float, float, float, float]] = []
    last = (math.nan,) * 4
    bar = progress_bar(range(start, stop), progress, f"classifier {config.task}", start, stop)
    for step in bar:
        gen = step_generator(config.seed, step)
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
            log.append([done, *(f"{v:.6g}" for v in last),
                        f"{(before or 0.0) + time.perf_counter() - t0:.2f}"])
            window = []
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{last[0]:.4f}", acc=f"{last[3]:.3f}")
        if done % config.checkpoint_every == 0 or done == stop:
            atomic_torch_save({"format": CHECKPOINT_FORMAT, "step": done, "config": config.to_json(),
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
    model = build_time_classifier(config)
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{str(path)!r} is corrupt: its weights do not fit its config ({exc})") from exc
    return model.to(resolve_device(device)).eval()


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


def _log_probs(classifier, images_uint8, t: int, seed: int, batch_size: int) -> np.ndarray:
    config = getattr(check_classifier(classifier), "config", None)
    images = check_rgb_images(images_uint8, config.size if isinstance(config, ClassifierConfig) else None)
    t = check_int("t", t, 0, T_STEPS - 1)
    seed = check_int("seed", seed, 0)
    batch_size = check_int("batch_size", batch_size, 1)
    dev = module_device(classifier)
    x0 = to_model_space(torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))))
    noise = torch.randn(x0.shape, generator=step_generator(seed, t))
    x_t = scheduler("ddpm").add_noise(x0, noise, torch.full((len(x0),), t, dtype=torch.long))
    out = []
    with torch.inference_mode():
        for s in range(0, len(x_t), batch_size):
            xb = x_t[s:s + batch_size].to(dev)
            logits = classifier_logits(classifier(xb, torch.full((len(xb),), t, dtype=torch.long, device=dev)))
            out.append(torch.log_softmax(logits.double(), dim=1).cpu())
    return torch.cat(out).numpy()


