"""Figure 4: DDPM samples against the fine rule: trimmed fit, R^2 and Error (eq. (4)) split into bias and variance,
each beside three control sets that could have come out otherwise.

Reads run folders, evaluates each run's samples and draws, per task, y against x of the valid samples
within the [2.5 %, 97.5 %] ratio percentiles, the estimation line and the ground-truth line y = k x.
Below each panel, the slope, R^2 and Error of the samples are drawn with their bootstrap 95 % CIs
beside the same metrics on the control sets of ``empirics.controls`` (fresh renders never trained
on, the same degraded by blur + JPEG, and the matched null with the samples' background, colours,
blur and noise; as many images as samples). A metric counts as evidence about the model only where
the samples' CI is disjoint from every control's. Writes ``figure4.png``, ``figure4.pdf``,
``figure4.json`` (each task's summary with bootstrap CIs, and ``controls``: the control rows with
the verdicts ``differs_from_controls`` / ``evidence``) and ``figure4.csv`` (every valid sample's x, y,
ratio, kept). Run: ``hidden-rules figure4 runs/A ...``.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys

import numpy as np

from cli.types import FINITE
from empirics.evaluator.controls import FIGURE4_METRICS, ControlKind
from empirics.evaluator.metrics import trimmed_fit
from empirics.runs import control_comparison
from paper_figs._io import atomic_write_bytes, prepare_outputs, save_figure, write_json
from paper_figs._plots import rule_panel
from paper_figs._runs import PAPER_DDPM, add_run_arguments, load_controls, load_runs

SETS = ("samples",) + tuple(k.value for k in ControlKind)
COLOURS = {"samples": "#4c72b0", "fresh": "#55a868", "degraded": "#dd8452", "matched": "#8172b3"}
LABELS = {"slope": "slope $b_1$", "r2": "$R^2$", "error": "Error eq. (4)"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)
    p.add_argument("--trim", type=FINITE, nargs=2, default=(2.5, 97.5), metavar=("LO", "HI"),
                   help="ratio percentiles kept for the fit (default 2.5 97.5)")


def run(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["figure4.png", "figure4.pdf", "figure4.json", "figure4.csv"]
    png, pdf, js, csv_path = prepare_outputs(args.out, names, args.overwrite)
    runs = load_runs(args)
    controls = load_controls(args, runs)
    n_rows = 1 + len(FIGURE4_METRICS)
    fig, axes = plt.subplots(n_rows, len(runs), figsize=(3.4 * len(runs), 3.4 + 1.1 * len(FIGURE4_METRICS)),
                             squeeze=False, gridspec_kw={"height_ratios": [3.0] + [1.0] * len(FIGURE4_METRICS)})
    record = {"figure": "Figure 4", "trim": list(args.trim), "sets": list(SETS),
              "verdict": "a metric is evidence about the model only where the samples' 95 % CI is disjoint "
                         "from every control's (controls.metrics.<metric>.evidence)", "tasks": {}}
    text = io.StringIO()
    w = csv.writer(text)
    w.writerow(["task", "sample", "seed", "x", "y", "ratio", "kept"])
    for j, (rev, ctl) in enumerate(zip(runs, controls)):
        ev, task = rev.sample_eval, rev.task
        s = ev.summary(trim=tuple(args.trim), n_boot=args.n_boot, seed=args.seed)
        cmp = control_comparison(rev, ctl, FIGURE4_METRICS, trim=tuple(args.trim), n_boot=max(args.n_boot, 1),
                                 seed=args.seed)
        record["tasks"][task.value] = {"run": str(rev.run_dir), "samples": rev.samples.name,
                                       "train_step": rev.samples.meta.get("train_step"), "summary": s,
                                       "controls": cmp, "paper": PAPER_DDPM[task.value]}
        _control_rows(axes[1:, j], cmp)
        ax = axes[0][j]
        if s["r2"] is None:
            ax.set_title(f"Task {task.value}: too few valid samples to fit", fontsize=9)
            continue
        title = (f"Task {task.value}: $R^2$ = {s['r2']:.3f}, Error = {s['error']:.3f}\n"
                 f"(bias {s['error_bias']:.3f} + variance {s['error_variance']:.3f})")
        rule_panel(ax, task, ev.x, ev.y, ev.valid, s, title=title)
        idx = np.flatnonzero(ev.valid)
        kept = trimmed_fit(ev.x[idx], ev.y[idx], tuple(args.trim)).kept
        for i, keep in zip(idx, kept):
            w.writerow([task.value, int(i), int(rev.samples.seeds[i]), repr(float(ev.x[i])), repr(float(ev.y[i])),
                        repr(float(ev.y[i] / ev.x[i])), bool(keep)])
        print(f"Task {task.value}: y = {s['beta1']:.3f} x {s['beta0']:+.4f} (k = {s['k']:.3f}), R^2 = {s['r2']:.3f}, "
              f"Error = {s['error']:.3f} = {s['error_bias']:.3f} + {s['error_variance']:.3f} "
              f"(paper: R^2 {PAPER_DDPM[task.value]['r2']}, Error {PAPER_DDPM[task.value]['error']})")
        for m, row in cmp["metrics"].items():
            others = ", ".join(f"{k} {_fmt(v['value'])}" for k, v in row["controls"].items())
            print(f"  {m}: samples {_fmt(row['samples']['value'])}; {others}; differs from: "
                  f"{', '.join(row['differs_from_controls']) or 'none'}{' (evidence)' if row['evidence'] else ''}")
    fig.suptitle("Figure 4: DDPM samples and the fine rule, beside controls (95 % CIs)", fontsize=11)
    fig.tight_layout()
    save_figure(fig, png)
    save_figure(fig, pdf)
    plt.close(fig)
    atomic_write_bytes(csv_path, text.getvalue().encode())
    write_json(js, record)
    print(f"wrote {png}, {pdf}, {js}, {csv_path}")
    return 0


def _control_rows(axes, cmp: dict) -> None:
    """One small panel per metric: the samples and each control as a point with its 95 % CI."""
    for ax, (metric, row) in zip(axes, cmp["metrics"].items()):
        ests = [row["samples"]] + [row["controls"][k] for k in SETS[1:]]
        for pos, (name, est) in enumerate(zip(SETS, ests)):
            if est["value"] is None:
                continue
            lo, hi = (est["ci95"] if est["ci95"][0] is not None else (est["value"], est["value"]))
            ax.errorbar(est["value"], -pos, xerr=[[est["value"] - lo], [hi - est["value"]]], fmt="o", ms=3,
                        capsize=2, color=COLOURS[name])
        ax.set_yticks([-p for p in range(len(SETS))], list(SETS), fontsize=6)
        ax.set_ylim(-len(SETS) + 0.5, 0.5)
        diff = ", ".join(row["differs_from_controls"]) or "none"
        ax.set_title(f"{LABELS.get(metric, metric)}: samples differ from {diff}", fontsize=7)
        ax.tick_params(axis="x", labelsize=6)


def _fmt(v, digits: int = 4) -> str:
    return "" if v is None else f"{v:.{digits}f}"


if __name__ == "__main__":  # python -m paper_figs.figure4 ...: the verb 'figure4' of hidden-rules
    from cli import run_verb

    sys.exit(run_verb('figure4'))
