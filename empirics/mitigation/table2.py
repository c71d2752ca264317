"""Section 5 on DDPM run folders: the guidance classifier, the filters, and Table 2's numbers.

The pieces live elsewhere (``empirics.data.contrastive``: App. G.1's three-class data;
``empirics.mitigation.classifier``, ``.classifier_train`` and ``.guide``: the time-conditioned classifier and
classifier guidance; ``empirics.mitigation.filters``: pixel-space classifiers and the filters). This module
binds them to a run folder (``empirics.ddpm.RunFiles``), so that GPU and CPU runs go through the same code:

    <run>/classifier/            checkpoint.pt, loss.csv (``train_run_classifier``), accuracy.json
    <run>/filters/<arch>.pt      a filter classifier (``train_run_filter``) and <arch>.json, its record
    <run>/samples/<set>-guided-* guided samples (``hidden-rules sample <run> --classifier <run>/classifier``)

Both classifiers are trained on ``contrastive_set(task, n_per_class, size, seed)`` for the run's task
and image size. The guidance classifier's accuracy is measured against t on a held-out contrastive
set (its own seed, ``HELDOUT_SEED``) and on the first ``HELDOUT_PER_CLASS`` training images of each
class (App. G.1 reports accuracy on training data; t is not stated there).

``table2_row`` measures one run: Error (eq. (4)) and R^2 with bootstrap 95 % CIs of the unguided
samples (DDPM), the guided ones (Guidance), the unguided ones kept by a filter classifier (Filtering)
and kept by the evaluator itself (Oracle filter: the measured ratio within a tolerance of the rule; the
ceiling a learned filter approaches, not a row of the paper), with the fraction each filter keeps.
Every filter and the oracle stand beside a null that could have come out otherwise: as many samples
kept at random (``random_subset``, :func:`empirics.mitigation.filters.random_subset_control`); the
oracle, which keeps by the rule itself, is the positive control that this null can be beaten.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from empirics._checks import check_int, check_real
from empirics.atomic import write_json
from empirics.data.contrastive import N_PER_CLASS, ContrastiveClass, contrastive_set
from empirics.ddpm import CheckpointError, read_config
from empirics.evaluate import Evaluation, evaluate
from empirics.mitigation.classifier import N_CLASSES, PAPER_TRAIN_ACCURACY, make_classifier_config
from empirics.mitigation.classifier_train import (
    classifier_accuracy,
    classifier_log_prob,
    load_classifier,
    train_classifier,
)
from empirics.mitigation.filters import (
    Architecture,
    filter_config,
    filter_samples,
    load_filter,
    oracle_filter,
    predicted_class,
    random_subset_control,
    save_filter,
    train_filter,
)
from empirics.runs import load_samples, sample_sets
from empirics.tasks import Task

__all__ = ["CLASSIFIER_DIR", "FILTERS_DIR", "HELDOUT_SEED", "HELDOUT_PER_CLASS", "ACCURACY_T", "classifier_dir",
           "filter_path", "best_filter", "train_run_classifier", "train_run_filter", "guided_sets", "table2_row"]

CLASSIFIER_DIR = "classifier"
FILTERS_DIR = "filters"
HELDOUT_SEED = 1 << 20          # contrastive seed of the held-out images (the training data use seed 0)
HELDOUT_PER_CLASS = 300
ACCURACY_T = (0, 50, 100, 250, 500, 750, 999)


def _run(run_dir) -> tuple[Path, object]:
    root = Path(run_dir)
    if not root.is_dir():
        raise CheckpointError(f"no run folder at {str(root)!r}")
    return root, read_config(root)


def classifier_dir(run_dir) -> Path:
    return Path(run_dir) / CLASSIFIER_DIR


def filter_path(run_dir, architecture) -> Path:
    arch = Architecture(getattr(architecture, "value", architecture))
    return Path(run_dir) / FILTERS_DIR / f"{arch.value}.pt"


def best_filter(run_dir) -> str | None:
    """The run's filter architecture with the highest test accuracy (App. G.2: "based on test accuracy",
    the paper's choice of MLP for Tasks A and B and U-Net for C and D), or None if it has no filter.

    Ties go to the simpler net (the order of ``filters.Architecture``). The choice is made on the
    filters' test split, as the paper's was; it is not an unbiased estimate of the chosen filter's accuracy.
    """
    folder = Path(run_dir) / FILTERS_DIR
    scored = []
    for rank, arch in enumerate(Architecture):
        record = folder / f"{arch.value}.json"
        if record.is_file() and (folder / f"{arch.value}.pt").is_file():
            acc = json.loads(record.read_text()).get("test_accuracy")
            if acc is not None:
                scored.append((-float(acc), rank, arch.value))
    return min(scored)[2] if scored else None


def _accuracy_by_t(clf, images, labels, t_values) -> dict[str, float]:
    return {str(t): a for t, a in classifier_accuracy(clf, images, labels, t_values).items()}


def train_run_classifier(run_dir, preset: str = "cpu", *, n_per_class: int = N_PER_CLASS, seed: int = 0,
                         max_steps: int | None = None, force: bool = False, progress: bool = True,
                         heldout_per_class: int = HELDOUT_PER_CLASS, t_values=ACCURACY_T,
                         **overrides) -> dict | None:
    """Train the guidance classifier of a run (eq. (3) on App. G.1's data) in ``<run>/classifier``.

    Resumes from its checkpoint; ``max_steps`` stops early (returns ``None``). When training is done,
    writes and returns ``accuracy.json``: accuracy against t on held-out and on training images.
    """
    root, config = _run(run_dir)
    n_per_class = check_int("n_per_class", n_per_class, 1)
    heldout_per_class = check_int("heldout_per_class", heldout_per_class, 1)
    ccfg = make_classifier_config(config.task, preset, size=config.size, **overrides)
    data = contrastive_set(config.task, n_per_class, config.size, seed)
    out = classifier_dir(root)
    summary = train_classifier(data.images, data.labels, ccfg, out, max_steps=max_steps, force=force,
                                        progress=progress)
    if not summary.finished:
        return None
    clf = load_classifier(out, config.task, config.size)
    held = contrastive_set(config.task, heldout_per_class, config.size, HELDOUT_SEED)
    m = min(heldout_per_class, n_per_class)
    first = np.concatenate([np.flatnonzero(data.labels == c)[:m] for c in ContrastiveClass])
    record = {
        "task": config.task, "size": config.size, "preset": preset, "config": ccfg.to_json(),
        "train_steps": summary.end_step, "train_seconds_last_session": round(summary.seconds, 2),
        "train_seconds": None if summary.total_seconds is None else round(summary.total_seconds, 2),
        "contrastive": data.meta, "heldout": held.meta,
        "accuracy_heldout": _accuracy_by_t(clf, held.images, held.labels, t_values),
        "accuracy_train": _accuracy_by_t(clf, data.images[first], data.labels[first], t_values),
        "n_heldout": len(held), "n_train_measured": len(first),
        "paper_train_accuracy": PAPER_TRAIN_ACCURACY[Task.parse(config.task)],
    }
    write_json(out / "accuracy.json", record)
    return record


def train_run_filter(run_dir, architecture, preset: str = "cpu", *, n_per_class: int = N_PER_CLASS,
                     seed: int = 0, overwrite: bool = False, progress: bool = True, **overrides) -> dict:
    """Train a filter classifier of a run (App. G.2) on App. G.1's data; ``<run>/filters/<arch>.pt`` + ``.json``."""
    root, config = _run(run_dir)
    fcfg = filter_config(architecture, preset, **overrides)
    path = filter_path(root, fcfg.architecture)
    if path.exists() and not overwrite:
        raise ValueError(f"{str(path)!r} exists; pass --overwrite to train it again")
    data = contrastive_set(config.task, check_int("n_per_class", n_per_class, 1), config.size, seed)
    trained = train_filter(data.images, data.labels, fcfg, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_filter(trained, path, config.task, config.size)
    record = {"task": config.task, "size": config.size, "architecture": fcfg.architecture.value, "preset": preset,
              "config": fcfg.to_json(), "test_accuracy": trained.test_accuracy,
              "n_train": len(trained.train_index), "n_test": len(trained.test_index),
              "train_loss": [float(v) for v in trained.train_loss], "seconds": round(trained.seconds, 2),
              "contrastive": data.meta}
    write_json(path.with_suffix(".json"), record)
    return record


def guided_sets(run_dir, samples: str) -> list[str]:
    """The guided sample sets of a run drawn with the sampler of ``samples`` (``<samples>-guided-*``)."""
    return [s for s in sample_sets(run_dir) if s.startswith(f"{samples}-guided-")]


def _metrics(ev: Evaluation, n_boot: int, seed: int, n_all: int) -> dict:
    """Error and R^2 with their bootstrap CIs, and the share of all samples this set holds."""
    s = ev.summary(n_boot=n_boot, seed=seed)
    ci = s.get("ci95") or {}
    return {"n": len(ev), "kept_fraction": len(ev) / n_all if n_all else None, "n_valid": s["n_valid"],
            "n_fit": s["n_fit"], "r2": s["r2"], "error": s["error"], "error_bias": s["error_bias"],
            "error_variance": s["error_variance"], "beta1": s["beta1"], "beta0": s["beta0"],
            "r2_ci95": ci.get("r2"), "error_ci95": ci.get("error"), "conforming_fraction": s["conforming_fraction"],
            "coarse_violations": s["coarse_violations"]}


def _classifier_belief(root: Path, config, guide: dict | None, sets: dict) -> dict | None:
    """Mean p(y = 1 | x, t = 0) of each sample set under the classifier that guided the guided set (the
    run's when the record names none): did guidance move what the classifier believes, whatever the
    evaluator measures?"""
    named = Path(guide["classifier"]) if isinstance(guide, dict) and guide.get("classifier") else None
    folder = named if named is not None and named.exists() else classifier_dir(root)
    if not (folder / "checkpoint.pt").is_file() and not folder.is_file():
        return None
    clf = load_classifier(folder, config.task, config.size)
    return {name: float(np.exp(classifier_log_prob(clf, images, t=0)).mean())
            for name, images in sets.items()}


def _filter_result(path: Path, config, images: np.ndarray, ev: Evaluation, threshold: float, n_boot: int,
                   seed: int) -> dict:
    """One filter applied to the unguided samples: what it keeps, how it classes them, and the metrics."""
    t0 = time.perf_counter()
    filt = load_filter(path, config.task, config.size)
    proba = filt.predict_proba(images)
    keep = filter_samples(proba, threshold)
    record = json.loads(path.with_suffix(".json").read_text()) if path.with_suffix(".json").is_file() else {}
    counts = np.bincount(predicted_class(proba), minlength=N_CLASSES)
    return {"architecture": filt.config.architecture.value, "threshold": threshold,
            "test_accuracy": filt.test_accuracy, "train_seconds": record.get("seconds"),
            "filter_seconds": round(time.perf_counter() - t0, 2),
            "predicted_class_counts": [int(c) for c in counts],
            **_metrics(ev.take(keep), n_boot, seed, len(ev)),
            "random_subset": random_subset_control(ev, keep, seed=seed)}


def table2_row(run_dir, samples: str, *, guided: str | None = None, filter_arch="mlp", threshold: float = 0.0,
               oracle_tolerance: float = 0.05, n_boot: int = 1000, seed: int = 0, workers: int = 2) -> dict:
    """Table 2's numbers for one run: DDPM, Guidance, Filtering and the oracle filter (module docstring).

    ``samples``: the unguided sample set; ``guided``: the guided one (default: the run's only
    ``<samples>-guided-*`` set; ``None`` in the row if it has none); ``filter_arch``: the filter
    classifier (``<run>/filters/<arch>.pt``; the row's Filtering is ``None`` if it is missing), or
    ``"best"``: the run's filter with the highest test accuracy (:func:`best_filter`, the paper's rule).
    """
    root, config = _run(run_dir)
    chosen_by = None
    if filter_arch == "best":
        filter_arch, chosen_by = best_filter(root), "highest test accuracy"
    elif getattr(filter_arch, "value", filter_arch) not in {a.value for a in Architecture}:
        raise ValueError(f"filter_arch must be one of {[a.value for a in Architecture] + ['best']}, "
                         f"got {filter_arch!r}")
    threshold = check_real("threshold", threshold, 0.0, 1.0)
    oracle_tolerance = check_real("oracle_tolerance", oracle_tolerance, 0.0)
    if oracle_tolerance <= 0:
        raise ValueError(f"oracle_tolerance must be > 0, got {oracle_tolerance}")
    base = load_samples(root, samples)
    ev = evaluate(base.images, config.task, workers=workers)
    n = len(ev)
    row = {"task": config.task, "run": str(root), "samples": base.name, "train_step": base.meta.get("train_step"),
           "n_samples": n, "ddpm": _metrics(ev, n_boot, seed, n)}
    # Guidance
    if guided is None:
        found = guided_sets(root, samples)
        if len(found) > 1:
            raise ValueError(f"{str(root)!r} has {len(found)} guided sets ({', '.join(found)}); name one with --guided")
        guided = found[0] if found else None
    if guided is not None:
        g = load_samples(root, guided)
        gev = evaluate(g.images, config.task, workers=workers)
        row["guidance"] = {"samples": g.name, "guide": g.meta.get("guidance"),
                           "sampling_seconds": g.meta.get("seconds"), **_metrics(gev, n_boot, seed, len(gev)),
                           "classifier_p_rule_t0": _classifier_belief(root, config, g.meta.get("guidance"),
                                                                      {"ddpm": base.images, "guided": g.images})}
    else:
        row["guidance"] = None
    acc = classifier_dir(root) / "accuracy.json"
    row["guidance_classifier"] = json.loads(acc.read_text()) if acc.is_file() else None
    # Filtering: every trained filter is applied; the chosen one is the row's Filtering.
    row["filters"] = {}
    for arch in Architecture:
        path = filter_path(root, arch)
        if path.is_file():
            row["filters"][arch.value] = _filter_result(path, config, base.images, ev, threshold, n_boot, seed)
    chosen = row["filters"].get(getattr(filter_arch, "value", filter_arch)) if filter_arch is not None else None
    row["filtering"] = None if chosen is None else {"chosen_by": chosen_by or "given", **chosen}
    row["filters_test_accuracy"] = {a: f["test_accuracy"] for a, f in row["filters"].items()}
    # Oracle filter: the evaluator keeps the samples within the tolerance of the rule.
    keep = oracle_filter(ev, oracle_tolerance)
    row["oracle"] = {"tolerance": oracle_tolerance, **_metrics(ev.take(keep), n_boot, seed, n),
                     "random_subset": random_subset_control(ev, keep, seed=seed)}
    return row
