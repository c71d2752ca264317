"""``hidden-rules train`` and ``hidden-rules sample``: DDPM run folders from the command line.

    hidden-rules train A --preset cpu --out runs/A          # resumes when runs/A holds a checkpoint
    hidden-rules sample runs/A --n 2000 --sampler ddim --steps 100 --eta 1
    accelerate launch -m paper_figs.cli train A --preset paper --out runs/A   # data-parallel, same loop

Both verbs are registered in ``cli.VERBS``. Every argument is checked while parsing (``cli.types``),
before any work starts; a bad one leaves no run folder behind. Ctrl-C in ``train`` keeps the last
checkpoint, and the same command resumes from it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cli import Interrupted
from cli.types import (
    OUTPUT_FOLDER,
    POSITIVE,
    PROBABILITY,
    SEED,
    FiniteFloat,
    IntRange,
    add_threads_argument,
    check_memory,
    plural,
    positive_int,
    run_folder,
)
from cli.types import task as parse_task
from empirics import ddpm, threads

T_STEPS = 1000  # the DDPM's T (App. D.1): sampling steps and snapshots are at most this
MAX_SIZE = 512  # image size in px


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", type=parse_task, help="A, B, C or D")
    p.add_argument("--preset", default="cpu", choices=tuple(ddpm.PRESETS),
                   help="paper (App. D.1, GPU), cpu (small U-Net, <= 60 min on 2 cores) or smoke (tests); "
                   "default cpu")
    p.add_argument("--out", required=True, type=OUTPUT_FOLDER,
                   help="run folder (required; created, or resumed when it holds a checkpoint)")
    p.add_argument("--steps", type=positive_int(), default=None, help="total optimiser steps (default: the preset's; "
                   "paper: the paper's epochs)")
    p.add_argument("--n-train", type=positive_int(), default=None,
                   help="training-set size (default: the paper's 4000 for A, 2000 for B-D; App. D.3: 20000, 40000)")
    p.add_argument("--size", type=IntRange(8, MAX_SIZE), default=None,
                   help="image size in px (default 32; App. D.3: 64)")
    p.add_argument("--backbone", choices=[b.value for b in ddpm.Backbone], default=None,
                   help="unet (default) or dit (App. D.3, diffusers DiTTransformer2DModel)")
    p.add_argument("--batch-size", type=positive_int(), default=None, help="global batch size (default: the preset's)")
    p.add_argument("--lr", type=POSITIVE, default=None, help="AdamW learning rate (default: the preset's)")
    p.add_argument("--seed", type=SEED, default=None, help="training seed (default 0)")
    p.add_argument("--data-seed", type=SEED, default=None, help="training-set seed (default 0)")
    p.add_argument("--stop-at", type=positive_int(), default=None,
                   help="stop (with a checkpoint) at this step; run the command again to go on "
                   "(default: train to the end)")
    p.add_argument("--force", action="store_true", help="train a finished run again from step 0")
    add_threads_argument(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_sample_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=run_folder, help="run folder written by 'hidden-rules train'")
    p.add_argument("--n", type=positive_int(), default=2000, help="number of samples (default 2000, as Section 3.3)")
    p.add_argument("--sampler", choices=[s.value for s in ddpm.Sampler], default="ddpm",
                   help="ddpm (ancestral, the paper's), ddim, or dpmpp-sde (stochastic DPM-Solver++); default ddpm")
    p.add_argument("--steps", type=IntRange(1, T_STEPS), default=None,
                   help="sampling steps, at most 1000 (default: 1000 for ddpm, 100 otherwise)")
    p.add_argument("--eta", type=PROBABILITY, default=None, help="DDIM eta in [0, 1] (default 1; ddim only)")
    p.add_argument("--seed", type=SEED, default=0, help="sample i uses seed + i (default 0)")
    p.add_argument("--batch-size", type=positive_int(4096), default=256, help="samples per batch (default 256)")
    p.add_argument("--snapshot", type=positive_int(), default=None,
                   help="sample the EMA snapshot saved at this training step (default: the last checkpoint)")
    p.add_argument("--out", default=None, type=OUTPUT_FOLDER,
                   help="output folder (default: <run>/samples/<sampler>-<steps>[...])")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda; default auto")
    p.add_argument("--overwrite", action="store_true", help="replace existing samples")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the denoiser first (about a minute; faster for long runs on a CPU)")
    p.add_argument("--classifier", default=None,
                   help="classifier guidance (Section 5): a checkpoint (or folder) written by "
                   "'hidden-rules classifier' for the run's task and image size")
    p.add_argument("--guidance", choices=["constant", "piecewise"], default=None,
                   help="guidance scale schedule (default: App. G.1's choice, piecewise for C, constant otherwise)")
    p.add_argument("--scale", type=FiniteFloat(0.0), default=None,
                   help="guidance scale (default: App. G.1's, 7 for A and C, 10 for B and D)")
    p.add_argument("--last-k", type=IntRange(1, T_STEPS), default=20,
                   help="sampling steps the piecewise ramp spans (default 20, App. G.1)")
    add_threads_argument(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _train_config(args, out: Path):
    """The config asked for, or the stored one of a run in ``out`` when it agrees with what was asked."""
    overrides = {"train_steps": args.steps, "n_train": args.n_train, "size": args.size, "backbone": args.backbone,
                 "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed, "data_seed": args.data_seed}
    config = ddpm.make_config(args.task, args.preset, **overrides)
    check_memory(f"--n-train {config.n_train} at --size {config.size}", 2.0 * config.n_train * config.size**2 * 3)
    if not (out / "config.json").exists():
        if out.exists() and any(out.iterdir()):
            raise ValueError(f"--out {str(out)!r} is a folder with files but no run; choose an empty or new folder")
        return config
    stored = ddpm.read_config(out)
    flags = {"train_steps": "--steps", "n_train": "--n-train", "size": "--size", "backbone": "--backbone",
             "batch_size": "--batch-size", "lr": "--lr", "seed": "--seed", "data_seed": "--data-seed"}
    differ = [f"{flags[k]} {v}" for k, v in overrides.items()
              if v is not None and getattr(stored, k) != getattr(config, k)]
    if stored.task != config.task or stored.preset != config.preset or differ:
        asked = ", ".join([f"task {config.task}", f"preset {config.preset}", *differ])
        raise ddpm.CheckpointError(f"you asked for {asked}, but --out {str(out)!r} holds a run of task {stored.task}, "
                                   f"preset {stored.preset}: choose another --out, or resume it with "
                                   f"'hidden-rules train {stored.task} --preset {stored.preset} --out {out}'")
    return stored


def run_train(args) -> int:
    out = Path(args.out)
    config = _train_config(args, out)
    threads.set_threads(args.threads)
    try:
        summary = ddpm.train(out, config, max_steps=args.stop_at, force=args.force, progress=not args.no_progress,
                             refuse_finished=True)
    except ddpm.CheckpointError as exc:
        raise ddpm.CheckpointError(str(exc).replace("pass force=True", "pass --force")) from None
    except KeyboardInterrupt:
        raise Interrupted(f"progress is saved in {str(out)!r} at its last checkpoint; run the same command "
                          "again to resume from there") from None
    state = "finished" if summary.finished else f"stopped at step {summary.end_step} (run again to resume)"
    print(f"task {config.task} ({config.preset}): steps {summary.start_step} -> {summary.end_step} of "
          f"{config.train_steps} in {summary.seconds:.1f} s, last loss {summary.last_loss:.4f}; {state}")
    print(f"run folder {out}")
    return 0


def run_sample(args) -> int:
    steps = args.steps if args.steps is not None else (T_STEPS if args.sampler == "ddpm" else 100)
    if args.sampler != "ddim" and args.eta is not None:
        raise ValueError("--eta applies to --sampler ddim only")
    eta = (1.0 if args.eta is None else args.eta) if args.sampler == "ddim" else 0.0
    try:
        spec = ddpm.SampleSpec(args.sampler, steps, eta)
    except ValueError as exc:
        raise ValueError(f"--steps/--eta: {exc}") from exc
    config = ddpm.read_config(args.run)
    check_memory(f"--n {args.n} at {config.size} px", 2.0 * args.n * config.size**2 * 3)
    if args.out is not None:
        ddpm.check_sample_folder(args.out, args.overwrite)
    guide = _guide(args, len_steps=steps)
    threads.set_threads(args.threads)
    out = ddpm.sample(args.run, args.n, spec, seed=args.seed, out=args.out, snapshot_step=args.snapshot,
                      batch_size=args.batch_size, device=args.device, overwrite=args.overwrite,
                      progress=not args.no_progress, compile_model=args.compile, guide=guide)
    print(f"{plural(args.n, 'sample')} ({spec.name}) written to {out}; evaluate with: "
          f"hidden-rules eval {config.task} {out}")
    return 0


def _guide(args, len_steps: int):
    """The classifier guide asked for by --classifier/--guidance/--scale/--last-k (None without --classifier)."""
    if args.classifier is None:
        if args.guidance is not None or args.scale is not None:
            raise ValueError("--guidance and --scale need --classifier "
                             "(a checkpoint written by 'hidden-rules classifier')")
        return None
    from empirics import guidance

    config = ddpm.read_config(args.run)

    paper = guidance.paper_schedule(config.task)
    try:
        schedule = guidance.GuidanceSchedule(args.guidance or paper.kind,
                                             paper.scale if args.scale is None else args.scale, args.last_k)
        schedule.scales(len_steps)
    except ValueError as exc:
        raise ValueError(f"--guidance/--scale/--last-k: {exc}") from exc
    clf = guidance.load_classifier(args.classifier, task=config.task, size=config.size)
    return guidance.ClassifierGuide(clf, schedule, source=str(args.classifier))
