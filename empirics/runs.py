"""Reading DDPM run folders back: their samples, their training set, and the evaluation of both.

Every figure and table of Section 3 (Table 1, Figures 4, 5 and 11) reads run folders through this
module, so a GPU ``paper`` run and a CPU ``cpu`` run go through the same code. A run's sample sets
are the sub-folders of ``<run>/samples/`` written by ``empirics.ddpm.sample`` (``samples.npz`` +
``sample.json``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from empirics.data.io import load_npz
from empirics.ddpm import CheckpointError, DDPMConfig, RunFiles, read_config
from empirics.ddpm.restore import restore_run
from empirics.evaluate import Evaluation, evaluate
from empirics.evaluator.controls import FRESH_SEED, ControlEvaluations, Metric, compare, evaluate_controls
from empirics.evaluator.memorization import Memorization, memorization
from empirics.evaluator.metrics import binomial_ci, conforming_fraction
from empirics.tasks import TARGET_SLOPE, TaskBatch

__all__ = ["sample_sets", "RunSamples", "load_samples", "RunEvaluation", "evaluate_run", "rule_table_row",
           "run_controls", "control_comparison", "restore_run"]


def sample_sets(run_dir) -> list[str]:
    """Names of the complete sample sets of a run (folders of ``<run>/samples`` with samples.npz)."""
    files = RunFiles(Path(run_dir))
    if not files.samples.is_dir():
        return []
    return sorted(p.name for p in files.samples.iterdir() if (p / "samples.npz").is_file())


@dataclass(frozen=True)
class RunSamples:
    """One sample set of a run: uint8 images [N, S, S, 3], seeds, and its ``sample.json``."""

    config: DDPMConfig
    name: str
    folder: Path
    images: np.ndarray
    seeds: np.ndarray
    meta: dict


def load_samples(run_dir, name: str | None = None) -> RunSamples:
    """The sample set ``name`` of a run; with ``None``, the run's only set (an error lists them otherwise)."""
    root = Path(run_dir)
    config = read_config(root)
    names = sample_sets(root)
    if name is None:
        if len(names) != 1:
            listing = ", ".join(names) if names else "none"
            raise ValueError(f"{str(root)!r} has {len(names)} sample sets ({listing}); name one with --samples")
        name = names[0]
    if name not in names:
        raise ValueError(f"{str(root)!r} has no sample set {name!r}; it has: {', '.join(names) or 'none'} "
                         f"(make one with: hidden-rules sample {root})")
    folder = RunFiles(root).samples / name
    with np.load(folder / "samples.npz", allow_pickle=False) as z:
        images, seeds = z["images"], z["seeds"]
    meta = json.loads((folder / "sample.json").read_text()) if (folder / "sample.json").is_file() else {}
    return RunSamples(config, name, folder, images, seeds, meta)


@dataclass(frozen=True)
class RunEvaluation:
    """A run's samples and training set, both measured by the rule evaluator."""

    run_dir: Path
    samples: RunSamples
    train: TaskBatch
    sample_eval: Evaluation
    train_eval: Evaluation

    @property
    def task(self):
        return self.sample_eval.task

    def memorization(self, rtol: float = 0.01) -> Memorization:
        return memorization(self.sample_eval, self.samples.images, self.train_eval, self.train.images, rtol=rtol)


def evaluate_run(run_dir, samples: str | None = None, workers: int = 2) -> RunEvaluation:
    """Evaluate a run's sample set and its training set (Fig. 2 pipeline)."""
    root = Path(run_dir)
    s = load_samples(root, samples)
    files = RunFiles(root)
    if not files.train_set.is_file():
        raise CheckpointError(f"{str(root)!r} has no training set (train.npz)")
    train = load_npz(files.train_set)
    return RunEvaluation(root, s, train, evaluate(s.images, s.config.task, workers=workers),
                         evaluate(train.images, train.task, workers=workers))


def run_controls(rev: RunEvaluation, seed: int = FRESH_SEED, workers: int = 2) -> ControlEvaluations:
    """The control sets of a run's samples (fresh, degraded, matched null; ``empirics.controls``), evaluated."""
    if not isinstance(rev, RunEvaluation):
        raise ValueError(f"rev must be a RunEvaluation (evaluate_run), got {type(rev).__name__}")
    return evaluate_controls(rev.task, rev.samples.images, seed=seed, workers=workers)


def control_comparison(rev: RunEvaluation, controls: ControlEvaluations, metrics, *, trim=(2.5, 97.5),
                       n_boot: int = 1000, seed: int = 0) -> dict:
    """A run's sample metrics beside its controls, with the verdicts (``empirics.controls.compare``)."""
    if not isinstance(rev, RunEvaluation):
        raise ValueError(f"rev must be a RunEvaluation (evaluate_run), got {type(rev).__name__}")
    if len(controls) != len(rev.sample_eval):
        raise ValueError(f"controls hold {len(controls)} images per set, the run's samples {len(rev.sample_eval)}; "
                         "make them with run_controls(rev)")
    return compare(rev.sample_eval, controls, metrics, trim=trim, n_boot=n_boot, seed=seed)


def rule_table_row(rev: RunEvaluation, n_boot: int = 1000, seed: int = 0,
                   controls: ControlEvaluations | None = None) -> dict:
    """Table 1 and Section 3.3 numbers of one run: Invalid %, coarse violations (both with exact binomial
    95 % CIs), the trimmed fit, R^2, Error (eq. (4)), conforming fractions of samples and training data.

    With ``controls`` (``run_controls``), the row gains ``"controls"``: every metric of
    ``empirics.controls.Metric`` on the samples beside the three control sets, with the verdicts
    (``differs_from_controls``, ``evidence``); bootstrap CIs need ``n_boot`` >= 1."""
    ev = rev.sample_eval
    n, n_valid = len(ev), int(ev.valid.sum())
    violations = int(np.sum(~ev.coarse_ok[ev.valid]))
    summary = ev.summary(n_boot=n_boot, seed=seed)
    k = TARGET_SLOPE[ev.task]
    tv = rev.train_eval.valid
    train_conf = conforming_fraction(rev.train_eval.x[tv], rev.train_eval.y[tv], k) if tv.any() else None
    lo, hi = binomial_ci(n - n_valid, n)
    vlo, vhi = binomial_ci(violations, n_valid)
    row = {
        "task": ev.task.value, "samples": rev.samples.name, "train_step": rev.samples.meta.get("train_step"),
        "n_samples": n, "n_valid": n_valid, "invalid": n - n_valid, "invalid_percent": 100 * (n - n_valid) / n,
        "invalid_percent_ci95": [100 * lo, 100 * hi],
        "coarse_violations": violations,
        "coarse_violation_percent_of_valid": 100 * violations / n_valid if n_valid else None,
        "coarse_violation_percent_ci95": [100 * vlo, 100 * vhi],
        "invalid_reasons": summary["invalid_reasons"],
        "fit": {key: summary[key] for key in ("n_fit", "beta1", "beta0", "slope_rel_error", "r2", "error",
                                              "error_bias", "error_variance")},
        "ci95": summary["ci95"], "conforming_fraction": summary["conforming_fraction"],
        "train_conforming_fraction": train_conf, "train_n": len(rev.train_eval),
        "sampling_seconds": rev.samples.meta.get("seconds"), "sampler": rev.samples.meta.get("sampler"),
        "sampling_steps": rev.samples.meta.get("steps"), "eta": rev.samples.meta.get("eta"),
    }
    if controls is not None:
        row["controls"] = control_comparison(rev, controls, tuple(Metric), n_boot=max(n_boot, 1), seed=seed)
    return row
