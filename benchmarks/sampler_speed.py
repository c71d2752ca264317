"""Sampler benchmark: time and rule metrics of ancestral DDPM-1000 (the paper's) vs DDIM and DPM-Solver++.

On one run's checkpoint and the same seeds (``--n`` 512 by default, sample i uses seed i), the samples
of ancestral-1000, DDIM at 50/100/250 steps with eta 0 and 1, and the stochastic DPM-Solver++ at
25/50/100 steps are drawn, timed and measured by the rule evaluator: Invalid % and coarse
violations (exact binomial 95 % CIs), R^2 and Error (eq. (4)) with percentile-bootstrap 95 % CIs,
and the marginal measures of ``empirics.evaluator.marginals`` (Clopper-Pearson 95 % CIs): the share
of white backgrounds (median level >= 250), of valid samples with a rule length outside the training
range (+-2 %), and per element of samples whose colour lies in App. C's box.
A sampler *matches* ancestral-1000 when, for every metric, its CI and ancestral-1000's overlap. The
script reports the fastest matching sampler and its speed-up over ancestral-1000, measured in this
one run.

Samples are kept in ``<run>/samples/bench<n>-<sampler>`` so an interrupted benchmark resumes where
it stopped (a sampler already drawn is timed from its ``sample.json``). With a smaller ``--n`` than an
existing set of the same sampler, the first n samples of that set are taken (sample i depends on seed
i only, so they are the n-sample set) and its time is scaled by n/N (``timing`` in the JSON).

Run: ``python benchmarks/sampler_speed.py runs/A [--n 512] [--json docs/sampler_speed_A.json]``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

from empirics import ddpm
from empirics.atomic import write_json
from empirics.evaluator.marginals import goal_measures
from empirics.evaluator.metrics import binomial_ci
from empirics.runs import evaluate_run

SPECS = ([ddpm.SampleSpec("ddpm", 1000)]
         + [ddpm.SampleSpec("ddim", k, eta) for eta in (0.0, 1.0) for k in (50, 100, 250)]
         + [ddpm.SampleSpec("dpmpp-sde", k) for k in (25, 50, 100)])  # beyond the issue: stochastic DPM-Solver++


def measure(run: Path, spec: ddpm.SampleSpec, n: int, batch_size: int, n_boot: int) -> dict:
    name = f"bench{n}-{spec.name}"
    folder = ddpm.RunFiles(run).samples / name
    if not (folder / "samples.npz").exists():
        larger = _larger_set(run, spec, n)
        if larger is not None:
            _first_n(larger, folder, n)
        else:
            ddpm.sample(run, n, spec, seed=0, out=folder, batch_size=batch_size, progress=False)
    meta = json.loads((folder / "sample.json").read_text())
    rev = evaluate_run(run, name)
    ev = rev.sample_eval
    s = ev.summary(n_boot=n_boot, seed=0)
    n_valid = int(ev.valid.sum())
    inv = binomial_ci(n - n_valid, n)
    viol = s["coarse_violations"]
    vci = binomial_ci(viol, n_valid)
    ci = s["ci95"] or {}
    return {
        "sampler": spec.name, "steps": spec.steps, "eta": spec.eta, "seconds": meta["seconds"],
        "seconds_per_image": meta["seconds"] / n, "train_step": meta["train_step"],
        "batch_size": meta.get("batch_size"), "timing": meta.get("timing", "measured"),
        "invalid_percent": 100 * (n - n_valid) / n, "invalid_percent_ci95": [100 * inv[0], 100 * inv[1]],
        "coarse_violations": viol,
        "coarse_violation_percent": 100 * viol / n_valid if n_valid else None,
        "coarse_violation_percent_ci95": [100 * vci[0], 100 * vci[1]],
        "r2": s["r2"], "r2_ci95": ci.get("r2"), "error": s["error"], "error_ci95": ci.get("error"),
        "conforming_fraction": s["conforming_fraction"],
        **goal_measures(rev),
    }


def _larger_set(run: Path, spec: ddpm.SampleSpec, n: int) -> Path | None:
    """A benchmark set of the same sampler with more than ``n`` samples (seeds 0..N-1), if one exists."""
    found = []
    for folder in ddpm.RunFiles(run).samples.glob(f"bench*-{spec.name}"):
        m = re.fullmatch(rf"bench(\d+)-{re.escape(spec.name)}", folder.name)
        if m and int(m.group(1)) > n and (folder / "samples.npz").exists():
            found.append((int(m.group(1)), folder))
    return min(found)[1] if found else None


def _first_n(source: Path, folder: Path, n: int) -> None:
    """Sample i is drawn from seed i alone, so the first ``n`` samples of a larger set *are* the n-sample
    set: copy them instead of drawing them again. The time is the larger run's, scaled by n / N."""
    with np.load(source / "samples.npz") as z:
        images, seeds = z["images"], z["seeds"]
    meta = json.loads((source / "sample.json").read_text())
    big = len(images)
    meta.update(n=n, seeds=f"0..{n - 1} (sample i uses seed + i)", seconds=meta["seconds"] * n / big,
                timing=f"scaled by n/N from {source.name} ({big} samples, {meta['seconds']:.1f} s)",
                first_n_of=source.name)
    ddpm.save_samples(images[:n], meta["task"], folder, seeds=seeds[:n], meta=meta)


