"""What the DDPM presets cost on this machine: smoke end to end, cpu-preset training step, sampling step.

* ``smoke``: ``hidden-rules train A --preset smoke`` + ``sample --n 16 --sampler ddim --steps 10`` +
  ``eval``, as one user would run them (three processes), wall time (goal: <= 60 s).
* ``cpu`` training: seconds per optimiser step of the cpu preset (batch 64, channels_last), median of
  ``--steps`` steps after 3 warm-up steps, and the projected time of the preset's full run (goal: <= 60 min).
* sampling: milliseconds per image and sampling step of the cpu-preset U-Net at batch 256, eager and
  ``torch.compile``d, measured alternately in one process; their ratio is the compile speed-up.

Run: ``python benchmarks/ddpm_cost.py [--steps 20] [--json docs/ddpm_cost.json]``. The numbers depend on
what else the machine is doing; run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from empirics import ddpm

ROOT = Path(__file__).resolve().parents[1]


def smoke_end_to_end() -> float:
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "A"
        cli = [sys.executable, "-m", "paper_figs.cli"]
        t0 = time.perf_counter()
        for args in (["train", "A", "--preset", "smoke", "--out", str(run), "--no-progress"],
                     ["sample", str(run), "--n", "16", "--sampler", "ddim", "--steps", "10", "--no-progress"],
                     ["eval", "A", str(run / "samples" / "ddim-10-eta1"), "--n-boot", "0"]):
            subprocess.run(cli + args, check=True, capture_output=True, cwd=ROOT)
        return time.perf_counter() - t0


def train_step_seconds(steps: int) -> float:
    cfg = ddpm.make_config("A", "cpu")
    model = ddpm.build_denoiser(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    sched = ddpm.scheduler("ddpm")
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand((cfg.batch_size, 3, 32, 32), generator=g).contiguous(memory_format=torch.channels_last) * 2 - 1
    times = []
    for i in range(steps + 3):
        t0 = time.perf_counter()
        t = torch.randint(0, 1000, (cfg.batch_size,), generator=g)
        noise = torch.randn(x0.shape, generator=g).contiguous(memory_format=torch.channels_last)
        loss = torch.nn.functional.mse_loss(model(sched.add_noise(x0, noise, t), t), noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def sample_step_ms(reps: int) -> dict:
    cfg = ddpm.make_config("A", "cpu")
    model = ddpm.build_denoiser(cfg).eval()
    compiled = torch.compile(model, dynamic=False)
    x = torch.randn(256, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    t = torch.full((256,), 500)
    out = {"eager": [], "compiled": []}
    with torch.inference_mode():
        t0 = time.perf_counter()
        compiled(x, t)
        compile_seconds = time.perf_counter() - t0
        model(x, t)
        for _ in range(reps):
            for name, net in (("eager", model), ("compiled", compiled)):
                t0 = time.perf_counter()
                net(x, t)
                out[name].append(1000 * (time.perf_counter() - t0) / 256)
    eager, comp = float(np.median(out["eager"])), float(np.median(out["compiled"]))
    return {"eager_ms_per_image_step": eager, "compiled_ms_per_image_step": comp, "compile_speedup": eager / comp,
            "compile_seconds": compile_seconds}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/ddpm_cost.py", description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20, help="training steps timed (default 20)")
    p.add_argument("--reps", type=int, default=5, help="timed forward passes per mode (default 5)")
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = p.parse_args(argv)
    smoke = smoke_end_to_end()
    print(f"smoke preset, train + sample + eval (3 processes): {smoke:.1f} s (goal <= 60 s)", flush=True)
    step = train_step_seconds(args.steps)
    cfg = ddpm.make_config("A", "cpu")
    total = step * cfg.train_steps / 60
    print(f"cpu preset training: {step:.3f} s/step x {cfg.train_steps} steps = {total:.1f} min (goal <= 60 min)",
          flush=True)
    samp = sample_step_ms(args.reps)
    print(f"sampling, cpu-preset U-Net, batch 256: eager {samp['eager_ms_per_image_step']:.2f} ms, compiled "
          f"{samp['compiled_ms_per_image_step']:.2f} ms per image-step ({samp['compile_speedup']:.2f}x; "
          f"compiling took {samp['compile_seconds']:.0f} s)")
    per_2000 = 2000 * 100 * samp["compiled_ms_per_image_step"] / 1000 / 60
    print(f"=> 2000 samples of a 100-step sampler: {per_2000:.1f} min compiled")
    record = {"smoke_end_to_end_seconds": smoke, "cpu_train_seconds_per_step": step,
              "cpu_train_steps": cfg.train_steps, "cpu_train_minutes_projected": total, **samp,
              "minutes_2000_samples_100_steps_compiled": per_2000, "torch_threads": torch.get_num_threads()}
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
