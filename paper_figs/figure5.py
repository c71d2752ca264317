"""Figure 5 and Figure 11: rule-conforming samples and whether they are memorized.

(a) the share of valid samples whose fine ratio is within +-1 % of the rule's (``conforming``),
for DDPM samples, the training data and the three controls of ``empirics.controls`` (fresh renders,
the same degraded, the matched null); (b) replica curves (``empirics.memorization.replica_curves``):
the share of conforming samples, of all valid samples, of fresh draws (the null, never trained on),
of the matched null and of the training set itself (leave-one-out) whose nearest training image is
closer than each threshold, in the lengths space, lengths + colours (App. D.2) and whitened pixels
(raw pixels in the JSON); the JSON says per task and space whether the samples are closer to the
training set than fresh draws are (``novelty_test``). Figure 11: up to 10 conforming samples per task
with their three nearest training images in each space, pixels included.

Writes ``figure5.png``/``.pdf`` ((a) and (b)), ``figure11_<task>.png``, ``figure5.json`` and
``figure5.csv`` (each conforming sample's nearest-neighbour distances and indices).
Run: ``hidden-rules figure5 runs/A runs/B runs/C runs/D``.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys

from cli.types import FiniteFloat, IntRange
from empirics.evaluator.controls import ControlKind
from empirics.evaluator.memorization import REPLICA_THRESHOLDS, MeasuredImages, ReplicaSet, Space, replica_curves
from empirics.evaluator.metrics import binomial_ci, conforming
from empirics.runs import rule_table_row
from empirics.tasks import TARGET_SLOPE
from paper_figs._io import atomic_write_bytes, prepare_outputs, save_figure, write_json
from paper_figs._runs import add_run_arguments, load_controls, load_runs


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)
    p.add_argument("--rtol", type=FiniteFloat(0.0, 1.0, closed_lo=False, closed_hi=False), default=0.01,
                   help="conforming: |ratio - k| <= rtol k (default 0.01)")
    p.add_argument("--show", type=IntRange(0, 10_000), default=10,
                   help="conforming samples shown in Figure 11 (default 10)")

_SPACE_LABEL = {Space.LENGTHS: "lengths", Space.LENGTHS_COLOURS: "lengths + colours",
                Space.PIXELS: "whitened pixels", Space.PIXELS_RAW: "raw pixels"}
_SET_STYLE = {ReplicaSet.CONFORMING: ("C3", "-", "conforming samples"), ReplicaSet.VALID: ("C0", "-", "valid samples"),
              ReplicaSet.FRESH: ("k", "--", "fresh draws (null)"), ReplicaSet.MATCHED: ("C2", ":", "matched null"),
              ReplicaSet.TRAIN_LOO: ("0.6", "-.", "training, leave-one-out")}
_PANEL_A = ("DDPM", "training data", *(f"{k.value} control" for k in ControlKind))


def _conforming_share(ev, rtol: float) -> dict:
    """Conforming fraction of the valid images with its exact binomial CI (Fig. 5a)."""
    n_valid = int(ev.valid.sum())
    hits = int(conforming(ev.x[ev.valid], ev.y[ev.valid], TARGET_SLOPE[ev.task], rtol).sum()) if n_valid else 0
    return {"n_valid": n_valid, "conforming": hits, "fraction": hits / n_valid if n_valid else None,
            "ci95": list(binomial_ci(hits, n_valid))}


def _neighbour_grid(plt, rev, mem, curves, show: int):
    n = min(show, mem.conforming.size)
    fig, axes = plt.subplots(max(n, 1), 10, figsize=(10 * 0.9, max(n, 1) * 0.95), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    titles = ["sample", "lengths #1", "#2", "#3", "+colours #1", "#2", "#3", "pixels #1", "#2", "#3"]
    pix = curves.neighbours[(Space.PIXELS, ReplicaSet.CONFORMING)]
    for r in range(n):
        i = mem.conforming[r]
        row = [rev.samples.images[i]] + [rev.train.images[j] for j in mem.index_structure[r]] \
            + [rev.train.images[j] if j >= 0 else None for j in mem.index_colour[r]] \
            + [rev.train.images[j] for j in pix.index[r]]
        dists = [None, *mem.distance_structure[r], *mem.distance_colour[r], *pix.distance[r]]
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


def _replica_panels(fig, grid, j: int, rev, curves, plotted) -> None:
    """Row j + 1 of Figure 5: the replica-share curves of one task, one panel per space."""
    for c, space in enumerate(plotted):
        ax = fig.add_subplot(grid[j + 1, c])
        t = curves.thresholds(space)
        for g in curves.groups:
            if curves.distance(space, g).size:
                colour, style, label = _SET_STYLE[g]
                ax.plot(t, curves.curve(space, g, t), style, color=colour, lw=1.1, label=label)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"(b) Task {rev.task.value}, {_SPACE_LABEL[space]} ({curves.dims[space]}-D)", fontsize=8)
        ax.set_xlabel("distance threshold", fontsize=7)
        ax.tick_params(labelsize=6)
        if c == 0:
            ax.set_ylabel("replica share", fontsize=7)
        if j == 0 and c == len(plotted) - 1:
            ax.legend(fontsize=5.5)


def _csv_rows(w, rev, mem, curves) -> None:
    """figure5.csv: one row per rule-conforming sample with its nearest training images."""
    nn = {s: curves.neighbours[(s, ReplicaSet.CONFORMING)] for s in (Space.PIXELS, Space.PIXELS_RAW)}
    for r, i in enumerate(mem.conforming):
        colour = mem.has_colour[r]
        w.writerow([rev.task.value, int(i), int(rev.samples.seeds[i]), repr(float(rev.sample_eval.ratio[i])),
                    repr(float(mem.distance_structure[r, 0])), int(mem.index_structure[r, 0]),
                    repr(float(mem.distance_colour[r, 0])) if colour else "",
                    int(mem.index_colour[r, 0]) if colour else "",
                    repr(float(nn[Space.PIXELS].distance[r, 0])), int(nn[Space.PIXELS].index[r, 0]),
                    repr(float(nn[Space.PIXELS_RAW].distance[r, 0])), int(nn[Space.PIXELS_RAW].index[r, 0])])


def _report(rev, row, shares, summary) -> None:
    conf_s, conf_t = row["conforming_fraction"], row["train_conforming_fraction"]
    print(f"Task {rev.task.value}: conforming {'n/a' if conf_s is None else f'{conf_s:.3f}'} of valid samples "
          f"(training data {'n/a' if conf_t is None else f'{conf_t:.3f}'}, controls "
          + ", ".join(f"{k.value} {shares[f'{k.value} control']['fraction']:.3f}" for k in ControlKind) + ")")
    for space in Space:
        nov = summary["spaces"][space.value]["novelty"]["valid"]
        if nov is not None:
            print(f"  {space.value}: valid samples {nov['verdict']} (Mann-Whitney p_closer {nov['p_closer']:.3g}, "
                  f"p_farther {nov['p_farther']:.3g}); {nov['n_below']} of {nov['n_samples']} below the fresh "
                  f"draws' 1st percentile")


def run(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = load_runs(args)
    all_controls = load_controls(args, runs)
    names = ["figure5.png", "figure5.pdf", "figure5.json", "figure5.csv"] + [f"figure11_{r.task.value}.png"
                                                                             for r in runs]
    paths = prepare_outputs(args.out, names, args.overwrite)
    png, pdf, js, csv_path = paths[:4]
    record = {"figure": "Figure 5", "rtol": args.rtol, "thresholds": list(REPLICA_THRESHOLDS),
              "control_seed": args.control_seed, "tasks": {}}
    text = io.StringIO()
    w = csv.writer(text)
    w.writerow(["task", "sample", "seed", "ratio", "nn_structure", "nn_structure_index", "nn_colour",
                "nn_colour_index", "nn_pixels_whitened", "nn_pixels_whitened_index", "nn_pixels_raw",
                "nn_pixels_raw_index"])
    plotted = (Space.LENGTHS, Space.LENGTHS_COLOURS, Space.PIXELS)
    fig = plt.figure(figsize=(10, 2.4 * (len(runs) + 1.2)))
    grid = fig.add_gridspec(len(runs) + 1, len(plotted), height_ratios=[1.2] + [1] * len(runs))
    ax_a = fig.add_subplot(grid[0, :])
    width = 0.8 / len(_PANEL_A)
    for j, (rev, controls) in enumerate(zip(runs, all_controls)):
        row = rule_table_row(rev, n_boot=0)
        mem = rev.memorization(rtol=args.rtol)
        measured = {kind: MeasuredImages(controls.images[kind], controls.evaluations[kind]) for kind in ControlKind}
        curves = replica_curves(MeasuredImages(rev.samples.images, rev.sample_eval),
                                MeasuredImages(rev.train.images, rev.train_eval), measured[ControlKind.FRESH],
                                measured[ControlKind.MATCHED], rtol=args.rtol)
        shares = {"DDPM": _conforming_share(rev.sample_eval, args.rtol),
                  "training data": _conforming_share(rev.train_eval, args.rtol)}
        shares.update({f"{k.value} control": _conforming_share(controls.evaluations[k], args.rtol)
                       for k in ControlKind})
        summary = curves.summary()
        record["tasks"][rev.task.value] = {
            "samples": rev.samples.name, "n_samples": row["n_samples"], "n_valid": row["n_valid"],
            "conforming_fraction_samples": row["conforming_fraction"],
            "conforming_fraction_train": row["train_conforming_fraction"],
            "conforming": shares, "memorization": mem.summary(), "replica_curves": summary}
        for b, label in enumerate(_PANEL_A):
            sh = shares[label]
            frac = sh["fraction"] or 0.0
            x = j - 0.4 + width * (b + 0.5)
            ax_a.bar(x, frac, width, color=f"C{b}" if b else "#4c72b0", label=label if j == 0 else None)
            ax_a.errorbar(x, frac, yerr=[[frac - sh["ci95"][0]], [sh["ci95"][1] - frac]], color="k", lw=0.6,
                          capsize=1.5)
        _replica_panels(fig, grid, j, rev, curves, plotted)
        _csv_rows(w, rev, mem, curves)
        neighbour_fig = _neighbour_grid(plt, rev, mem, curves, args.show)
        save_figure(neighbour_fig, paths[4 + j])
        plt.close(neighbour_fig)
        _report(rev, row, shares, summary)
    ax_a.set_xticks(range(len(runs)), [f"Task {r.task.value}" for r in runs])
    ax_a.set_ylabel(f"conforming (|ratio - k| <= {args.rtol:g} k)", fontsize=8)
    ax_a.set_title("(a) rule-conforming fraction of valid images (95 % CIs)", fontsize=9)
    ax_a.set_ylim(0, 1.05)
    ax_a.legend(fontsize=6, ncol=len(_PANEL_A))
    fig.tight_layout()
    save_figure(fig, png)
    save_figure(fig, pdf)
    plt.close(fig)
    atomic_write_bytes(csv_path, text.getvalue().encode())
    write_json(js, record)
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0


if __name__ == "__main__":  # python -m paper_figs.figure5 ...: the verb 'figure5' of hidden-rules
    from cli import run_verb

    sys.exit(run_verb('figure5'))
