"""Reproducibility check: are two DDPM runs, and pairs of sample sets, the same bit for bit?

``--runs A B`` (repeatable): ``empirics.ddpm.compare_runs`` — config, training set, logged losses and
learning rates, checkpoint step, model and EMA weights. ``--samples X Y`` (repeatable):
``empirics.ddpm.compare_sample_sets`` — the first min(n) seeds and images of two sample folders.
Prints one line per pair and, with ``--json``, writes every comparison with the sets' timing fields.

Run: ``python benchmarks/reproducibility.py --runs runs/A runs/A_timing
--samples runs/A_2600/samples/bench128-ddpm-1000 runs/A_2600/samples/bench512-ddpm-1000 --json out.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from empirics import ddpm
from empirics.atomic import write_json


def _sample_meta(folder: Path) -> dict:
    meta = json.loads((folder / "sample.json").read_text()) if (folder / "sample.json").is_file() else {}
    return {k: meta.get(k) for k in ("batch_size", "seconds", "sessions", "timing")}


def _train_meta(run: Path) -> dict | None:
    stats = ddpm.RunFiles(run).root / "train_stats.json"
    return json.loads(stats.read_text()) if stats.is_file() else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/reproducibility.py", description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs=2, action="append", default=[], metavar=("RUN_A", "RUN_B"),
                   help="two run folders to compare (repeatable)")
    p.add_argument("--samples", nargs=2, action="append", default=[], metavar=("SET_A", "SET_B"),
                   help="two sample folders to compare (repeatable)")
    p.add_argument("--json", default=None, help="write every comparison to this JSON file")
    args = p.parse_args(argv)
    if not args.runs and not args.samples:
        p.error("give at least one --runs or --samples pair")
    record = {"runs": [], "samples": []}
    for a, b in args.runs:
        r = ddpm.compare_runs(a, b)
        r["train_stats"] = [_train_meta(Path(a)), _train_meta(Path(b))]
        record["runs"].append(r)
        print(f"runs {a} vs {b}: identical={r['identical']} (steps {r['steps']}, "
              + ", ".join(f"{k}={r[k]}" for k in ("config", "train_images", "loss_log", "step", "model", "ema")) + ")")
    for a, b in args.samples:
        r = ddpm.compare_sample_sets(a, b)
        r["meta"] = [_sample_meta(Path(a)), _sample_meta(Path(b))]
        record["samples"].append(r)
        print(f"samples {a} vs {b}: identical={r['identical']} ({r['compared']} compared, "
              f"{r['differing_samples']} differ)")
    record["all_identical"] = all(r["identical"] for r in record["runs"] + record["samples"])
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, record)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
