"""Table 1: Invalid % and coarse-rule violations of DDPM samples per task, with exact binomial 95 % CIs.

Reads run folders (``hidden-rules train`` + ``hidden-rules sample``), evaluates each run's samples
with the rule evaluator and writes ``table1.json`` (every number, the paper's beside ours, the
invalid reasons, the fine-rule fit), ``table1.csv`` and ``table1.png`` (Invalid % with CIs next to the
paper's). Run: ``hidden-rules table1 runs/A runs/B runs/C runs/D``.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys

from empirics.runs import rule_table_row
from paper_figs._io import atomic_write_bytes, prepare_outputs, save_figure, write_json
from paper_figs._runs import PAPER_DDPM, PAPER_TABLE1, add_run_arguments, load_runs

COLUMNS = ("task", "samples", "train_step", "n_samples", "invalid", "invalid_percent", "invalid_ci_lo",
           "invalid_ci_hi", "coarse_violations", "coarse_violation_percent_of_valid", "r2", "error",
           "conforming_fraction", "train_conforming_fraction", "paper_invalid_percent", "paper_coarse_violations")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)


def run(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    png, js, csv_path = prepare_outputs(args.out, ["table1.png", "table1.json", "table1.csv"], args.overwrite)
    rows = [rule_table_row(rev, n_boot=args.n_boot, seed=args.seed) for rev in load_runs(args)]
    for row in rows:
        row["paper"] = {**PAPER_TABLE1[row["task"]], **PAPER_DDPM[row["task"]]}
    text = io.StringIO()
    w = csv.writer(text)
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow([r["task"], r["samples"], r["train_step"], r["n_samples"], r["invalid"],
                    f"{r['invalid_percent']:.2f}", f"{r['invalid_percent_ci95'][0]:.2f}",
                    f"{r['invalid_percent_ci95'][1]:.2f}", r["coarse_violations"],
                    _fmt(r["coarse_violation_percent_of_valid"]), _fmt(r["fit"]["r2"], 4), _fmt(r["fit"]["error"], 4),
                    _fmt(r["conforming_fraction"], 4), _fmt(r["train_conforming_fraction"], 4),
                    r["paper"]["invalid_percent"], r["paper"]["coarse_violations"]])
    atomic_write_bytes(csv_path, text.getvalue().encode())
    write_json(js, {"table": "Table 1", "rows": rows})

    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    xs = range(len(rows))
    ours = [r["invalid_percent"] for r in rows]
    err = [[o - r["invalid_percent_ci95"][0] for o, r in zip(ours, rows)],
           [r["invalid_percent_ci95"][1] - o for o, r in zip(ours, rows)]]
    ax.bar([x - 0.2 for x in xs], ours, 0.4, yerr=err, capsize=3, color="#4c72b0", label="ours")
    ax.bar([x + 0.2 for x in xs], [r["paper"]["invalid_percent"] for r in rows], 0.4, color="#bbbbbb", label="paper")
    ax.set_xticks(list(xs), [f"Task {r['task']}\n{r['coarse_violations']} coarse viol." for r in rows], fontsize=7)
    ax.set_ylabel("Invalid (%)")
    ax.set_title("Table 1: invalid samples (95 % CI)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, png)
    plt.close(fig)
    for r in rows:
        print(f"Task {r['task']}: Invalid {r['invalid_percent']:.2f} % [{r['invalid_percent_ci95'][0]:.2f}, "
              f"{r['invalid_percent_ci95'][1]:.2f}] (paper {r['paper']['invalid_percent']}), coarse violations "
              f"{r['coarse_violations']} of {r['n_valid']} valid (paper {r['paper']['coarse_violations']})")
    print(f"wrote {png}, {js}, {csv_path}")
    return 0


def _fmt(v, digits: int = 2) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paper_figs.table1", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
