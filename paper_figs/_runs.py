"""Arguments and loading shared by the scripts that read DDPM run folders (Table 1, Figures 4, 5)."""

from __future__ import annotations

import argparse

from cli.types import BOOT, SEED
from empirics.evaluator.controls import FRESH_SEED, ControlEvaluations
from empirics.runs import RunEvaluation, evaluate_run, run_controls
from paper_figs._io import add_output_arguments

# The paper's numbers (Table 1; Section 3.3 / Fig. 4 R^2 and Table 2's DDPM row for Error).
PAPER_TABLE1 = {"A": {"invalid_percent": 30.15, "coarse_violations": 1},
                "B": {"invalid_percent": 40.45, "coarse_violations": 0},
                "C": {"invalid_percent": 41.75, "coarse_violations": 0},
                "D": {"invalid_percent": 24.90, "coarse_violations": 0}}
PAPER_DDPM = {"A": {"error": 0.25, "r2": 0.85}, "B": {"error": 0.11, "r2": 0.83},
              "C": {"error": 0.41, "r2": 0.57}, "D": {"error": 0.46, "r2": 0.79}}


def add_run_arguments(p: argparse.ArgumentParser, default_out: str = "paper_figs/out") -> None:
    p.add_argument("runs", nargs="+", help="run folders written by 'hidden-rules train' (one per task)")
    p.add_argument("--samples", default=None,
                   help="sample set to read in every run (a folder name under <run>/samples, e.g. ddpm-1000); "
                   "default: each run's only set")
    add_output_arguments(p, default_out)
    p.add_argument("--n-boot", type=BOOT, default=1000, help="bootstrap replicates for the 95%% CIs (default 1000)")
    p.add_argument("--seed", type=SEED, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--control-seed", type=SEED, default=FRESH_SEED,
                   help=f"seed of the control sets (fresh renders, matched-null noise; default {FRESH_SEED}, "
                   "which no training set uses)")


def load_runs(args) -> list[RunEvaluation]:
    """Evaluate every run of ``args.runs``; one run per task, in the order given."""
    out = [evaluate_run(r, args.samples) for r in args.runs]
    tasks = [r.task.value for r in out]
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"give one run per task; got tasks {tasks}")
    return out


def load_controls(args, runs: list[RunEvaluation]) -> list[ControlEvaluations]:
    """The control sets of every run (fresh, degraded, matched null; ``empirics.controls``), evaluated."""
    return [run_controls(rev, seed=args.control_seed) for rev in runs]
