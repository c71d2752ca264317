"""The DDPM training loop (Ho et al. 2020, Algorithm 1; App. D.1), one loop with its phases marked.

Resuming is bit-identical: the batch, timesteps and noise of step k are drawn from generators seeded
by (seed, k, process rank), and the data order of epoch e from (seed, e), so a run interrupted and
resumed draws exactly what an uninterrupted one draws. The RNG states of torch, numpy and python
are saved too, for code that uses the global generators.

Wall time is kept over sessions: every checkpoint records the session in ``train_stats.json``
(:class:`~empirics.ddpm.runfolder.TrainStats`), and the ``seconds`` column of ``loss.csv`` counts from
step 0 over every session (the previous sessions' total plus this session's time).
"""

from __future__ import annotations

import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from empirics._checks import check_int
from empirics.atomic import atomic_torch_save
from empirics.ddpm.config import T_STEPS, Backbone, CheckpointError, DDPMConfig
from empirics.ddpm.loss import make_loss
from empirics.ddpm.model import build_denoiser, scheduler, to_model_space
from empirics.ddpm.progress import progress_bar
from empirics.ddpm.runfolder import (
    LossLog,
    RunFiles,
    TrainStats,
    create_run,
    load_train_images,
    read_checkpoint,
    read_config,
)

__all__ = ["TrainSummary", "train", "step_generator", "batch_indices", "LOSS_LOG_HEADER"]

LOSS_LOG_HEADER = ["step", "loss", "lr", "seconds"]


