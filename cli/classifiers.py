"""``hidden-rules classifier`` and ``hidden-rules filter``: Section 5's classifiers for a DDPM run folder.

    hidden-rules classifier runs/A --preset cpu          # guidance classifier (eq. (3)), resumable
    hidden-rules filter runs/A --arch mlp --preset cpu   # a filter classifier (App. G.2)
    hidden-rules sample runs/A --n 2000 --sampler ddim --steps 50 --eta 1 --classifier runs/A/classifier
    hidden-rules table2 runs/A runs/B runs/C runs/D --samples ddim-50-eta1

Both train on App. G.1's contrastive data for the run's task and image size (``empirics.mitigation``);
both are registered in ``cli.VERBS``.
"""

from __future__ import annotations

import argparse

from cli.types import add_threads_argument, positive_int, run_folder
from empirics import filtering, guidance, mitigation, threads
from empirics.data.contrastive import N_PER_CLASS

MAX_PER_CLASS = 1_000_000  # contrastive images per class held in memory at once


def add_classifier_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=run_folder, help="run folder written by 'hidden-rules train'")
    p.add_argument("--preset", default="cpu", choices=guidance.CLASSIFIER_PRESET_NAMES,
                   help="paper (App. G.1: 20000 iterations, GPU), cpu (~10 min on 2 cores) or smoke; default cpu")
    p.add_argument("--steps", type=positive_int(), default=None, help="training steps (default: the preset's)")
    p.add_argument("--n-per-class", type=positive_int(MAX_PER_CLASS), default=N_PER_CLASS,
                   help=f"contrastive images per class (default {N_PER_CLASS}, App. G.1)")
    p.add_argument("--stop-at", type=positive_int(), default=None,
                   help="stop (with a checkpoint) at this step; run again to go on")
    p.add_argument("--force", action="store_true", help="train a finished classifier again from step 0")
    add_threads_argument(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_filter_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=run_folder, help="run folder written by 'hidden-rules train'")
    p.add_argument("--arch", required=True, choices=[a.value for a in filtering.Architecture],
                   help="mlp, resnet8 or unet_encoder (App. G.2, Fig. 18)")
    p.add_argument("--preset", default="cpu", choices=tuple(filtering.PRESETS),
                   help="paper (App. G.2: 100 epochs), cpu or smoke; default cpu")
    p.add_argument("--epochs", type=positive_int(), default=None, help="epochs (default: the preset's)")
    p.add_argument("--n-per-class", type=positive_int(MAX_PER_CLASS), default=N_PER_CLASS,
                   help=f"contrastive images per class (default {N_PER_CLASS}, App. G.1)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing filter of this architecture")
    add_threads_argument(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_classifier(args) -> int:
    threads.set_threads(args.threads)
    record = mitigation.train_run_classifier(args.run, args.preset, n_per_class=args.n_per_class,
                                             max_steps=args.stop_at, force=args.force,
                                             progress=not args.no_progress, train_steps=args.steps)
    if record is None:
        print(f"classifier of {args.run} stopped at step {args.stop_at}; run again to go on")
        return 0
    acc = record["accuracy_heldout"]
    print(f"classifier of {args.run} ({args.preset}, {record['train_steps']} steps): held-out accuracy "
          + ", ".join(f"t={t}: {a:.3f}" for t, a in acc.items()))
    print(f"wrote {mitigation.classifier_dir(args.run)}")
    return 0


def run_filter(args) -> int:
    threads.set_threads(args.threads)
    record = mitigation.train_run_filter(args.run, args.arch, args.preset, n_per_class=args.n_per_class,
                                         overwrite=args.overwrite, progress=not args.no_progress,
                                         epochs=args.epochs)
    print(f"filter {args.arch} of {args.run}: test accuracy {record['test_accuracy']:.3f} on "
          f"{record['n_test']} images ({record['seconds']:.0f} s)")
    print(f"wrote {mitigation.filter_path(args.run, args.arch)}")
    return 0
