"""Table 2: Error (eq. (4)) and R^2 of DDPM, Guided DDPM, Filtered DDPM and an oracle filter, over run folders.

Reads run folders that hold unguided samples, guided samples (``hidden-rules sample --classifier``),
the guidance classifier (``hidden-rules classifier``) and a filter classifier (``hidden-rules filter``),
and writes ``table2.json`` (every number with bootstrap 95 % CIs, the kept fractions, each filter's
random-subset null with its p-values, the classifiers' accuracies, the paper's numbers beside ours),
``table2.csv`` and ``table2.png``. A missing piece leaves its column empty.
Run: ``hidden-rules table2 runs/A runs/B runs/C runs/D --samples ddim-50-eta1``.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys

from cli.types import BOOT, SEED
from empirics.mitigation import table2_row
from paper_figs._io import add_output_arguments, atomic_write_bytes, prepare_outputs, save_figure, write_json

# Table 2 of the paper (Error and R^2 per task and method).
PAPER_TABLE2 = {"A": {"ddpm": (0.25, 0.85), "guidance": (0.21, 0.90), "filtering": (0.17, 0.90)},
                "B": {"ddpm": (0.11, 0.83), "guidance": (0.10, 0.85), "filtering": (0.05, 0.86)},
                "C": {"ddpm": (0.41, 0.57), "guidance": (0.26, 0.67), "filtering": (0.25, 0.64)},
                "D": {"ddpm": (0.46, 0.79), "guidance": (0.43, 0.84), "filtering": (0.39, 0.85)}}
METHODS = ("ddpm", "guidance", "filtering", "oracle")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", help="run folders (one per task)")
    p.add_argument("--samples", required=True, help="the unguided sample set of every run (e.g. ddim-50-eta1)")
    p.add_argument("--guided", default=None,
                   help="the guided sample set (default: each run's only <samples>-guided-* set)")
    p.add_argument("--filter", default="best", choices=("best", "mlp", "resnet8", "unet_encoder"),
                   help="filter classifier of each run (<run>/filters/<arch>.pt); default best: the run's filter "
                        "with the highest test accuracy, the paper's rule (App. G.2)")
    p.add_argument("--threshold", type=float, default=0.0,
                   help="keep samples predicted as class 1 with p(class 1) >= this (default 0: the paper's rule)")
    p.add_argument("--oracle-tolerance", type=float, default=0.05,
                   help="oracle filter: keep samples whose measured y/(kx) is within this of 1 (default 0.05)")
    add_output_arguments(p)
    p.add_argument("--n-boot", type=BOOT, default=1000, help="bootstrap replicates for the 95%% CIs (default 1000)")
    p.add_argument("--seed", type=SEED, default=0, help="bootstrap seed (default 0)")


def run(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    png, js, csv_path = prepare_outputs(args.out, ["table2.png", "table2.json", "table2.csv"], args.overwrite)
    rows = []
    for r in args.runs:
        try:
            row = table2_row(r, args.samples, guided=args.guided, filter_arch=args.filter, threshold=args.threshold,
                             oracle_tolerance=args.oracle_tolerance, n_boot=args.n_boot, seed=args.seed)
        except ValueError as exc:
            raise ValueError(f"{r}: {exc}") from exc
        row["paper"] = {m: {"error": e, "r2": q} for m, (e, q) in PAPER_TABLE2[row["task"]].items()}
        rows.append(row)
    tasks = [r["task"] for r in rows]
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"give one run per task; got tasks {tasks}")
    text = io.StringIO()
    w = csv.writer(text)
    w.writerow(["task", "method", "n", "kept_fraction", "error", "error_ci_lo", "error_ci_hi", "r2", "r2_ci_lo",
                "r2_ci_hi", "paper_error", "paper_r2", "random_subset_error_median", "random_subset_r2_median",
                "p_error_lower", "p_r2_higher"])
    for r in rows:
        for m in METHODS:
            v = r[m]
            if v is None:
                continue
            eci, rci = v["error_ci95"] or (None, None), v["r2_ci95"] or (None, None)
            paper = r["paper"].get(m, {})
            null = v.get("random_subset") or {}
            rand = null.get("random", {})
            w.writerow([r["task"], m, v["n"], _fmt(v["kept_fraction"], 4), _fmt(v["error"], 4), _fmt(eci[0], 4),
                        _fmt(eci[1], 4), _fmt(v["r2"], 4), _fmt(rci[0], 4), _fmt(rci[1], 4),
                        paper.get("error", ""), paper.get("r2", ""),
                        _fmt(rand.get("error", {}).get("median"), 4), _fmt(rand.get("r2", {}).get("median"), 4),
                        _fmt(null.get("p_error_lower"), 4), _fmt(null.get("p_r2_higher"), 4)])
    atomic_write_bytes(csv_path, text.getvalue().encode())
    write_json(js, {"table": "Table 2", "samples": args.samples, "filter": args.filter, "threshold": args.threshold,
                    "oracle_tolerance": args.oracle_tolerance, "rows": rows})

    fig, axes = plt.subplots(1, 3, figsize=(11.0, 3.0))
    width = 0.8 / len(METHODS)
    for j, m in enumerate(METHODS):
        xs = [i + (j - 1.5) * width for i in range(len(rows))]
        for ax, key in zip(axes[:2], ("error", "r2")):
            vals = [r[m][key] if r[m] is not None and r[m][key] is not None else float("nan") for r in rows]
            ax.bar(xs, vals, width, label=m)
    for ax, key, title in zip(axes, ("error", "r2"), ("Error eq. (4) (lower is better)", "R² (higher is better)")):
        for i, r in enumerate(rows):
            for j, m in enumerate(METHODS[:3]):
                ax.plot(i + (j - 1.5) * width, r["paper"][m][key], "k_", ms=8)
        ax.set_xticks(range(len(rows)), [f"Task {t}" for t in tasks], fontsize=8)
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=7, title="ours (bars), paper (—)", title_fontsize=7)
    # Fig. 18: each filter architecture's test accuracy; the paper's lie between 60 and 80 %.
    archs = ("mlp", "resnet8", "unet_encoder")
    aw = 0.8 / len(archs)
    for j, a in enumerate(archs):
        vals = [r["filters_test_accuracy"].get(a) for r in rows]
        axes[2].bar([i + (j - 1) * aw for i in range(len(rows))],
                    [float("nan") if v is None else 100 * v for v in vals], aw, label=a)
    axes[2].axhspan(60, 80, color="0.85", zorder=0, label="paper (Fig. 18)")
    axes[2].axhline(100 / 3, color="k", lw=0.6, ls=":")
    axes[2].set_xticks(range(len(rows)), [f"Task {t}" for t in tasks], fontsize=8)
    axes[2].set_xlim(-0.5, len(rows) - 0.5)   # bars of missing filters are NaN and do not set the limits
    axes[2].set_ylim(0, 125)
    axes[2].set_yticks(range(0, 101, 20))
    axes[2].set_title("Filter test accuracy % (Fig. 18; dotted: chance)", fontsize=9)
    axes[2].legend(fontsize=7, ncol=2, loc="upper center")
    fig.tight_layout()
    save_figure(fig, png)
    plt.close(fig)
    for r in rows:
        parts = [f"{m} Error {r[m]['error']:.3f} R² {r[m]['r2']:.3f} (kept {100 * r[m]['kept_fraction']:.1f} %)"
                 if r[m] is not None and r[m]["error"] is not None else f"{m} -" for m in METHODS]
        print(f"Task {r['task']}: " + "; ".join(parts))
    print(f"wrote {png}, {js}, {csv_path}")
    return 0


def _fmt(v, digits: int = 2) -> str:
    return "" if v is None else f"{v:.{digits}f}"


if __name__ == "__main__":  # python -m paper_figs.table2 ...: the verb 'table2' of hidden-rules
    from cli import run_verb

    sys.exit(run_verb('table2'))