def step_generator(seed: int, *key: int) -> torch.Generator:
    """A torch generator seeded by (seed, *key): the randomness of one step, independent of history."""
    state = np.random.SeedSequence([seed, *key]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def batch_indices(config: DDPMConfig, step: int, rank: int, world: int) -> np.ndarray:
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


class _Trainer:
    """The state of one training session: model, EMA, optimiser, schedule, and where the run stands."""

    def __init__(self, files: RunFiles, config: DDPMConfig, acc):
        from diffusers.training_utils import EMAModel

        self.files, self.config, self.acc = files, config, acc
        self.images = load_train_images(files, config)
        self.model = build_denoiser(config)
        self.ema = EMAModel(self.model.parameters(), decay=config.ema_decay, use_ema_warmup=True, power=3 / 4)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.lr_sched = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_lambda(config))
        self.start = 0

    def resume(self, ckpt: dict) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.ema.load_state_dict(ckpt["ema"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.lr_sched.load_state_dict(ckpt["lr_schedule"])
        _set_rng_states(ckpt["rng"])
        self.start = int(ckpt["step"])

    def save_snapshot(self, done: int) -> None:
        atomic_torch_save({"step": done, "config": self.config.to_json(), "ema": self.ema.state_dict()},
                          self.files.snapshot(done))

    def save_checkpoint(self, done: int) -> None:
        acc = self.acc
        atomic_torch_save({
            "step": done, "config": self.config.to_json(), "model": acc.unwrap_model(self.model).state_dict(),
            "ema": self.ema.state_dict(), "optimizer": self.optimizer.state_dict(),
            "lr_schedule": self.lr_sched.state_dict(), "rng": _rng_states(),
            "finished": done == self.config.train_steps}, self.files.checkpoint)


def train(run_dir, config: DDPMConfig | None = None, *, max_steps: int | None = None, force: bool = False,
          progress: bool = True, accelerator=None, refuse_finished: bool = False) -> TrainSummary:
    """Train (or resume) the DDPM of a run folder; eq. (Ho et al. 2020): E_t,x0,eps ||eps - net(x_t, t)||^2.

    ``config`` creates the run when ``run_dir`` is empty or absent; for an existing run it must equal
    the stored config (``CheckpointError`` otherwise). ``max_steps`` stops (with a checkpoint) at that
    global step, for interrupted runs and tests. A finished run is left as it is and the call returns a
    summary with no new steps (``start_step == end_step``, ``finished``); ``force=True`` trains it again
    from step 0 in place, and ``refuse_finished=True`` makes it a ``CheckpointError`` instead (for
    callers that want to tell the user). Works unchanged under ``accelerate launch``.
    """
    from accelerate import Accelerator

    if max_steps is not None:
        check_int("max_steps", max_steps, 1)
    acc = accelerator or Accelerator(cpu=not torch.cuda.is_available())
    files = RunFiles(Path(run_dir))
    # Phase 1: the run folder (created, checked against the config, a finished run reset by force).
    finished_at = _prepare_run(files, config, force, refuse_finished) if acc.is_main_process else None
    acc.wait_for_everyone()
    config = read_config(files.root)
    if finished_at is not None:
        return TrainSummary(files.root, finished_at, finished_at, True, 0.0, _last_logged_loss(files))
    ckpt = read_checkpoint(files.checkpoint, config) if files.checkpoint.exists() else None
    if ckpt is not None and ckpt.get("finished") and not force:  # other processes of a finished run
        return TrainSummary(files.root, int(ckpt["step"]), int(ckpt["step"]), True, 0.0, math.nan)
    # Phase 2: model, EMA, optimiser and schedule, restored from the checkpoint when there is one.
    tr = _Trainer(files, config, acc)
    if ckpt is not None:
        tr.resume(ckpt)
    start = tr.start
    log = LossLog(files.loss_log, LOSS_LOG_HEADER)
    stats = TrainStats(files.train_stats)
    if acc.is_main_process:
        log.truncate(start)
    seconds_before = stats.seconds_before(start) if acc.is_main_process else 0.0
    model, optimizer = acc.prepare(tr.model, tr.optimizer)
    tr.model = model
    loss_fn = make_loss(config)
    noise_sched = scheduler("ddpm")
    stop = config.train_steps if max_steps is None else min(config.train_steps, max_steps)
    fmt = torch.channels_last if config.channels_last and config.backbone == Backbone.UNET.value \
        else torch.contiguous_format
    t0 = time.perf_counter()
    window: list[float] = []
    last = float("nan")
    bar = progress_bar(range(start, stop), progress and acc.is_main_process, f"train {config.task}", start, stop)
    model.train()
    for step in bar:
        # Phase 3: this step's randomness, from (seed, step, rank) alone.
        gen = step_generator(config.seed, step, acc.process_index)
        idx = torch.from_numpy(batch_indices(config, step, acc.process_index, acc.num_processes))
        x0 = to_model_space(tr.images[idx]).to(acc.device).contiguous(memory_format=fmt)
        t = torch.randint(0, T_STEPS, (len(idx),), generator=gen).to(acc.device)
        noise = torch.randn(x0.shape, generator=gen).to(acc.device).contiguous(memory_format=fmt)
        # Phase 4: loss, gradient step, learning-rate schedule, EMA.
        loss = loss_fn(model, x0, noise, t, noise_sched)
        optimizer.zero_grad(set_to_none=True)
        acc.backward(loss)
        if config.grad_clip > 0:
            acc.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        tr.lr_sched.step()
        tr.ema.step(acc.unwrap_model(model).parameters())
        window.append(acc.gather(loss.detach().reshape(1)).mean().item())
        done = step + 1
        if not math.isfinite(window[-1]):
            raise FloatingPointError(f"training loss is {window[-1]} at step {done}; lower lr (now {config.lr})")
        # Phase 5: bookkeeping (loss log, EMA snapshots, checkpoint and session record), main process only.
        if acc.is_main_process:
            elapsed = time.perf_counter() - t0
            if done % config.log_every == 0 or done == stop:
                last = float(np.mean(window))
                log.append([done, f"{last:.6g}", f"{tr.lr_sched.get_last_lr()[0]:.6g}",
                            f"{seconds_before + elapsed:.2f}"])
                window = []
                if hasattr(bar, "set_postfix"):
                    bar.set_postfix(loss=f"{last:.4f}")
            if done % config.snapshot_every == 0 or done == config.train_steps:
                tr.save_snapshot(done)
            if done % config.checkpoint_every == 0 or done == stop:
                tr.save_checkpoint(done)
                stats.record(start, done, time.perf_counter() - t0, acc.num_processes)
        acc.wait_for_everyone() if acc.num_processes > 1 and done % config.checkpoint_every == 0 else None
    seconds = time.perf_counter() - t0
    return TrainSummary(files.root, start, max(start, stop), max(start, stop) == config.train_steps, seconds, last)


def _last_logged_loss(files: RunFiles) -> float:
    rows = LossLog(files.loss_log, LOSS_LOG_HEADER).rows()
    return float(rows[-1][1]) if rows else math.nan


def _prepare_run(files: RunFiles, config: DDPMConfig | None, force: bool, refuse_finished: bool) -> int | None:
    """Create or check the run folder; the step of a finished run that is left as it is, else None."""
    if config is not None and not isinstance(config, DDPMConfig):
        raise ValueError(f"config must be a DDPMConfig or None, got {type(config).__name__}")
    if not files.config.exists():
        if config is None:
            if files.root.exists():
                raise CheckpointError(f"{str(files.root)!r} is not a run folder (no config.json); "
                                      "give a task and preset to start one")
            raise CheckpointError(f"no run folder at {str(files.root)!r}")
        create_run(files.root, config)
        return None
    stored = read_config(files.root)
    if config is not None and config != stored:
        diff = sorted(k for k, v in config.to_json().items() if stored.to_json().get(k) != v)
        raise CheckpointError(f"{str(files.root)!r} holds a run with another config (differs in {diff}); "
                              "choose another --out")
    if not files.checkpoint.exists():
        return None
    ckpt = read_checkpoint(files.checkpoint, stored)
    if not ckpt.get("finished"):
        return None
    if not force:
        if refuse_finished:
            raise CheckpointError(f"{str(files.root)!r} holds a finished run ({ckpt['step']} steps); "
                                  "pass force=True to train it again from step 0")
        return int(ckpt["step"])
    files.checkpoint.unlink()
    if files.loss_log.exists():
        files.loss_log.unlink()
    shutil.rmtree(files.snapshots, ignore_errors=True)
    return None
