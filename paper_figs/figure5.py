"""Figure 5 and Figure 11: rule-conforming samples and whether they are memorized.

(a) the share of valid samples whose fine ratio is within +-1 % of the rule's (``conforming``),
for DDPM samples and for the training data side by side; (b) the share of conforming samples whose
nearest training image (App. D.2's feature space, with and without element colours) is closer
than each threshold (replicas); Figure 11: up to 10 conforming samples per task with their three
nearest training images in each space.

Writes ``figure5.png``/``.pdf`` ((a) and (b)), ``figure11_<task>.png``, ``figure5.json`` and
``figure5.csv`` (each conforming sample's nearest-neighbour distances and indices).
Run: ``hidden-rules figure5 runs/A runs/B runs/C runs/D``.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys

from empirics.memorization import REPLICA_THRESHOLDS
from empirics.runs import rule_table_row
from paper_figs._io import atomic_write_bytes, prepare_outputs, save_figure, write_json
from paper_figs._runs import add_run_arguments, load_runs


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)
    p.add_argument("--rtol", type=float, default=0.01, help="conforming: |ratio - k| <= rtol k (default 0.01)")
    p.add_argument("--show", type=int, default=10, help="conforming samples shown in Figure 11 (default 10)")


def _neighbour_grid(plt, rev, mem, show: int):
    n = min(show, mem.conforming.size)
    fig, axes = plt.subplots(max(n, 1), 7, figsize=(7 * 0.9, max(n, 1) * 0.95), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    titles = ["sample", "4-D #1", "#2", "#3", "full #1", "#2", "#3"]
    for r in range(n):
        i = mem.conforming[r]
        row = [rev.samples.images[i]] + [rev.train.images[j] for j in mem.index_structure[r]] \
            + [rev.train.images[j] if j >= 0 else None for j in mem.index_colour[r]]
        dists = [None, *mem.distance_structure[r], *mem.distance_colour[r]]
        for c, (img, d) in enumerate(zip(row, dists)):
            if img is None:  # colours not measurable: no 13-D neighbour
                axes[r][c].set_title((titles[c] if r == 0 else "") + "\nn/a", fontsize=6)
                continue
            axes[r][c].imshow(img, interpolation="nearest")
            label = titles[c] if r == 0 else ""
            axes[r][c].set_title(label + ("" if d is None else f"\n{d:.3f}"), fontsize=6)
    fig.suptitle(f"Figure 11, Task {rev.task.value}: conforming samples and their nearest training images",
                 fontsize=7)
    fig.tight_layout()
    return fig


def run(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not 0 < args.rtol < 1:
        raise ValueError(f"--rtol must be in (0, 1), got {args.rtol}")
    if args.show < 0:
        raise ValueError(f"--show must be >= 0, got {args.show}")
    runs = load_runs(args)
    names = ["figure5.png", "figure5.pdf", "figure5.json", "figure5.csv"] + [f"figure11_{r.task.value}.png"
                                                                             for r in runs]
    paths = prepare_outputs(args.out, names, args.overwrite)
    png, pdf, js, csv_path = paths[:4]
    record = {"figure": "Figure 5", "rtol": args.rtol, "thresholds": list(REPLICA_THRESHOLDS), "tasks": {}}
    text = io.StringIO()
    w = csv.writer(text)
    w.writerow(["task", "sample", "seed", "ratio", "nn_structure", "nn_structure_index", "nn_colour",
                "nn_colour_index"])
    fig, (ax_a, ax_b) = plt.subplots(1, 2, figsize=(9, 3.3))
    for j, rev in enumerate(runs):
        row = rule_table_row(rev, n_boot=0)
        mem = rev.memorization(rtol=args.rtol)
        summary = mem.summary()
        record["tasks"][rev.task.value] = {
            "samples": rev.samples.name, "n_samples": row["n_samples"], "n_valid": row["n_valid"],
            "conforming_fraction_samples": row["conforming_fraction"],
            "conforming_fraction_train": row["train_conforming_fraction"], "memorization": summary}
        ax_a.bar(j - 0.2, row["conforming_fraction"] or 0.0, 0.4, color="#4c72b0", label="DDPM" if j == 0 else None)
        ax_a.bar(j + 0.2, row["train_conforming_fraction"] or 0.0, 0.4, color="#bbbbbb",
                 label="training data" if j == 0 else None)
        if mem.conforming.size:
            for space, style in (("structure", "-"), ("colour", "--")):
                fr = summary[f"replica_fraction_{space}"]
                ax_b.plot(REPLICA_THRESHOLDS, [fr[str(t)] for t in REPLICA_THRESHOLDS], style, marker="o", ms=3,
                          color=f"C{j}", label=f"{rev.task.value} {'lengths' if space == 'structure' else '+ colours'}")
        for r, i in enumerate(mem.conforming):
            colour = mem.has_colour[r]
            w.writerow([rev.task.value, int(i), int(rev.samples.seeds[i]), repr(float(rev.sample_eval.ratio[i])),
                        repr(float(mem.distance_structure[r, 0])), int(mem.index_structure[r, 0]),
                        repr(float(mem.distance_colour[r, 0])) if colour else "",
                        int(mem.index_colour[r, 0]) if colour else ""])
        grid = _neighbour_grid(plt, rev, mem, args.show)
        save_figure(grid, paths[4 + j])
        plt.close(grid)
        def med(stats):
            return "n/a" if stats is None else f"{stats['median']:.4f}"

        conf_s, conf_t = row["conforming_fraction"], row["train_conforming_fraction"]
        print(f"Task {rev.task.value}: conforming {'n/a' if conf_s is None else f'{conf_s:.3f}'} of valid samples "
              f"(training data {'n/a' if conf_t is None else f'{conf_t:.3f}'}); {mem.conforming.size} conforming "
              f"samples ({summary['n_conforming_with_colours']} with measurable colours), median distance to the "
              f"nearest training image {med(summary['nn_distance_structure'])} (lengths), "
              f"{med(summary['nn_distance_colour'])} (+ colours)")
    ax_a.set_xticks(range(len(runs)), [f"Task {r.task.value}" for r in runs])
    ax_a.set_ylabel(f"conforming (|ratio - k| <= {args.rtol:g} k)")
    ax_a.set_title("(a) rule-conforming fraction", fontsize=9)
    ax_a.set_ylim(0, 1.05)
    ax_a.legend(fontsize=7)
    ax_b.set_xlabel("distance threshold")
    ax_b.set_ylabel("replica fraction of conforming samples")
    ax_b.set_title("(b) memorization (nearest training image)", fontsize=9)
    ax_b.set_ylim(-0.02, 1.02)
    if ax_b.lines:
        ax_b.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    save_figure(fig, png)
    save_figure(fig, pdf)
    plt.close(fig)
    atomic_write_bytes(csv_path, text.getvalue().encode())
    write_json(js, record)
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paper_figs.figure5", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
