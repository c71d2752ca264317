"""Marginal fidelity per task, beside Table 1: background, colours, feature marginals, training support, and
the fine rule inside the support, each beside fresh renders never trained on (``empirics.marginals``).

Writes ``marginals.json`` (every number), ``marginals.csv`` (the same numbers, one per row: task, quantity
path, value), ``marginals.png``/``.pdf`` (per task: background level and every feature's histogram, samples
against training and fresh renders) and ``marginals_rule.png``/``.pdf`` (per task: y against x with the
samples outside the training support marked and the fits on all and inside; the ratio error against x in
quantile bins, samples against fresh). Run:
``hidden-rules marginals runs/A runs/B runs/C runs/D --samples ddim-50-eta1 --out DIR``.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

import numpy as np

from cli.types import FiniteFloat, IntRange, positive_int
from empirics.evaluator.marginals import SUPPORT_WIDEN, run_marginals
from empirics.tasks import SPECS, TARGET_SLOPE
from paper_figs._io import atomic_write_bytes, prepare_outputs, save_figure, write_json
from paper_figs._plots import AXIS_LABELS
from paper_figs._runs import add_run_arguments, load_runs

OUTPUTS = ["marginals.json", "marginals.csv", "marginals.png", "marginals.pdf", "marginals_rule.png",
           "marginals_rule.pdf"]
COLOURS = {"samples": "#4c72b0", "training": "#999999", "fresh": "#55a868"}
PANELS_PER_ROW = 7


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)
    p.add_argument("--widen", type=FiniteFloat(0.0, 1.0, closed_hi=False), default=SUPPORT_WIDEN,
                   help=f"widen the training support [min, max] by this share of each bound (default {SUPPORT_WIDEN})")
    p.add_argument("--bins", type=positive_int(10_000), default=6,
                   help="quantile bins of x for the ratio error (default 6)")
    p.add_argument("--n-fresh", type=IntRange(2, 1_000_000), default=None,
                   help="fresh renders per task (default: as many as samples)")


def _flatten(prefix: str, obj, rows: list) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, rows)
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            _flatten(f"{prefix}[{i}]", v, rows)
    else:
        rows.append((prefix, obj))


def run(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if Path(args.out).exists():  # refuse existing outputs before the work; create no folder before it succeeds
        prepare_outputs(args.out, OUTPUTS, args.overwrite)
    results = [run_marginals(rev, n_fresh=args.n_fresh, widen=args.widen, n_boot=args.n_boot, seed=args.seed,
                             n_bins=args.bins) for rev in load_runs(args)]
    js, csv_path, png, pdf, rule_png, rule_pdf = prepare_outputs(args.out, OUTPUTS, args.overwrite)
    _write_numbers(results, args, js, csv_path)
    fig = _histograms(plt, results)
    save_figure(fig, png)
    save_figure(fig, pdf)
    plt.close(fig)
    fig = _rule_panels(plt, results, args.widen)
    save_figure(fig, rule_png)
    save_figure(fig, rule_pdf)
    plt.close(fig)
    _report(results, args.widen)
    print(f"wrote {js}, {csv_path}, {png}, {pdf}, {rule_png}, {rule_pdf}")
    return 0


def _write_numbers(results, args, js, csv_path) -> None:
    """marginals.csv (task, quantity path, value) and marginals.json."""
    rows: list = []
    for m in results:
        flat: list = []
        _flatten("", m.summary, flat)
        rows += [(m.task.value, path, value) for path, value in flat if path != "task"]
    text = io.StringIO()
    w = csv.writer(text)
    w.writerow(("task", "quantity", "value"))
    w.writerows(rows)
    atomic_write_bytes(csv_path, text.getvalue().encode())
    write_json(js, {"what": "marginal fidelity of DDPM samples against the training set, beside fresh renders",
                    "samples": args.samples, "widen": args.widen,
                    "tasks": {m.task.value: m.summary for m in results}})


def _histograms(plt, results):
    """Figure 1: histograms, samples against training and fresh renders."""
    layout = []
    for m in results:
        keys = ["background"] + list(SPECS[m.task].features)
        layout += [(m, keys[i:i + PANELS_PER_ROW]) for i in range(0, len(keys), PANELS_PER_ROW)]
    fig, axes = plt.subplots(len(layout), PANELS_PER_ROW, figsize=(2.1 * PANELS_PER_ROW, 1.8 * len(layout)),
                             squeeze=False)
    for row, (m, keys) in enumerate(layout):
        for col in range(PANELS_PER_ROW):
            ax = axes[row, col]
            if col >= len(keys):
                ax.axis("off")
                continue
            key = keys[col]
            if key == "background":
                data = {s: m.background[s] for s in m.background}
                title = f"Task {m.task.value}: background level"
            else:
                data = {s: ev.features[key][ev.valid & np.isfinite(ev.features[key])]
                        for s, ev in m.evaluations.items()}
                d = m.summary["feature_distance"]["samples_vs_training"][key]
                title = f"{m.task.value}: {key}\nW1 {d['w1_px']:.2f} px, KS {d['ks']:.2f}"
            edges = np.histogram_bin_edges(np.concatenate(list(data.values())), bins=30)
            for s in ("training", "fresh", "samples"):
                ax.hist(data[s], bins=edges, density=True, histtype="stepfilled" if s == "training" else "step",
                        color=COLOURS[s], alpha=0.5 if s == "training" else 1.0, lw=1.2, label=s)
            ax.set_title(title, fontsize=7)
            ax.tick_params(labelsize=6)
            ax.set_yticks([])
    axes[0, 0].legend(fontsize=6)
    fig.tight_layout()
    return fig


def _rule_panels(plt, results, widen: float):
    """Figure 2: the rule inside the training support, and the ratio error against size."""
    fig, axes = plt.subplots(2, len(results), figsize=(3.6 * len(results), 6.4), squeeze=False)
    for j, m in enumerate(results):
        ev, k, s = m.evaluations["samples"], TARGET_SLOPE[m.task], m.summary
        inside = m.support["samples"]
        ax = axes[0, j]
        out = ev.valid & ~inside
        ax.scatter(ev.x[inside], ev.y[inside], s=3, color=COLOURS["samples"], alpha=0.5, label="inside support")
        ax.scatter(ev.x[out], ev.y[out], s=3, color="#dd8452", alpha=0.6, label="outside support")
        grid = np.linspace(np.nanmin(ev.x[ev.valid]), np.nanmax(ev.x[ev.valid]), 2)
        ax.plot(grid, k * grid, color="#c44e52", lw=2, label=f"y = {k:.3g} x")
        fit_in = s["fit"][f"samples_inside_rule_lengths_widen{widen:g}"]
        for name, f, style in (("all", s["fit"]["samples_all"], "--"), ("inside", fit_in, ":")):
            if f.get("beta1") is not None:
                ax.plot(grid, f["beta1"] * grid + f["beta0"], style, color="black", lw=1.2,
                        label=f"{name}: slope {f['beta1']:.3f}, $R^2$ {f['r2']:.3f}, Error {f['error']:.3f}")
        xl, yl = AXIS_LABELS[m.task]
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.set_title(f"Task {m.task.value}: samples, training support", fontsize=9)
        ax.legend(fontsize=5.5, loc="upper left")
        ax.tick_params(labelsize=7)
        ax = axes[1, j]
        for name in ("samples", "fresh"):
            bins = [b for b in s["ratio_error_by_size"][name] if b["median_abs_error"] is not None]
            if not bins:
                continue
            xs = [b["median_x"] for b in bins]
            med = [b["median_abs_error"] for b in bins]
            cis = [b["median_abs_error_ci95"] or [b["median_abs_error"]] * 2 for b in bins]
            err = [[mm - c[0] for mm, c in zip(med, cis)], [c[1] - mm for mm, c in zip(med, cis)]]
            ax.errorbar(xs, med, yerr=err, marker="o", ms=3, capsize=2, color=COLOURS[name], label=name)
        ax.set_yscale("log")
        ax.set_xlabel(f"{xl} (bin median; quantile bins of the samples)")
        ax.set_ylabel("median |y / (k x) - 1| (95 % CI)")
        ax.legend(fontsize=6)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def _report(results, widen: float) -> None:
    for m in results:
        s = m.summary
        bg = s["background"]["samples"]
        sup = s["support"]["samples"]["outside"]["any_rule_length"]
        fin = s["fit"][f"samples_inside_rule_lengths_widen{widen:g}"]
        print(f"Task {m.task.value}: background median {bg['median']:.0f} (< {bg['white_level']:.0f} in "
              f"{100 * bg['share_below_white']:.1f} %); outside the training support {100 * sup['share']:.1f} % of "
              f"valid; R^2 / Error all {s['fit']['samples_all']['r2']:.3f} / {s['fit']['samples_all']['error']:.3f},"
              f" inside {fin['r2'] if fin['r2'] is None else round(fin['r2'], 3)} / "
              f"{fin['error'] if fin['error'] is None else round(fin['error'], 3)}")


if __name__ == "__main__":  # python -m paper_figs.marginals ...: the verb 'marginals' of hidden-rules
    from cli import run_verb

    sys.exit(run_verb('marginals'))
