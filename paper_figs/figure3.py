"""Figure 3: the rule evaluator on each task's synthetic training data.

For Tasks A-D the training sets of Section 3.2 (4000, 2000, 2000, 2000 images at 32 px) are
generated (App. C), measured by the evaluator (Fig. 2 pipeline, ``empirics.evaluate``) and each
panel shows y against x for the images within the [2.5 %, 97.5 %] ratio percentiles, the
estimation line y = b1 x + b0 (trimmed OLS), the ground-truth line y = k x, R^2 and Error (eq. (4)).
``--degrade`` repeats it on blurred + JPEG-compressed copies (robustness of the evaluator).

Writes ``figure3.png``, ``figure3.pdf``, ``figure3.json`` (every summary, the feature errors
against the ground truth in pixels, the settings) and ``figure3.csv`` (one row per image).
Run: ``python -m paper_figs.figure3`` or ``hidden-rules figure3``.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time

from cli.types import BOOT, FINITE, SEED, IntRange, positive_int
from empirics.evaluate import evaluate
from empirics.tasks import TRAIN_SIZES, Task, degrade, generate
from paper_figs._io import add_output_arguments, atomic_write_bytes, prepare_outputs, save_figure, write_json
from paper_figs._plots import rule_panel


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_output_arguments(p)
    p.add_argument("--tasks", nargs="+", default=["A", "B", "C", "D"], choices=["A", "B", "C", "D"],
                   help="tasks (default: A B C D)")
    p.add_argument("--n", type=IntRange(3, 1_000_000), default=None,
                   help="images per task (default: Section 3.2's 4000/2000/2000/2000)")
    p.add_argument("--size", type=IntRange(16, 1024), default=32, help="image size in px (default 32)")
    p.add_argument("--seed", type=SEED, default=0, help="data seed (default 0)")
    p.add_argument("--trim", type=FINITE, nargs=2, default=(2.5, 97.5), metavar=("LO", "HI"),
                   help="ratio percentiles kept for the fit (default 2.5 97.5)")
    p.add_argument("--n-boot", type=BOOT, default=1000, help="bootstrap replicates for the CIs (default 1000)")
    p.add_argument("--degrade", action="store_true", help="evaluate blurred (sigma 0.5 px) + JPEG q75 copies")
    p.add_argument("--workers", type=positive_int(64), default=2, help="evaluator threads (default 2)")


def run(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [Task.parse(t) for t in args.tasks]
    names = ["figure3.png", "figure3.pdf", "figure3.json", "figure3.csv"]
    png, pdf, js, csv_path = prepare_outputs(args.out, names, args.overwrite)
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["task", "image", "valid", "reason", "x", "y", "ratio", "coarse_ok", "x_true", "y_true"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.4 * len(tasks), 3.3), squeeze=False)
    degradation = {"blur_sigma_px": 0.5, "jpeg_quality": 75} if args.degrade else None
    record = {"figure": "Figure 3", "size": args.size, "seed": args.seed, "degraded": args.degrade,
              "degradation": degradation, "tasks": {}}
    t_start = time.perf_counter()
    for j, task in enumerate(tasks):
        n = TRAIN_SIZES[task] if args.n is None else args.n
        batch = generate(task, n, args.size, args.seed)
        images = degrade(batch.images) if args.degrade else batch.images
        t0 = time.perf_counter()
        ev = evaluate(images, task, workers=args.workers)
        seconds = time.perf_counter() - t0
        summary = ev.summary(trim=tuple(args.trim), n_boot=args.n_boot, seed=args.seed)
        errors = ev.ground_truth_errors(batch.params)
        record["tasks"][task.value] = {"n": n, "evaluate_seconds": seconds, "summary": summary,
                                       "feature_errors_px": errors}
        ratio = ev.ratio
        for i in range(len(ev)):
            ok = bool(ev.valid[i])
            writer.writerow([task.value, i, ok, ev.reason[i], f"{ev.x[i]:.6g}" if ok else "",
                             f"{ev.y[i]:.6g}" if ok else "", f"{ratio[i]:.6g}" if ok else "",
                             bool(ev.coarse_ok[i]) if ok else "", f"{batch.x[i]:.6g}", f"{batch.y[i]:.6g}"])
        if summary["r2"] is not None:
            rule_panel(axes[0][j], task, ev.x, ev.y, ev.valid, summary)
        print(f"Task {task.value}: n={n} valid={summary['valid_fraction']:.4f} R^2={_g(summary['r2'], 6)} "
              f"b1={_g(summary['beta1'], 5)} Error={_g(summary['error'], 4)} "
              f"coarse violations={summary['coarse_violations']} feature error median/p95 = "
              f"{_g(errors['all']['median_px'], 3)}/{_g(errors['all']['p95_px'], 3)} px")
    title = "Figure 3: evaluator on synthetic training data"
    fig.suptitle(title + (" (blur 0.5 px + JPEG q75)" if args.degrade else ""), fontsize=11)
    fig.tight_layout()
    save_figure(fig, png)
    save_figure(fig, pdf)
    plt.close(fig)
    record["seconds_total"] = time.perf_counter() - t_start
    write_json(js, record)
    atomic_write_bytes(csv_path, text.getvalue().encode())
    print(f"wrote {png}, {pdf}, {js}, {csv_path}")
    return 0


def _g(value, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


if __name__ == "__main__":  # python -m paper_figs.figure3 ...: the verb 'figure3' of hidden-rules
    from cli import run_verb

    sys.exit(run_verb('figure3'))
