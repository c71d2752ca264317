"""Invalid % and coarse violations of a DDPM run against training steps and against sampling steps.

(left) For every EMA snapshot of the run (``<run>/snapshots``), ``--n`` samples of one sampler
(default DDIM-100, eta = 1) with seeds 0..n-1, measured by the rule evaluator.
(right) At the final checkpoint, every sample set of ``benchmarks/sampler_speed.py``
(``<run>/samples/bench<N>-*``): ancestral DDPM-1000 and DDIM at 50/100/250 steps, eta 0 and 1; of
sets of one sampler with different N, the largest.

Samples are cached in ``<run>/samples/curve<n>-<sampler>-step<k>``, so an interrupted run resumes.
Writes ``ddpm_curves_<task>.png`` and ``.json``. Run: ``hidden-rules ddpm-curves runs/A``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from cli.types import OUTPUT_FOLDER, PROBABILITY, IntRange, positive_int, run_folder
from empirics import ddpm
from empirics.evaluator.metrics import binomial_ci
from empirics.runs import evaluate_run, sample_sets
from paper_figs._io import prepare_outputs, save_figure, write_json

BENCH = re.compile(r"^bench(\d+)-(ddpm|ddim)-(\d+)(?:-eta([0-9.]+))?$")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=run_folder, help="run folder with EMA snapshots")
    p.add_argument("--n", type=positive_int(1_000_000), default=256,
                   help="samples per snapshot, seeds 0..n-1 (default 256)")
    p.add_argument("--sampler", choices=[s.value for s in ddpm.Sampler], default="ddim",
                   help="sampler for the training curve (default ddim)")
    p.add_argument("--steps", type=IntRange(1, 1000), default=100, help="its sampling steps (default 100)")
    p.add_argument("--eta", type=PROBABILITY, default=1.0, help="DDIM eta (default 1; 0 for ddpm)")
    p.add_argument("--batch-size", type=positive_int(4096), default=256, help="samples per batch (default 256)")
    p.add_argument("--out", default="paper_figs/out", type=OUTPUT_FOLDER, help="output folder (default paper_figs/out)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")


def _point(run: Path, name: str) -> dict:
    ev = evaluate_run(run, name).sample_eval
    n, n_valid = len(ev), int(ev.valid.sum())
    viol = int((~ev.coarse_ok[ev.valid]).sum())
    inv, vci = binomial_ci(n - n_valid, n), binomial_ci(viol, n_valid)
    return {"samples": name, "n": n, "invalid_percent": 100 * (n - n_valid) / n,
            "invalid_percent_ci95": [100 * inv[0], 100 * inv[1]], "coarse_violations": viol,
            "coarse_violation_percent": 100 * viol / n_valid if n_valid else None,
            "coarse_violation_percent_ci95": [100 * vci[0], 100 * vci[1]]}


def run(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = ddpm.SampleSpec(args.sampler, args.steps, args.eta if args.sampler == "ddim" else 0.0)
    run_dir = Path(args.run)
    config = ddpm.read_config(run_dir)
    files = ddpm.RunFiles(run_dir)
    steps = files.snapshot_steps()
    if not steps:
        raise ValueError(f"{str(run_dir)!r} has no EMA snapshots yet")
    png, js = prepare_outputs(args.out, [f"ddpm_curves_{config.task}.png", f"ddpm_curves_{config.task}.json"],
                              args.overwrite)
    training = []
    for k in steps:
        name = f"curve{args.n}-{spec.name}-step{k}"
        if not (files.samples / name / "samples.npz").exists():
            ddpm.sample(run_dir, args.n, spec, seed=0, out=files.samples / name, snapshot_step=k,
                        batch_size=args.batch_size, progress=False)
        training.append({"train_step": k, **_point(run_dir, name)})
        print(f"step {k}: invalid {training[-1]['invalid_percent']:.1f} %, "
              f"coarse violations {training[-1]['coarse_violations']}", flush=True)
    largest: dict[tuple[str, int], tuple[int, str]] = {}  # (family, steps) -> the set with most samples
    for name in sample_sets(run_dir):
        m = BENCH.match(name)
        if m:
            family = "ancestral" if m.group(2) == "ddpm" else f"DDIM eta={float(m.group(4)):g}"
            key = (family, int(m.group(3)))
            largest[key] = max(largest.get(key, (0, "")), (int(m.group(1)), name))
    sampling = [{"family": family, "sampling_steps": steps, **_point(run_dir, name)}
                for (family, steps), (_, name) in sorted(largest.items())]
    fig, (ax_t, ax_s) = plt.subplots(1, 2, figsize=(8, 3))
    xs = [p["train_step"] for p in training]
    for key, label, colour in (("invalid_percent", "Invalid %", "C0"),
                               ("coarse_violation_percent", "coarse violations, % of valid", "C3")):
        ys = [p[key] if p[key] is not None else float("nan") for p in training]
        lo = [y - p[f"{key}_ci95"][0] for y, p in zip(ys, training)]
        hi = [p[f"{key}_ci95"][1] - y for y, p in zip(ys, training)]
        ax_t.errorbar(xs, ys, yerr=[lo, hi], marker="o", ms=3, capsize=2, color=colour, label=label)
    ax_t.set_xlabel("training step (EMA snapshot)")
    ax_t.set_ylabel("% (95 % CI)")
    ax_t.set_title(f"Task {config.task}: {args.n} samples, {spec.name}", fontsize=9)
    ax_t.legend(fontsize=7)
    for j, family in enumerate(sorted({p["family"] for p in sampling})):
        pts = sorted((p for p in sampling if p["family"] == family), key=lambda p: p["sampling_steps"])
        ax_s.plot([p["sampling_steps"] for p in pts], [p["invalid_percent"] for p in pts], marker="o", ms=3,
                  color=f"C{j}", label=f"{family}: Invalid %")
        ax_s.plot([p["sampling_steps"] for p in pts],
                  [p["coarse_violation_percent"] if p["coarse_violation_percent"] is not None else float("nan")
                   for p in pts], ":", marker="x", ms=3, color=f"C{j}", label=f"{family}: coarse viol. %")
    ax_s.set_xscale("log")
    ax_s.set_xlabel("sampling steps")
    ax_s.set_title("final checkpoint, by sampler" if sampling else "no benchmark sample sets yet", fontsize=9)
    if sampling:
        ax_s.legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, png)
    plt.close(fig)
    write_json(js, {"run": str(run_dir), "task": config.task, "sampler": spec.name, "n": args.n,
                    "training": training, "sampling": sampling})
    print(f"wrote {png}, {js}")
    return 0


if __name__ == "__main__":  # python -m paper_figs.ddpm_curves ...: the verb 'ddpm-curves' of hidden-rules
    from cli import run_verb

    sys.exit(run_verb('ddpm-curves'))
