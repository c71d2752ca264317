"""Table 1: Invalid % and coarse-rule violations of DDPM samples per task, with exact binomial 95 % CIs,
beside three control sets that could have come out otherwise.

Reads run folders (``hidden-rules train`` + ``hidden-rules sample``), evaluates each run's samples
and its control sets (``empirics.controls``: fresh renders never trained on, the same degraded by
blur + JPEG, and the matched null with the samples' background, colours, blur and noise, as many
images as samples) with the rule evaluator, and writes ``table1.json`` (every number, the paper's
beside ours, the invalid reasons, the fine-rule fit, and per metric the control rows with the
verdicts ``differs_from_controls`` / ``evidence``), ``table1.csv`` (one line per task and set) and
``table1.png`` (Invalid % with CIs of the samples, the controls and the paper). A metric counts as
evidence about the model only where the samples' 95 % CI is disjoint from every control's.
Run: ``hidden-rules table1 runs/A runs/B runs/C runs/D``.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys

from empirics.evaluator.controls import ControlKind, Metric
from empirics.runs import rule_table_row
from paper_figs._io import atomic_write_bytes, prepare_outputs, save_figure, write_json
from paper_figs._runs import PAPER_DDPM, PAPER_TABLE1, add_run_arguments, load_controls, load_runs

SETS = ("samples",) + tuple(k.value for k in ControlKind)
CSV_METRICS = (Metric.INVALID_PERCENT, Metric.COARSE_VIOLATION_PERCENT, Metric.R2, Metric.ERROR,
               Metric.CONFORMING_FRACTION)
COLUMNS = (("task", "set", "samples", "train_step", "n_images")
           + tuple(f"{m.value}{part}" for m in CSV_METRICS for part in ("", "_ci_lo", "_ci_hi", "_differs_from"))
           + ("coarse_violations", "train_conforming_fraction", "paper_invalid_percent", "paper_coarse_violations"))
COLOURS = {"samples": "#4c72b0", "fresh": "#55a868", "degraded": "#dd8452", "matched": "#8172b3", "paper": "#bbbbbb"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)


def run(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    png, js, csv_path = prepare_outputs(args.out, ["table1.png", "table1.json", "table1.csv"], args.overwrite)
    runs = load_runs(args)
    controls = load_controls(args, runs)
    rows = [rule_table_row(rev, n_boot=args.n_boot, seed=args.seed, controls=c) for rev, c in zip(runs, controls)]
    for row in rows:
        row["paper"] = {**PAPER_TABLE1[row["task"]], **PAPER_DDPM[row["task"]]}
    text = io.StringIO()
    w = csv.writer(text)
    w.writerow(COLUMNS)
    for r in rows:
        ctl = r["controls"]["metrics"]
        for name in SETS:
            cells = [r["task"], name, r["samples"], r["train_step"] if name == "samples" else "",
                     r["n_samples"] if name == "samples" else r["controls"]["n_per_control"]]
            for m in CSV_METRICS:
                est = ctl[m.value]["samples"] if name == "samples" else ctl[m.value]["controls"][name]
                digits = 2 if m in (Metric.INVALID_PERCENT, Metric.COARSE_VIOLATION_PERCENT) else 4
                cells += [_fmt(est["value"], digits), _fmt(est["ci95"][0], digits), _fmt(est["ci95"][1], digits),
                          "|".join(ctl[m.value]["differs_from_controls"]) if name == "samples" else ""]
            mine = name == "samples"
            cells += [r["coarse_violations"] if mine else "", _fmt(r["train_conforming_fraction"], 4) if mine else "",
                      r["paper"]["invalid_percent"] if mine else "", r["paper"]["coarse_violations"] if mine else ""]
            w.writerow(cells)
    atomic_write_bytes(csv_path, text.getvalue().encode())
    write_json(js, {"table": "Table 1", "sets": list(SETS),
                    "verdict": "a metric is evidence about the model only where the samples' 95 % CI is "
                               "disjoint from every control's (controls.<metric>.evidence)", "rows": rows})

    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    width = 0.16
    for j, name in enumerate(SETS + ("paper",)):
        xs = [i + (j - 2) * width for i in range(len(rows))]
        if name == "paper":
            ax.bar(xs, [r["paper"]["invalid_percent"] for r in rows], width, color=COLOURS[name], label=name)
            continue
        ests = [(r["controls"]["metrics"][Metric.INVALID_PERCENT.value]["samples"] if name == "samples" else
                 r["controls"]["metrics"][Metric.INVALID_PERCENT.value]["controls"][name]) for r in rows]
        vals = [e["value"] for e in ests]
        err = [[v - e["ci95"][0] for v, e in zip(vals, ests)], [e["ci95"][1] - v for v, e in zip(vals, ests)]]
        ax.bar(xs, vals, width, yerr=err, capsize=2, color=COLOURS[name], label=name)
    labels = []
    for r in rows:
        diff = r["controls"]["metrics"][Metric.INVALID_PERCENT.value]["differs_from_controls"]
        labels.append(f"Task {r['task']}\n{r['coarse_violations']} coarse viol.\n"
                      f"differs from: {', '.join(diff) or 'none'}")
    ax.set_xticks(list(range(len(rows))), labels, fontsize=6)
    ax.set_ylabel("Invalid (%)")
    ax.set_title("Table 1: invalid images (95 % CI), samples beside controls", fontsize=9)
    ax.legend(fontsize=6, ncol=5)
    fig.tight_layout()
    save_figure(fig, png)
    plt.close(fig)
    for r in rows:
        print(f"Task {r['task']}: Invalid {r['invalid_percent']:.2f} % [{r['invalid_percent_ci95'][0]:.2f}, "
              f"{r['invalid_percent_ci95'][1]:.2f}] (paper {r['paper']['invalid_percent']}), coarse violations "
              f"{r['coarse_violations']} of {r['n_valid']} valid (paper {r['paper']['coarse_violations']})")
        for m in CSV_METRICS:
            row = r["controls"]["metrics"][m.value]
            ctl = ", ".join(f"{k} {_fmt(v['value'], 4)}" for k, v in row["controls"].items())
            print(f"  {m.value}: samples {_fmt(row['samples']['value'], 4)}; {ctl}; differs from: "
                  f"{', '.join(row['differs_from_controls']) or 'none'}{' (evidence)' if row['evidence'] else ''}")
    print(f"wrote {png}, {js}, {csv_path}")
    return 0


def _fmt(v, digits: int = 2) -> str:
    return "" if v is None else f"{v:.{digits}f}"


if __name__ == "__main__":  # python -m paper_figs.table1 ...: the verb 'table1' of hidden-rules
    from cli import run_verb

    sys.exit(run_verb('table1'))
