"""Reproducibility checks: is a run, or a sample set, the same as another one, bit for bit?"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from empirics.data.io import load_npz
from empirics.ddpm.config import CheckpointError
from empirics.ddpm.runfolder import RunFiles, read_checkpoint, read_config

__all__ = ["state_equal", "compare_runs", "compare_sample_sets"]


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
    ckpts = [read_checkpoint(f.checkpoint, c) for f, c in zip(files, configs)]
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
