"""Rebuilding a run folder from its committed record (config, one sample set), without retraining."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from empirics.atomic import atomic_folder
from empirics.ddpm.config import DDPMConfig
from empirics.ddpm.runfolder import create_run
from empirics.ddpm.sampling import save_samples

__all__ = ["restore_run"]


def restore_run(out, config_json, samples_npz, sample_json=None, *, name: str | None = None) -> Path:
    """Rebuild a run folder from its committed record (no retraining): config, training set, one sample set.

    ``config_json`` is a run's ``config.json`` (``docs/section3/config_A.json``); the training set is
    drawn again by ``empirics.tasks.generate`` from its task, size, ``n_train`` and ``data_seed``,
    exactly as ``train`` drew it (bit for bit: the generator is seeded). ``samples_npz`` holds
    ``images`` and ``seeds`` (as ``sample`` writes them) and ``sample_json`` its metadata; the set is
    named ``name`` (default: the npz's stem without its ``samples_<task>_`` prefix). The folder has no
    checkpoint, so it can be read by ``table1``, ``figure4``, ``figure5`` and ``marginals`` but not sampled.
    Every input is checked before anything is written, and the folder is built under a temporary name:
    a refused record, an error or Ctrl-C leaves no half-made run behind.
    """
    config_json, samples_npz = Path(config_json), Path(samples_npz)
    for p in (config_json, samples_npz) + ((Path(sample_json),) if sample_json is not None else ()):
        if not p.is_file():
            raise ValueError(f"{str(p)!r} is not a file")
    try:
        config = DDPMConfig.from_json(json.loads(config_json.read_text()))
    except (json.JSONDecodeError, TypeError) as exc:
        raise ValueError(f"{str(config_json)!r} is not a run config: {exc}") from exc
    if not zipfile.is_zipfile(samples_npz):
        raise ValueError(f"{str(samples_npz)!r} is not an .npz archive (not a zip file)")
    with np.load(samples_npz, allow_pickle=False) as z:
        if "images" not in z.files or "seeds" not in z.files:
            raise ValueError(f"{str(samples_npz)!r} must hold 'images' and 'seeds', it has {sorted(z.files)}")
        images, seeds = z["images"], z["seeds"]
        task = str(z["task"]) if "task" in z.files else config.task
    if task != config.task:
        raise ValueError(f"{str(samples_npz)!r} holds task {task} samples, the config is task {config.task}")
    S = config.size
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (S, S, 3):
        raise ValueError(f"{str(samples_npz)!r}: 'images' must be uint8 [N, {S}, {S}, 3] (the config's size), "
                         f"got {images.dtype} {images.shape}")
    if seeds.shape != (len(images),) or seeds.dtype.kind not in "iu":
        raise ValueError(f"{str(samples_npz)!r}: 'seeds' must hold one integer seed per image ({len(images)},), "
                         f"got {seeds.dtype} {seeds.shape}")
    meta = {}
    if sample_json is not None:
        try:
            meta = json.loads(Path(sample_json).read_text())
        except json.JSONDecodeError:
            meta = None
        if not isinstance(meta, dict):
            raise ValueError(f"{str(sample_json)!r} is not a JSON object (a sample set's sample.json)")
    if name is None:
        stem = samples_npz.stem
        prefix = f"samples_{config.task}_"
        name = stem[len(prefix):] if stem.startswith(prefix) else stem
    if not isinstance(name, str) or not name or name.startswith(".") or "/" in name or "\\" in name:
        raise ValueError(f"name must be a folder name (not empty, no '/', not starting with '.'), got {name!r}")
    with atomic_folder(out) as tmp:
        files = create_run(tmp, config)
        save_samples(images, config.task, files.samples / name, seeds=seeds, meta=meta)
    return Path(out)
