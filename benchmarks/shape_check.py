"""Shape check of the evaluator: the statistics' ranges on renders, its thresholds, and wrong-task images.

For each task, ``--n`` fresh renders at 32 px (seed ``--seed``) exact, blurred (sigma 0.5 px) and
blurred + JPEG 75 (``empirics.tasks.degrade``), and ``--reference-n`` renders per preset and downscaler
of ``empirics.render_reference``, are read by ``empirics.evaluate.shape_statistics``. Printed per
element and source: the range (min, 1 %, median, 99 %, max) of every statistic the check reads over the
images valid apart from their shapes, beside the thresholds in ``empirics.evaluate``, so that a reader
sees each threshold lie beyond the observed extremes. Then ``--cross-n`` renders of each task evaluated
as each of the other three (exact and degraded): the valid fraction (goal <= 2 % on exact renders) and
the top reasons.

Run: ``python benchmarks/shape_check.py [--n 1000] [--reference-n 300] [--cross-n 300] [--json out.json]``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

from empirics.atomic import write_json  # noqa: E402
from empirics.data.render_reference import Downscaler, presets_for, render_reference  # noqa: E402
from empirics.evaluate import evaluate, shape_statistics  # noqa: E402
from empirics.evaluator import shape_checks as ev_mod  # noqa: E402
from empirics.tasks import Task, degrade, generate  # noqa: E402

STATS = ("separable_gain", "disc_residual", "aspect")
CROSS_GOAL = 0.02


def thresholds() -> dict:
    names = ("SEPARABLE_GAIN_DISC", "SEPARABLE_GAIN_RECT", "DISC_RESIDUAL", "DISC_RESIDUAL_C_SMALL",
             "SQUARE_ASPECT", "BAR_ASPECT", "POLE_ASPECT")
    return {k: getattr(ev_mod, k) for k in names}


def _range(v: np.ndarray) -> list | None:
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None
    return [float(x) for x in (v.min(), np.percentile(v, 1), np.median(v), np.percentile(v, 99), v.max())]


def sources(task: Task, n: int, n_ref: int, seed: int):
    images = generate(task, n, 32, seed).images
    yield "exact", images
    yield "blur 0.5", degrade(images, 0.5, None)
    yield "blur 0.5 + JPEG 75", degrade(images, 0.5, 75)
    for preset in presets_for(task):
        for how in Downscaler:
            yield f"reference {preset} {how.value}", render_reference(task, n_ref, 32, seed, conventions=preset,
                                                                      downscaler=how).images


def measure(task: Task, n: int, n_ref: int, seed: int) -> dict:
    out = {}
    for name, images in sources(task, n, n_ref, seed):
        table, ok = shape_statistics(images, task)
        out[name] = {"n": int(len(images)), "n_judged": int(ok.sum()),
                     "elements": {el: {k: _range(getattr(st, k)[ok]) for k in STATS} for el, st in table.items()}}
        for el, r in out[name]["elements"].items():
            text = "  ".join(f"{k} [{', '.join(f'{x:.3g}' for x in v)}]" for k, v in r.items() if v is not None)
            print(f"{task.value} {name:<36} {el:<7} {text}")
    return out


def cross(n: int, seed: int) -> dict:
    out = {}
    for degraded in (False, True):
        for truth in Task:
            images = generate(truth, n, 32, seed).images
            if degraded:
                images = degrade(images, 0.5, 75)
            for task in Task:
                if task is truth:
                    continue
                e = evaluate(images, task)
                key = f"{truth.value} as {task.value}{' degraded' if degraded else ''}"
                top = collections.Counter(e.reason[~e.valid]).most_common(2)
                out[key] = {"valid_fraction": float(e.valid.mean()), "n": n, "top_reasons": top}
                verdict = ("PASS" if e.valid.mean() <= CROSS_GOAL else "MISS") if not degraded else ""
                print(f"{key:<20} valid {e.valid.mean():6.3f} {verdict:<5} {top[0][0] if top else ''}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="fresh renders per task and degradation (default 1000)")
    p.add_argument("--reference-n", type=int, default=300, help="reference renders per preset and downscaler")
    p.add_argument("--cross-n", type=int, default=300, help="renders per wrong-task pair (default 300)")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--json", default=None, help="also write all numbers to this JSON file")
    args = p.parse_args(argv)
    if min(args.n, args.reference_n, args.cross_n) < 1:
        p.error("--n, --reference-n and --cross-n must be >= 1")
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    report = {"seed": args.seed, "thresholds": thresholds(), "statistics": {}}
    print("thresholds: " + ", ".join(f"{k} {v}" for k, v in report["thresholds"].items()))
    print("ranges over images valid apart from their shapes: [min, 1 %, median, 99 %, max]")
    for task in Task:
        report["statistics"][task.value] = measure(task, args.n, args.reference_n, args.seed)
    print(f"== wrong task: {args.cross_n} renders of each task evaluated as each other (goal exact <= {CROSS_GOAL})")
    report["cross"] = cross(args.cross_n, args.seed)
    if args.json:
        write_json(args.json, json.loads(json.dumps(report, default=float)))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
