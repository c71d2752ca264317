"""Training-recipe probes for the CPU DDPM preset, compared at equal wall-clock time.

Each probe is the first CPU preset (``cpu-2000``, the ``cpu`` preset before 2026-12-04) with one or two
levers changed. Its step count is the baseline's ``--base-steps`` times the baseline's step time over
the probe's (measured side by side in one run by ``benchmarks/train_step.py`` at one thread), so every
probe costs the same wall-clock time. The learning-rate schedule (warm-up, cosine decay to 0) spans
each probe's own steps.

    python benchmarks/recipe_probes.py run C_base            # train, 512 samples (DDIM-50, eta 1), table1, marginals
    python benchmarks/recipe_probes.py table                  # one table of every probe that finished

A probe's record (config, loss log, train stats, samples as npz, table1.json, marginals.json) is
written to ``docs/section3/probes/<probe>/``; its run folder (checkpoints) to ``runs/probes/<probe>``.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from empirics import ddpm, threads  # noqa: E402

DOCS = ROOT / "docs" / "section3" / "probes"
RUNS = ROOT / "runs" / "probes"
SPEC = ddpm.SampleSpec("ddim", 50, 1.0)
N_SAMPLES = 512

# probe -> (task, overrides of the cpu preset, step-time ratio baseline/probe at 1 thread)
# ratios: benchmarks/train_step.py at 1 thread, 2026-12-04 (re-run: docs/section3/probes/train_step.json)
PROBES: dict[str, tuple[str, dict, float]] = {
    "C_base": ("C", {}, 1.0),
    "C_lr2e-3": ("C", {"lr": 2e-3}, 1.0),
    "C_minsnr5": ("C", {"loss_weighting": "min-snr", "min_snr_gamma": 5.0}, 1.0),
    "C_batch32": ("C", {"batch_size": 32}, 2.01),
    "C_narrow": ("C", {"channels": (32, 32, 64)}, 1.47),
    "C_noema": ("C", {"ema_decay": 0.0}, 1.0),
    # combinations on top of the clear winner of the first round (min-SNR-5)
    "C_minsnr5_batch32": ("C", {"loss_weighting": "min-snr", "min_snr_gamma": 5.0, "batch_size": 32}, 2.01),
    "C_minsnr5_lr2e-3": ("C", {"loss_weighting": "min-snr", "min_snr_gamma": 5.0, "lr": 2e-3}, 1.0),
    "C_minsnr2": ("C", {"loss_weighting": "min-snr", "min_snr_gamma": 2.0}, 1.0),
}


def run_probe(name: str, base_steps: int, n_threads) -> Path:
    if name not in PROBES:
        raise ValueError(f"unknown probe {name!r}; have {sorted(PROBES)}")
    task, overrides, ratio = PROBES[name]
    steps = int(round(base_steps * ratio))
    config = ddpm.make_config(task, "cpu-2000", train_steps=steps, **overrides)
    run = RUNS / name
    used = threads.set_threads(n_threads)
    ckpt = run / "checkpoint.pt"
    finished = ckpt.exists() and ddpm.load_run(run).step == steps
    if not finished:
        ddpm.train(run, config, progress=False)
    sample_dir = run / "samples" / SPEC.name
    if not (sample_dir / "samples.npz").exists():
        ddpm.sample(run, N_SAMPLES, SPEC, batch_size=128, progress=False)
    out = DOCS / name
    out.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "paper_figs.cli"]
    for verb in ("table1", "marginals"):
        subprocess.run([*cli, verb, str(run), "--samples", SPEC.name, "--out", str(out), "--overwrite"],
                       check=True, cwd=ROOT)
    for src, dst in ((run / "config.json", f"config_{task}.json"), (run / "loss.csv", f"loss_{task}.csv"),
                     (run / "train_stats.json", f"train_stats_{task}.json"),
                     (sample_dir / "samples.npz", f"samples_{task}_{SPEC.name}.npz"),
                     (sample_dir / "sample.json", f"sample_{task}_{SPEC.name}.json")):
        if src.exists():
            shutil.copyfile(src, out / dst)
    (out / "probe.json").write_text(json.dumps({"probe": name, "task": task, "overrides": {
        k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()}, "step_ratio": ratio,
        "base_steps": base_steps, "train_steps": steps, "threads": used}, indent=2) + "\n")
    return out


def _ci(d):
    return [round(v, 4) for v in d]


def probe_row(folder: Path, task: str | None = None, label: str | None = None) -> dict:
    """The goal columns of one probe record (issue: a CPU DDPM that reproduces its marginals); ``task``
    picks one row of a multi-task record (docs/section3, the committed runs of today's preset)."""
    probe = json.loads((folder / "probe.json").read_text()) if (folder / "probe.json").exists() else {
        "probe": label or folder.name}
    rows = json.loads((folder / "table1.json").read_text())["rows"]
    table = next(r for r in rows if task is None or r["task"] == task)
    task = table["task"]
    marg = json.loads((folder / "marginals.json").read_text())["tasks"][task]
    stats = json.loads((folder / f"train_stats_{task}.json").read_text())
    boxes = marg["colour_box"]
    # App. C's box holds the element's median colour (raw pixels); the goal measure
    colour = {el: round(boxes["samples"][el]["raw"]["share_in_box"]
                        / max(1e-12, boxes["training"][el]["raw"]["share_in_box"]), 4) for el in boxes["samples"]}
    any_pixel = {el: round(boxes["samples"][el]["any_pixel_share"]
                           / max(1e-12, boxes["training"][el]["any_pixel_share"]), 4) for el in boxes["samples"]}
    outside = marg["support"]["samples"]["outside"]["any_rule_length"]
    bg = marg["background"]["samples"]
    return {
        "probe": probe["probe"], "task": task, "train_steps": table["train_step"],
        "train_seconds": stats["train_seconds_total"],
        "seconds_per_step": round(stats["train_seconds_total"] / table["train_step"], 3),
        "n_samples": table["n_samples"],
        "background_median": bg["median"], "background_share_ge_250": round(bg["share_white"], 4),
        "outside_training_range_share": round(outside["share"], 4),
        "outside_ci95": _ci(outside["share_ci95"]),
        "colour_box_share_rel_training": colour, "colour_box_min_rel": min(colour.values()),
        "colour_any_pixel_rel_training": any_pixel,
        "invalid_percent": round(table["invalid_percent"], 2), "invalid_ci95": _ci(table["invalid_percent_ci95"]),
        "coarse_percent_of_valid": round(table["coarse_violation_percent_of_valid"], 2),
        "r2": round(table["fit"]["r2"], 4), "r2_ci95": _ci(table["ci95"]["r2"]),
        "error": round(table["fit"]["error"], 4), "error_ci95": _ci(table["ci95"]["error"]),
    }


# committed runs (2000 samples each) beside the probes: the cpu-2000 run, and the cpu preset's first run
REFERENCES = [("C", ROOT / "docs" / "section3", "C_cpu-2000 preset, 2000 steps (committed run)"),
              ("C", ROOT / "docs" / "section3" / "cpu" / "C", "C_cpu preset, 8000 steps (2 threads)")]


def write_table(folders: list[Path], out: Path) -> list[dict]:
    tasks = {json.loads((f / "table1.json").read_text())["rows"][0]["task"] for f in folders}
    rows = [probe_row(folder, t, label) for t, folder, label in REFERENCES if t in tasks and folder.exists()]
    rows += [probe_row(f) for f in folders]
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe_table.json").write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    flat = [{k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in r.items()} for r in rows]
    with open(out / "probe_table.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(flat[0]))
        w.writeheader()
        w.writerows(flat)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("probe", choices=sorted(PROBES))
    r.add_argument("--base-steps", type=int, default=1000)
    r.add_argument("--threads", type=threads.parse_threads, default=1)
    t = sub.add_parser("table")
    t.add_argument("folders", nargs="*", help="probe records (default: every one under docs/section3/probes)")
    args = p.parse_args(argv)
    if args.cmd == "run":
        print(run_probe(args.probe, args.base_steps, args.threads))
        return 0
    folders = [Path(f) for f in args.folders] or sorted(d for d in DOCS.iterdir() if (d / "marginals.json").exists())
    for row in write_table(folders, DOCS):
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
