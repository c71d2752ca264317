"""A DDPM run is a folder (:class:`RunFiles`): config, training set, checkpoint, EMA snapshots, loss log,
training statistics and sample sets. Here: creating one, and reading its parts back with clear errors."""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from empirics.atomic import atomic_folder, atomic_write_text
from empirics.data.io import load_npz, save_npz
from empirics.ddpm.config import CheckpointError, DDPMConfig
from empirics.tasks import generate

__all__ = ["RunFiles", "read_config", "create_run", "load_train_images", "read_torch_file", "stored_config",
           "read_checkpoint", "LossLog", "TrainStats", "peak_rss_mib"]


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
    def train_stats(self) -> Path:
        return self.root / "train_stats.json"

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


def load_train_images(files: RunFiles, config: DDPMConfig) -> torch.Tensor:
    """The run's training set as uint8 NCHW; ``CheckpointError`` when it does not match the config."""
    batch = load_npz(files.train_set)
    if len(batch) != config.n_train or batch.size != config.size or batch.task.value != config.task:
        raise CheckpointError(f"{str(files.train_set)!r} does not match the run config "
                              f"({len(batch)} images of {batch.size} px, task {batch.task.value})")
    return torch.from_numpy(np.ascontiguousarray(batch.images.transpose(0, 3, 1, 2)))  # uint8 NCHW


def read_torch_file(path: Path, hint: str = "") -> object:
    """``torch.load`` of a checkpoint written by this package; a corrupt file is a ``CheckpointError``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise CheckpointError(f"{str(path)!r} is corrupt or unreadable ({type(exc).__name__}: {exc}){hint}") from exc


def stored_config(ckpt: dict) -> dict | None:
    """The config a checkpoint was written with, as ``to_json``; a field added to ``DDPMConfig`` after
    the checkpoint was written takes its default (runs written before it stay readable)."""
    try:
        return DDPMConfig.from_json(ckpt.get("config")).to_json()
    except (ValueError, TypeError):
        return ckpt.get("config")


def read_checkpoint(path: Path, config: DDPMConfig, *, snapshot: bool = False) -> dict:
    """The training checkpoint (or, with ``snapshot``, the EMA snapshot) at ``path``, written by ``config``."""
    hint = "" if snapshot else "; delete it to restart the run from its last good state, or start a new run"
    ckpt = read_torch_file(path, hint)
    keys = ("config", "step", "ema") if snapshot else ("config", "step")
    if not isinstance(ckpt, dict) or not all(k in ckpt for k in keys):
        raise CheckpointError(f"{str(path)!r} is not a training checkpoint of this package")
    stored = stored_config(ckpt)
    if stored != config.to_json():
        diff = sorted(k for k in set(stored or {}) | set(config.to_json())
                      if (stored or {}).get(k) != config.to_json().get(k))
        raise CheckpointError(f"{str(path)!r} was written by another config (differs in {diff})")
    return ckpt


class LossLog:
    """A CSV loss log with a header row and the step in its first column (the DDPM's and the classifier's).

    Rows are appended as training logs them; :meth:`truncate` drops the rows after a checkpoint's step
    (written after the last checkpoint of an interrupted run), atomically.
    """

    def __init__(self, path: Path, header: list[str]):
        self.path, self.header = Path(path), list(header)

    def append(self, row: list) -> None:
        new = not self.path.exists()
        with open(self.path, "a", newline="") as fh:
            w = csv.writer(fh)
            if new:
                w.writerow(self.header)
            w.writerow(row)

    def rows(self) -> list[list[str]]:
        """The rows below the header, as written."""
        if not self.path.is_file():
            return []
        return [r for r in csv.reader(self.path.read_text().splitlines())][1:]

    def truncate(self, step: int) -> None:
        if not self.path.exists():
            return
        with open(self.path, newline="") as fh:
            rows = list(csv.reader(fh))
        keep = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= step]
        buf = io.StringIO()
        csv.writer(buf).writerows(keep)
        atomic_write_text(self.path, buf.getvalue())


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB (Linux/macOS ``getrusage``)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


class TrainStats:
    """``train_stats.json``: one entry per training session (steps, wall time, peak memory, threads).

    A session is recorded at every checkpoint it writes (atomically), so a session that is interrupted
    still counts up to its last checkpoint; ``train_seconds_total`` sums the sessions. Files written
    before sessions were recorded at checkpoints (one entry per finished call) read the same way.
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    def sessions(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return list(json.loads(self.path.read_text()).get("sessions", []))

    def seconds_before(self, step: int) -> float:
        """Training seconds of the recorded sessions that end at or before ``step`` (a resume's start)."""
        return sum(float(s["seconds"]) for s in self.sessions() if s["end_step"] <= step)

    def record(self, start: int, stop: int, seconds: float, processes: int) -> None:
        """Record (or update) the session that started at ``start`` and has reached ``stop``."""
        stats = json.loads(self.path.read_text()) if self.path.exists() else {"sessions": []}
        stats["sessions"] = [s for s in stats["sessions"] if s["end_step"] <= start]
        stats["sessions"].append({"start_step": start, "end_step": stop, "seconds": round(seconds, 2),
                                  "seconds_per_step": round(seconds / (stop - start), 4),
                                  "peak_rss_mib": round(peak_rss_mib(), 1), "processes": processes,
                                  "torch_threads": torch.get_num_threads(),
                                  "date": time.strftime("%Y-%m-%d %H:%M")})
        stats["train_seconds_total"] = round(sum(s["seconds"] for s in stats["sessions"]), 2)
        atomic_write_text(self.path, json.dumps(stats, indent=2) + "\n")
