"""Rule evaluator benchmark: accuracy on fresh rendered and degraded images, and speed on 2 cores.

For each task, ``--n`` fresh images at 32 px (seed ``--seed``, not used by the tests) are
measured (``empirics.evaluate``) and compared with their ground truth, then measured again after
Gaussian blur (sigma 0.5 px) and JPEG (quality 75, OpenCV's 4:2:0). Prints every number with its
goal and PASS/MISS, and the evaluator's throughput (images/s, 2 threads, best of 3) at 32 and 64 px.

Run: ``python benchmarks/evaluator.py [--n 2000] [--json out.json]`` (also part of ``make bench``).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "2")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import cv2  # noqa: E402

from empirics.evaluate import evaluate  # noqa: E402
from empirics.metrics import feature_errors  # noqa: E402
from empirics.tasks import RULE_FEATURES, TARGET_SLOPE, Task, degrade, generate  # noqa: E402

CLEAN_GOALS = {"valid_fraction": (">=", 0.995), "r2": (">=", 0.995), "slope_rel_error": ("<=", 0.01),
               "error": ("<=", 0.02), "coarse_violations": ("<=", 0), "median_px": ("<=", 0.2),
               "p95_px": ("<=", 0.5)}
DEGRADED_GOALS = {"valid_fraction": (">=", 0.97), "r2": (">=", 0.98)}
SPEED_GOAL = 2000.0


def _check(value, goal) -> str:
    op, bound = goal
    ok = value is not None and (value >= bound if op == ">=" else value <= bound)
    return "PASS" if ok else "MISS"


def accuracy(task: Task, n: int, seed: int, workers: int) -> dict:
    batch = generate(task, n, 32, seed)
    out = {}
    for name, images in (("clean", batch.images), ("degraded", degrade(batch.images, 0.5, 75))):
        ev = evaluate(images, task, workers=workers)
        s = ev.summary(n_boot=0)
        err = feature_errors(ev.features, batch.params, RULE_FEATURES[task], 32, ev.valid)
        out[name] = {"valid_fraction": s["valid_fraction"], "r2": s["r2"], "beta1": s["beta1"],
                     "slope_rel_error": s["slope_rel_error"], "error": s["error"],
                     "coarse_violations": s["coarse_violations"], "median_px": err["all"]["median_px"],
                     "p95_px": err["all"]["p95_px"], "max_px": err["all"]["max_px"],
                     "invalid_reasons": s["invalid_reasons"], "per_feature_px": err}
    out["k"] = TARGET_SLOPE[task]
    return out


def speed(task: Task, size: int, n: int, workers: int, repeats: int = 3) -> float:
    images = generate(task, n, size, seed=99).images
    evaluate(images[:64], task)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        evaluate(images, task, workers=workers)
        best = min(best, time.perf_counter() - t0)
    return n / best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000, help="fresh images per task (default 2000)")
    p.add_argument("--seed", type=int, default=2025)
    p.add_argument("--workers", type=int, default=2, help="threads (default 2 = the 2 cores of the goal)")
    p.add_argument("--json", default=None, help="also write all numbers to this JSON file")
    args = p.parse_args(argv)
    cv2.setNumThreads(args.workers)
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    report = {"n": args.n, "seed": args.seed, "workers": args.workers, "accuracy": {}, "speed": {}}
    print(f"== accuracy: {args.n} fresh images per task at 32 px (seed {args.seed})")
    header = f"{'task':<5}{'set':<10}{'valid':>8}{'R^2':>9}{'|b1-k|/k':>10}{'Error':>9}{'coarse':>7}" \
             f"{'med px':>8}{'p95 px':>8}{'max px':>8}"
    print(header)
    all_ok = True
    for task in Task:
        res = accuracy(task, args.n, args.seed, args.workers)
        report["accuracy"][task.value] = res
        for name, goals in (("clean", CLEAN_GOALS), ("degraded", DEGRADED_GOALS)):
            r = res[name]
            flags = {k: _check(r[k], g) for k, g in goals.items()}
            all_ok &= all(v == "PASS" for v in flags.values())
            r["goals"] = flags

            def fmt(v, spec):
                return "n/a" if v is None else format(v, spec)

            print(f"{task.value:<5}{name:<10}{fmt(r['valid_fraction'], '8.4f')}{fmt(r['r2'], '9.5f')}"
                  f"{fmt(r['slope_rel_error'], '10.5f')}{fmt(r['error'], '9.5f')}{r['coarse_violations']:>7d}"
                  f"{fmt(r['median_px'], '8.3f')}{fmt(r['p95_px'], '8.3f')}{fmt(r['max_px'], '8.2f')}"
                  f"   {' '.join(k for k, v in flags.items() if v == 'MISS') or 'all goals met'}")
    print("goals: clean valid >= 0.995, R^2 >= 0.995, |b1-k|/k <= 0.01, Error <= 0.02, no coarse "
          "violations, median <= 0.2 px, p95 <= 0.5 px; degraded valid >= 0.97, R^2 >= 0.98")
    print(f"== speed: images/s with {args.workers} threads (best of 3)")
    for size, n in ((32, 4000), (64, 1000)):
        rates = {task.value: speed(task, size, n, args.workers) for task in Task}
        report["speed"][str(size)] = rates
        line = "  ".join(f"{t} {r:7.0f}" for t, r in rates.items())
        verdict = ""
        if size == 32:
            ok = min(rates.values()) >= SPEED_GOAL
            all_ok &= ok
            verdict = f"   goal >= {SPEED_GOAL:.0f}: {'PASS' if ok else 'MISS'}"
        print(f"{size} px: {line}{verdict}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2, default=float)
        print(f"wrote {args.json}")
    print("all goals met" if all_ok else "some goals missed (see MISS above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
