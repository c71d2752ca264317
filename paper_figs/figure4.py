"""Figure 4: DDPM samples against the fine rule: trimmed fit, R^2 and Error (eq. (4)) split into bias and variance.

Reads run folders, evaluates each run's samples and draws, per task, y against x of the valid samples
within the [2.5 %, 97.5 %] ratio percentiles, the estimation line and the ground-truth line y = k x.
Writes ``figure4.png``, ``figure4.pdf``, ``figure4.json`` (each task's summary with bootstrap CIs)
and ``figure4.csv`` (every valid sample's x, y, ratio, kept). Run: ``hidden-rules figure4 runs/A ...``.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys

import numpy as np

from empirics.metrics import trimmed_fit
from paper_figs._io import atomic_write_bytes, prepare_outputs, save_figure, write_json
from paper_figs._plots import rule_panel
from paper_figs._runs import PAPER_DDPM, add_run_arguments, load_runs


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)
    p.add_argument("--trim", type=float, nargs=2, default=(2.5, 97.5), metavar=("LO", "HI"),
                   help="ratio percentiles kept for the fit (default 2.5 97.5)")


def run(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["figure4.png", "figure4.pdf", "figure4.json", "figure4.csv"]
    png, pdf, js, csv_path = prepare_outputs(args.out, names, args.overwrite)
    runs = load_runs(args)
    fig, axes = plt.subplots(1, len(runs), figsize=(3.4 * len(runs), 3.4), squeeze=False)
    record = {"figure": "Figure 4", "trim": list(args.trim), "tasks": {}}
    text = io.StringIO()
    w = csv.writer(text)
    w.writerow(["task", "sample", "seed", "x", "y", "ratio", "kept"])
    for j, rev in enumerate(runs):
        ev, task = rev.sample_eval, rev.task
        s = ev.summary(trim=tuple(args.trim), n_boot=args.n_boot, seed=args.seed)
        record["tasks"][task.value] = {"run": str(rev.run_dir), "samples": rev.samples.name,
                                       "train_step": rev.samples.meta.get("train_step"), "summary": s,
                                       "paper": PAPER_DDPM[task.value]}
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
    fig.suptitle("Figure 4: DDPM samples and the fine rule", fontsize=11)
    fig.tight_layout()
    save_figure(fig, png)
    save_figure(fig, pdf)
    plt.close(fig)
    atomic_write_bytes(csv_path, text.getvalue().encode())
    write_json(js, record)
    print(f"wrote {png}, {pdf}, {js}, {csv_path}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paper_figs.figure4", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
