"""Fig. 12 on a CPU: a DDPM run's rule and marginals against training steps, and Invalid % against sampling steps.

(training) For every EMA snapshot of the run (``<run>/snapshots``; ``--every K`` keeps the steps that are
multiples of K, and always the last), ``--n`` samples of one sampler (default DDIM-100, eta = 1) with seeds
0..n-1, measured by the rule evaluator (``empirics.runs.rule_table_row``): Invalid % and coarse
violations (exact binomial 95 % CIs), R^2, Error (eq. (4)) and the +-1 % conforming share with
percentile-bootstrap 95 % CIs; and the marginal goals of a CPU model (``empirics.evaluator.marginals.
goal_measures``): white backgrounds, valid samples with a rule length outside the training range, and
each element's colour in App. C's box against the training set's share.
The control: ``--n`` fresh renders never trained on (seed ``FRESH_SEED``) measured the same way, drawn
as a band on the R^2 and Error panels (a perfect model's samples would lie there).
(sampling) At the final checkpoint, every sample set of ``benchmarks/sampler_speed.py``
(``<run>/samples/bench<N>-*``): ancestral DDPM-1000 and DDIM at 50/100/250 steps, eta 0 and 1; of
sets of one sampler with different N, the largest.

Samples are cached in ``<run>/samples/curve<n>-<sampler>-step<k>``, so an interrupted run resumes.
Writes ``ddpm_curves_<task>.png`` (Invalid and coarse, R^2, Error, +-1 % share, marginals against training
steps; a sixth panel by sampler when benchmark sets exist), ``.json`` and ``.csv`` (one row per snapshot).
Run: ``hidden-rules ddpm-curves runs/A --n 512 --steps 50 --every 1000`` (App. D.3, Fig. 12).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from cli.types import PROBABILITY, IntRange, add_threads_argument, positive_int, run_folder
from empirics import ddpm, threads
from empirics.ddpm.progress import progress_bar
from empirics.evaluate import evaluate
from empirics.evaluator.controls import FRESH_SEED, fresh_renders
from empirics.evaluator.marginals import colour_box_share, goal_measures
from empirics.runs import evaluate_run, rule_table_row, sample_sets
from paper_figs._io import add_output_arguments, prepare_outputs, save_figure, write_json, write_rows_csv

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
    p.add_argument("--every", type=positive_int(10**7), default=None,
                   help="only the snapshots at multiples of this step, and the last (default: every snapshot)")
    p.add_argument("--n-boot", type=IntRange(0, 100_000), default=1000,
                   help="bootstrap replicates of the R^2 / Error CIs (default 1000)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the U-Net for sampling (compiles once per snapshot)")
    add_threads_argument(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_output_arguments(p)


def _point(run: Path, name: str, n_boot: int, train_colours: dict | None) -> dict:
    rev = evaluate_run(run, name)
    row = rule_table_row(rev, n_boot=n_boot)
    point = {"samples": name, "n": row["n_samples"], "n_valid": row["n_valid"],
             **{k: row[k] for k in ("invalid_percent", "invalid_percent_ci95", "coarse_violations",
                                    "coarse_violation_percent_ci95")},
             "coarse_violation_percent": row["coarse_violation_percent_of_valid"],
             "r2": row["fit"]["r2"], "r2_ci95": (row["ci95"] or {}).get("r2"),
             "error": row["fit"]["error"], "error_ci95": (row["ci95"] or {}).get("error"),
             "slope": row["fit"]["beta1"], "conforming_fraction": row["conforming_fraction"],
             "conforming_fraction_ci95": (row["ci95"] or {}).get("conforming_fraction")}
    if train_colours is not None:
        point.update(goal_measures(rev, train_colours))
    return point


def _fresh_control(task: str, n: int, size: int, n_boot: int) -> dict:
    """The null of the R^2 / Error panels: ``n`` exact renders never trained on, measured as the samples are."""
    ev = evaluate(fresh_renders(task, n, size, seed=FRESH_SEED).images, task)
    s = ev.summary(n_boot=n_boot, seed=0)
    ci = s["ci95"] or {}
    return {"what": "fresh renders, never trained on", "seed": FRESH_SEED, "n": n, "n_valid": int(ev.valid.sum()),
            "r2": s["r2"], "r2_ci95": ci.get("r2"), "error": s["error"], "error_ci95": ci.get("error"),
            "conforming_fraction": s["conforming_fraction"], "conforming_fraction_ci95": ci.get("conforming_fraction")}


def _snapshots(files, every: int | None) -> list[int]:
    steps = files.snapshot_steps()
    if not steps:
        raise ValueError(f"{str(files.root)!r} has no EMA snapshots yet")
    if every is None:
        return steps
    return [k for k in steps if k % every == 0 or k == steps[-1]]


def run(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = ddpm.SampleSpec(args.sampler, args.steps, args.eta if args.sampler == "ddim" else 0.0)
    n_threads = threads.set_threads(args.threads)
    run_dir = Path(args.run)
    config = ddpm.read_config(run_dir)
    files = ddpm.RunFiles(run_dir)
    steps = _snapshots(files, args.every)
    png, js, csv_path = prepare_outputs(args.out, [f"ddpm_curves_{config.task}.{e}" for e in ("png", "json", "csv")],
                                        args.overwrite)
    train_colours = None
    training = []
    for k in progress_bar(steps, not args.no_progress, f"snapshots of {run_dir.name}"):
        name = f"curve{args.n}-{spec.name}-step{k}"
        if not (files.samples / name / "samples.npz").exists():
            ddpm.sample(run_dir, args.n, spec, seed=0, out=files.samples / name, snapshot_step=k,
                        batch_size=args.batch_size, progress=False, compile_model=args.compile)
        if train_colours is None:
            train_colours = colour_box_share(evaluate_run(run_dir, name).train.images, config.task)
        training.append({"train_step": k, **_point(run_dir, name, args.n_boot, train_colours)})
        p = training[-1]
        print(f"step {k}: invalid {p['invalid_percent']:.1f} %, coarse violations {p['coarse_violations']}, "
                   f"R^2 {_fmt(p['r2'])}, Error {_fmt(p['error'])}, white {p['background_white_percent']:.0f} %, "
                   f"outside {_fmt(p['outside_rule_range_percent'], 1)} %", flush=True)
    control = _fresh_control(config.task, args.n, config.size, args.n_boot)
    sampling = [{"family": family, "sampling_steps": k, **_point(run_dir, name, args.n_boot, None)}
                for (family, k), name in _bench_sets(run_dir)]
    fig = _plot(plt, config.task, training, control, sampling, f"{args.n} samples, {spec.name}")
    save_figure(fig, png)
    plt.close(fig)
    write_json(js, {"run": str(run_dir), "task": config.task, "preset": config.preset,
                    "train_steps": config.train_steps, "sampler": spec.name, "n": args.n, "n_boot": args.n_boot,
                    "torch_threads": n_threads, "compiled": args.compile,
                    "training": training, "control_fresh": control, "sampling": sampling})
    write_rows_csv(csv_path, [{k: v for k, v in p.items() if not isinstance(v, dict | list)} for p in training])
    print(f"wrote {png}, {js}, {csv_path}")
    return 0


def _fmt(v, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _bench_sets(run_dir: Path) -> list:
    largest: dict[tuple[str, int], tuple[int, str]] = {}  # (family, steps) -> the set with most samples
    for name in sample_sets(run_dir):
        m = BENCH.match(name)
        if m:
            family = "ancestral" if m.group(2) == "ddpm" else f"DDIM eta={float(m.group(4)):g}"
            key = (family, int(m.group(3)))
            largest[key] = max(largest.get(key, (0, "")), (int(m.group(1)), name))
    return [(key, name) for key, (_, name) in sorted(largest.items())]


def _errorbars(ax, xs, points, key, **kw):
    ys = [p[key] if p[key] is not None else float("nan") for p in points]
    cis = [p.get(f"{key}_ci95") or [y, y] for y, p in zip(ys, points)]
    ax.errorbar(xs, ys, yerr=[[y - c[0] for y, c in zip(ys, cis)], [c[1] - y for y, c in zip(ys, cis)]],
                marker="o", ms=3, capsize=2, **kw)


def _plot(plt, task: str, training: list, control: dict, sampling: list, what: str):
    fig, axes = plt.subplots(1, 6 if sampling else 5, figsize=(22.8 if sampling else 19, 3.3))
    xs = [p["train_step"] for p in training]
    ax = axes[0]
    _errorbars(ax, xs, training, "invalid_percent", color="C0", label="Invalid %")
    _errorbars(ax, xs, training, "coarse_violation_percent", color="C3", label="coarse violations, % of valid")
    ax.set_ylabel("% (95 % CI)")
    ax.set_title(f"Task {task}: {what}", fontsize=9)
    for ax, key, label in ((axes[1], "r2", "$R^2$"), (axes[2], "error", "Error, eq. (4)"),
                           (axes[3], "conforming_fraction", "share within ±1 %")):
        _errorbars(ax, xs, training, key, color="C0", label="samples")
        ci = control.get(f"{key}_ci95") or [control[key]] * 2
        if control[key] is not None:
            ax.axhspan(ci[0], ci[1], color="C2", alpha=0.3, label="fresh renders (95 % CI)")
            ax.axhline(control[key], color="C2", lw=1)
        ax.set_ylabel(f"{label} (95 % CI)")
        ax.set_title(f"{label} of the fine rule", fontsize=9)
    axes[2].set_yscale("log")
    ax = axes[4]
    _errorbars(ax, xs, training, "background_white_percent", color="C0", label="white background")
    _errorbars(ax, xs, training, "outside_rule_range_percent", color="C1", label="rule length outside training range")
    for j, key in enumerate(k for k in training[0] if k.startswith("colour_") and k.endswith("_in_box_percent")):
        _errorbars(ax, xs, training, key, color=f"C{j + 4}", label=key[len("colour_"):-len("_in_box_percent")]
                   + " colour in box")
    ax.set_ylabel("% of samples (95 % CI)")
    ax.set_title("marginals", fontsize=9)
    for ax in axes[:5]:
        ax.set_xlabel("training step (EMA snapshot)")
        ax.legend(fontsize=6)
        ax.tick_params(labelsize=7)
    if not sampling:  # no benchmark sample sets at the final checkpoint: no sixth panel
        fig.tight_layout()
        return fig
    ax = axes[5]
    for j, family in enumerate(sorted({p["family"] for p in sampling})):
        pts = sorted((p for p in sampling if p["family"] == family), key=lambda p: p["sampling_steps"])
        ax.plot([p["sampling_steps"] for p in pts], [p["invalid_percent"] for p in pts], marker="o", ms=3,
                color=f"C{j}", label=f"{family}: Invalid %")
        ax.plot([p["sampling_steps"] for p in pts],
                [p["coarse_violation_percent"] if p["coarse_violation_percent"] is not None else float("nan")
                 for p in pts], ":", marker="x", ms=3, color=f"C{j}", label=f"{family}: coarse viol. %")
    ax.set_xscale("log")
    ax.set_xlabel("sampling steps")
    ax.set_title("final checkpoint, by sampler", fontsize=9)
    ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


if __name__ == "__main__":  # python -m paper_figs.ddpm_curves ...: the verb 'ddpm-curves' of hidden-rules
    from cli import run_verb

    sys.exit(run_verb('ddpm-curves'))