def overlaps(a, b) -> bool:
    return a is not None and b is not None and None not in a and None not in b and a[0] <= b[1] and b[0] <= a[1]


def compare(rows: list[dict]) -> dict | None:
    """Mark each row against ancestral-1000 (every ``*_ci95`` both rows have must overlap) and return the
    fastest matching sampler with its speed-up, or None (no ancestral row, or none matches)."""
    ref = next((r for r in rows if r["sampler"] == "ddpm-1000"), None)
    if ref is None:
        return None
    for r in rows:
        r["compared"] = [m[:-5] for m in ref if m.endswith("_ci95") and m in r]
        r["mismatches"] = [m for m in r["compared"] if not overlaps(r[f"{m}_ci95"], ref[f"{m}_ci95"])]
        r["matches_ancestral"] = not r["mismatches"]
        r["speedup_vs_ancestral"] = ref["seconds"] / r["seconds"]
    matching = [r for r in rows if r["matches_ancestral"] and r["sampler"] != "ddpm-1000"]
    if not matching:
        return None
    best = min(matching, key=lambda r: r["seconds"])
    return {"fastest_matching": best["sampler"], "speedup": best["speedup_vs_ancestral"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/sampler_speed.py", description=__doc__.splitlines()[0])
    p.add_argument("run", help="run folder with a checkpoint")
    p.add_argument("--n", type=int, default=512, help="samples per sampler, seeds 0..n-1 (default 512)")
    p.add_argument("--batch-size", type=int, default=256, help="samples per batch (default 256)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates (default 1000)")
    p.add_argument("--only", nargs="+", default=None, help="sampler names to run (e.g. ddpm-1000 ddim-100-eta1)")
    p.add_argument("--json", default=None, help="write every number to this JSON file")
    args = p.parse_args(argv)
    if args.n < 1:
        p.error(f"--n must be >= 1, got {args.n}")
    run = Path(args.run)
    by_name = {s.name: s for s in SPECS}
    unknown = [n for n in (args.only or []) if n not in by_name]
    if unknown:
        p.error(f"--only: unknown sampler names {unknown}; known: {list(by_name)}")
    specs = SPECS if args.only is None else [by_name[n] for n in args.only]  # in the order given
    t0 = time.perf_counter()
    rows = []
    for spec in specs:
        row = measure(run, spec, args.n, args.batch_size, args.n_boot)
        rows.append(row)
        print(f"{row['sampler']:>16}: {row['seconds']:8.1f} s  invalid {row['invalid_percent']:5.1f} % "
              f"{_ci(row['invalid_percent_ci95'])}  coarse viol. {row['coarse_violations']:3d}  "
              f"R^2 {_f(row['r2'])} {_ci(row['r2_ci95'], 3)}  Error {_f(row['error'])} {_ci(row['error_ci95'], 3)}",
              flush=True)
    verdict = compare(rows)
    if verdict is not None:
        print(f"fastest sampler matching ancestral-1000 within the CIs: {verdict['fastest_matching']} "
              f"({verdict['speedup']:.1f}x faster)")
    elif any(r["sampler"] == "ddpm-1000" for r in rows):
        print("no faster sampler matches ancestral-1000 within the CIs")
    record = {"run": str(run), "n": args.n, "seeds": f"0..{args.n - 1}", "batch_size": args.batch_size,
              "rows": rows, "verdict": verdict, "seconds_total": time.perf_counter() - t0}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, record)
        print(f"wrote {args.json}")
    return 0


def _f(v, digits: int = 3) -> str:
    return "  n/a" if v is None else f"{v:.{digits}f}"


def _ci(ci, digits: int = 1) -> str:
    if not ci or None in ci:
        return "[n/a]"
    return f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


if __name__ == "__main__":
    sys.exit(main())
