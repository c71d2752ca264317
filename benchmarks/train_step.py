"""Step time of the CPU DDPM's training levers, measured side by side in one run, as ratios.

Each variant is the ``cpu`` preset (Task C's config) with one lever changed; one training step
(forward, backward, AdamW) on a fixed batch is timed in rounds that visit every variant in turn, so
a change in machine load hits all of them alike. The ratio baseline / variant is how many more steps
the variant gets in the baseline's wall-clock time (benchmarks/recipe_probes.py uses these).

    python benchmarks/train_step.py --threads 1 --rounds 4 [--compile] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from empirics import ddpm, threads  # noqa: E402

VARIANTS = {
    "base": {},
    "batch32": {"batch_size": 32},
    "narrow": {"channels": (32, 32, 64)},
    "wide": {"channels": (48, 96, 96)},
    "min-snr": {"loss_weighting": "min-snr"},
}


def make_step(overrides: dict, compiled: bool):
    cfg = ddpm.make_config("C", "cpu-2000", **overrides)
    model = ddpm.build_denoiser(cfg).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    fwd = torch.compile(model, dynamic=False) if compiled else model
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(cfg.batch_size, 3, cfg.size, cfg.size, generator=gen).contiguous(memory_format=torch.channels_last)
    noise = torch.randn(x0.shape, generator=gen).contiguous(memory_format=torch.channels_last)
    t = torch.randint(0, 1000, (cfg.batch_size,), generator=gen)
    sched = ddpm.scheduler("ddpm")
    loss_fn = ddpm.make_loss(cfg)  # the training loop's loss (eps or min-SNR), not a copy of it

    def step():
        loss = loss_fn(fwd, x0, noise, t, sched)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    step()
    return step, time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=threads.parse_threads, default=1)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=4, help="steps per variant per round")
    p.add_argument("--compile", action="store_true", help="also time the baseline under torch.compile")
    p.add_argument("--json", default=None, help="write the numbers here (refuses an existing file)")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.steps < 1:
        p.error("--rounds and --steps must be >= 1")
    if args.json and Path(args.json).exists():
        p.error(f"--json {args.json!r} exists; choose another path")
    n = threads.set_threads(args.threads)
    variants = {name: (ov, False) for name, ov in VARIANTS.items()}
    if args.compile:
        variants["compile"] = ({}, True)
    steps, first = {}, {}
    for name, (ov, compiled) in variants.items():
        steps[name], first[name] = make_step(ov, compiled)
    times = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, step in steps.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - t0) / args.steps)
    base = statistics.median(times["base"])
    rows = {name: {"seconds_per_step": round(statistics.median(v), 4),
                   "ratio_base_over_this": round(base / statistics.median(v), 3),
                   "first_step_seconds": round(first[name], 2)} for name, v in times.items()}
    for name, row in rows.items():
        print(f"{name:10s} {row['seconds_per_step']:.3f} s/step  base/this {row['ratio_base_over_this']:.2f}  "
              f"(first step {row['first_step_seconds']:.1f} s)")
    if args.json:
        record = {"threads": n, "rounds": args.rounds, "steps": args.steps,
                  "date": time.strftime("%Y-%m-%d %H:%M"), "variants": rows}
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
