"""Sampling a trained run (Sec. 3.2): loading its EMA weights, the batched samplers with one seed per
sample, resumable sample sets, and the sample folder that ``hidden-rules eval`` reads."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from empirics._checks import check_int
from empirics.atomic import atomic_folder, atomic_write_bytes
from empirics.ddpm.config import CheckpointError, DDPMConfig, SampleSpec
from empirics.ddpm.guided_step import Guide, reverse_step
from empirics.ddpm.model import Denoiser, build_denoiser, resolve_device, scheduler, to_uint8
from empirics.ddpm.progress import progress_bar
from empirics.ddpm.runfolder import RunFiles, peak_rss_mib, read_checkpoint, read_config
from empirics.tasks import Task

__all__ = ["LoadedRun", "load_run", "ema_weights", "sample_images", "SAMPLE_FILES", "check_sample_folder",
           "save_samples", "sample", "PartialSamples", "DEFAULT_SPEC"]

DEFAULT_SPEC = SampleSpec()  # the paper's sampler: ancestral DDPM over all T = 1000 steps


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
    dev = resolve_device(device)
    model = build_denoiser(config)
    ema = EMAModel(model.parameters(), decay=config.ema_decay, use_ema_warmup=True, power=3 / 4)
    if snapshot_step is None:
        if not files.checkpoint.exists():
            raise CheckpointError(f"{str(files.root)!r} has no checkpoint yet; train it first "
                                  f"(hidden-rules train {config.task} --preset {config.preset} --out {files.root})")
        ckpt = read_checkpoint(files.checkpoint, config)
        model.load_state_dict(ckpt["model"])
    else:
        path = files.snapshot(check_int("snapshot_step", snapshot_step, 1))
        if not path.exists():
            raise CheckpointError(f"no EMA snapshot at step {snapshot_step} in {str(files.root)!r}; "
                                  f"have {files.snapshot_steps()}")
        ckpt = read_checkpoint(path, config, snapshot=True)
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




def _check_spec_and_guide(spec, guide) -> None:
    if not isinstance(spec, SampleSpec):
        raise ValueError(f"spec must be a SampleSpec, got {type(spec).__name__}")
    if guide is not None and not isinstance(guide, Guide):
        raise ValueError(f"guide must have scales(n_steps) and grad_log_prob(x_t, t) (a Guide), "
                         f"got {type(guide).__name__}")


def sample_images(model, n: int, size: int, spec: SampleSpec = DEFAULT_SPEC, *, seed: int = 0,
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
    _check_spec_and_guide(spec, guide)
    dev = resolve_device(device)
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
    bar = progress_bar(range(initial, total), progress, f"sample {spec.name}", initial, total)
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
            # Multistep schedulers (DPM-Solver++) keep a step index and past model outputs: every batch
            # starts them afresh, or the second batch steps past the end of their sigma table.
            sched.set_timesteps(spec.steps, device=dev)
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



# What save_samples writes into a sample folder: these files and a folder of PNGs named after the task.
SAMPLE_FILES = ("samples.npz", "samples.csv", "sample.json")


def _foreign_entries(folder: Path) -> list[str]:
    """Entries of ``folder`` that :func:`save_samples` did not write (it writes SAMPLE_FILES and ``<task>/*.png``)."""
    foreign = []
    for p in sorted(folder.iterdir()):
        if p.name in SAMPLE_FILES and p.is_file():
            continue
        if p.is_dir() and p.name in {t.value for t in Task} and all(
                q.is_file() and q.suffix == ".png" for q in p.iterdir()):
            continue
        foreign.append(p.name + ("/" if p.is_dir() else ""))
    return foreign


def check_sample_folder(out, overwrite: bool = False) -> Path:
    """``out`` as the folder of a sample set: absent, empty, or (with ``overwrite``) a sample folder.

    A file, a path under a file, or a folder holding anything :func:`save_samples` did not write is a
    ``ValueError`` whatever ``overwrite`` says, so that replacing a sample set never deletes a user's
    files. ``"."`` and ``".."`` are taken as the folders they name.
    """
    out = Path(out)
    if out.name in ("", ".", ".."):
        out = Path(os.path.abspath(out))
    for parent in (out, *out.parents):
        if parent.exists() and not parent.is_dir():
            where = "exists and is not a folder" if parent == out else f"is under the file {str(parent)!r}"
            raise ValueError(f"{str(out)!r} {where}; give a folder for the samples")
    if not out.exists() or not any(out.iterdir()):
        return out
    foreign = _foreign_entries(out)
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise ValueError(f"{str(out)!r} is not a sample folder: it holds files sample did not write ({shown}); "
                         f"choose an empty or new folder")
    if not overwrite:
        raise ValueError(f"{str(out)!r} already holds samples; pass --overwrite to replace them")
    return out


def save_samples(images: np.ndarray, task, out_dir, *, seeds: np.ndarray, meta: dict, overwrite: bool = False) -> Path:
    """Write ``samples.npz`` (images, seeds), a PNG folder ``<task>/`` with ``samples.csv``, and ``sample.json``.

    The folder is what ``hidden-rules eval <task> <out_dir>`` reads as-is. ``out_dir`` must be absent,
    empty, or a sample folder replaced with ``overwrite`` (:func:`check_sample_folder`).
    """
    import cv2

    task = Task.parse(task)
    out = check_sample_folder(out_dir, overwrite)
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


def sample(run_dir, n: int, spec: SampleSpec = DEFAULT_SPEC, *, seed: int = 0, out=None, snapshot_step=None,
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
    _check_spec_and_guide(spec, guide)
    run = load_run(run_dir, snapshot_step=snapshot_step, device=device)
    name = spec.name if snapshot_step is None else f"{spec.name}-step{run.step}"
    if guide is not None:
        name = f"{name}-{getattr(guide, 'name', 'guided')}"
        if hasattr(guide, "to"):
            guide.to(next(run.model.parameters()).device)
    out = check_sample_folder(out if out is not None else run.files.samples / name, overwrite)
    batch_size = check_int("batch_size", batch_size, 1)
    partial = PartialSamples(out.with_name(f".{out.name}.partial.npz"), {
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


class PartialSamples:
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

