"""``hidden-rules data`` and ``hidden-rules eval``: make task data sets and evaluate images.

    hidden-rules data A --n 4000 --size 32 --out DIR     # DIR/A/*.png, DIR/params.csv, DIR/A_32.npz
    hidden-rules eval A PATH [--out DIR]                 # PATH: .npz, image file or folder

``eval`` reads an ``.npz`` with an ``images`` array (optionally ``task``, ``seeds`` and ground-truth
``param__<name>`` arrays: a task archive of ``data``, or the ``samples.npz`` of ``sample``), an image
file, or a folder of images (with ``params.csv`` / ``samples.csv`` when ``data`` / ``sample`` wrote it).
It writes ``evaluation.jsonl`` and ``evaluation.csv`` (one row per image: file, the sampling seed when
the input has seeds, valid, reason, features, x, y, ratio, coarse_ok) and ``summary.json``
(``Evaluation.summary()`` plus the skipped files and, when the input carries ground truth with the
task's rule features, the feature errors in pixels). Files that cannot be evaluated (unreadable,
grayscale, non-square, too small, unknown) are listed with their reason on stderr and in the summary,
and the run goes on; if no image is left, ``eval`` fails like any bad input (exit status 2).

Task mismatch: an input that names its task (an npz's ``task`` entry, a folder's ``params.csv``) and
names another task than the verb's is refused with exit status 2 and one line saying both tasks.
We refuse rather than warn because the evaluator does not catch it: Task D renders measured as C are
all valid with R^2 = 1 (issue 22), so a warning scrolled past would leave numbers that look right.
To measure images as another task on purpose, give them without a task label.

Outputs are written only after the evaluation succeeded: a new ``--out`` folder is built under a
temporary name and renamed into place, so a bad input, an error or Ctrl-C part-way leaves no folder
(empty or partial) behind; in an existing folder with other files each output is replaced atomically.

Both verbs are registered in ``cli.VERBS``; their flags are checked by ``cli.types`` while parsing.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
import time
from argparse import ArgumentTypeError
from pathlib import Path

import numpy as np

from cli.types import BOOT, FINITE, OUTPUT_FOLDER, SEED, FiniteFloat, IntRange, check_memory, plural, positive_int
from cli.types import task as parse_task
from empirics.atomic import atomic_folder, atomic_write_bytes
from empirics.data.io import ImageSet, read_images, save_npz, save_png_folder
from empirics.evaluate import Evaluation, evaluate
from empirics.tasks import FINE_FACTOR_RANGE, SPECS, TRAIN_SIZES, Task, generate

EVAL_OUTPUTS = ("evaluation.jsonl", "evaluation.csv", "summary.json")



def add_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", type=parse_task, help="A, B, C or D")
    p.add_argument("--n", type=positive_int(), default=None, help="number of images (default: the paper's 4000 for A, "
                   "2000 for B-D)")
    p.add_argument("--size", type=IntRange(16, 1024), default=32, help="image size in px (default 32; paper: also 64)")
    p.add_argument("--seed", type=SEED, default=0, help="data seed (default 0)")
    p.add_argument("--out", required=True, type=OUTPUT_FOLDER,
                   help="output folder (required; outputs are never overwritten without --overwrite)")
    p.add_argument("--format", choices=("png", "npz", "both"), default="both",
                   help="PNG folder (+ params.csv), .npz archive, or both (default)")
    p.add_argument("--fine-factor", type=FiniteFloat(*FINE_FACTOR_RANGE), default=1.0,
                   help="scale y so that y/x = factor * k (negative controls; default 1)")
    p.add_argument("--violate-coarse", action="store_true", help="break the coarse rule (negative controls)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing data set")


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", type=parse_task, help="A, B, C or D")
    p.add_argument("path", help=".npz with an 'images' array (optional 'task', 'seeds', 'param__*'), image "
                   "file or folder of images")
    p.add_argument("--out", default=None, type=OUTPUT_FOLDER,
                   help="output folder (default: <path>_eval next to the input; needed for a single image)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--trim", type=FINITE, nargs=2, default=(2.5, 97.5), metavar=("LO", "HI"),
                   help="ratio percentiles kept for the fit (default 2.5 97.5, as Fig. 3/4)")
    p.add_argument("--n-boot", type=BOOT, default=1000,
                   help="bootstrap replicates for the 95%% CIs (default 1000)")
    p.add_argument("--seed", type=SEED, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--workers", type=IntRange(1, 64), default=2, help="threads (default 2)")
    p.add_argument("--value-range", type=FINITE, nargs=2, default=None, metavar=("LO", "HI"),
                   help="float inputs: value mapped to black and to white (default: auto [0,1] or [-1,1])")
    p.epilog = ("An input labelled with another task (an npz's 'task' entry, a folder's params.csv) is refused "
                "(exit status 2): the evaluator would measure it without complaint. Outputs are written only "
                "after the evaluation succeeded; a failure or Ctrl-C leaves no --out folder behind.")


def run_data(args) -> int:
    task = args.task
    n = TRAIN_SIZES[task] if args.n is None else args.n
    # the images, their supersampled drawing and the PNG/npz copies: about 4 bytes per image byte
    check_memory(f"--n {n} at --size {args.size}", 4.0 * n * args.size**2 * 3)
    out = Path(args.out)
    npz_path = out / f"{task.value}_{args.size}.npz"
    if args.format in ("npz", "both") and npz_path.exists() and not args.overwrite:
        raise ValueError(f"{npz_path} exists; pass --overwrite to replace it")
    if args.format in ("png", "both") and (out / "params.csv").exists() and not args.overwrite:
        raise ValueError(f"{out / 'params.csv'} exists; pass --overwrite to replace it")
    t0 = time.perf_counter()
    batch = generate(task, n, args.size, args.seed, fine_factor=args.fine_factor,
                     violate_coarse=args.violate_coarse)
    written = []
    if args.format in ("png", "both"):
        written.append(str(save_png_folder(batch, out, overwrite=args.overwrite)))
        written.append(str(out / task.value) + "/")
    if args.format in ("npz", "both"):
        save_npz(batch, npz_path, overwrite=args.overwrite)
        written.append(str(npz_path))
    seconds = time.perf_counter() - t0
    print(f"task {task.value}: {plural(n, 'image')} of {args.size} px (seed {args.seed}) in {seconds:.1f} s")
    print("wrote " + ", ".join(written))
    return 0


def _default_out(path: Path) -> Path:
    base = path.with_suffix("") if path.is_file() else path
    return base.parent / f"{base.name}_eval"


# Keyword arguments of the library as the flags of ``eval`` that set them.
_FLAGS = {"value_range": "--value-range", "workers": "--workers", "n_boot": "--n-boot", "seed": "--seed",
          "trim": "--trim"}


def flag_words(message: str) -> str:
    """A library message as ``eval``'s user reads it: ``value_range=(lo, hi)`` -> ``--value-range LO HI``,
    ``workers must ...`` -> ``--workers must ...``."""
    message = message.replace("value_range=(lo, hi)", "--value-range LO HI")
    return re.sub(r"(?<![\w-])(" + "|".join(_FLAGS) + r")(?= must)", lambda m: _FLAGS[m.group(1)], message)


def _evaluate_set(images: list[np.ndarray], task: Task, args) -> Evaluation:
    """Evaluate images of possibly different sizes and dtypes, keeping their order."""
    groups: dict[tuple, list[int]] = {}
    for i, img in enumerate(images):
        groups.setdefault((img.shape, img.dtype.str), []).append(i)
    order = np.empty(len(images), int)
    parts, pos = [], 0
    for idx in groups.values():
        value_range = tuple(args.value_range) if args.value_range else None
        try:
            parts.append(evaluate(np.stack([images[i] for i in idx]), task, value_range=value_range,
                                  workers=args.workers))
        except ValueError as exc:
            raise ValueError(flag_words(str(exc))) from exc
        order[idx] = np.arange(pos, pos + len(idx))
        pos += len(idx)
    return Evaluation.concatenate(parts).take(order)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _check_eval_flags(args) -> None:
    lo, hi = args.trim
    if not 0 <= lo < hi <= 100:
        raise ValueError(f"--trim must be two percentiles LO HI with 0 <= LO < HI <= 100, got {lo:g} {hi:g}")
    if args.value_range is not None:
        lo, hi = args.value_range
        if not hi > lo:
            raise ValueError(f"--value-range must be two finite numbers LO HI with HI > LO, got {lo} {hi}")


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse, before any work, an ``--out`` that could not take the outputs; creates nothing."""
    existing = [str(out / n) for n in EVAL_OUTPUTS if (out / n).exists()]
    if existing and not overwrite:
        raise ValueError(f"output files exist: {', '.join(existing)}; pass --overwrite to replace them")
    try:
        OUTPUT_FOLDER(str(out))  # a folder, not under a file, writable
    except ArgumentTypeError as exc:
        raise ValueError(f"--out {exc}") from None


def _check_task(image_set: ImageSet, task: Task, src: Path) -> None:
    """The mismatch policy (module docstring): an input that names another task is refused."""
    if image_set.task is None or image_set.task is task:
        return
    where = "its 'task' entry" if src.suffix.lower() == ".npz" else "its params.csv"
    raise ValueError(f"{str(src)!r} holds task {image_set.task.value} images ({where}), not task {task.value}: "
                     f"run 'eval {image_set.task.value} ...', or remove the task label to measure them as "
                     f"{task.value}")


def _eval_files(rows: list[dict], seeds: np.ndarray | None) -> dict[str, bytes]:
    """evaluation.jsonl and evaluation.csv: one row per image (file, [seed,] valid, reason, features, ...)."""
    keys = list(rows[0]["features"]) if rows else []
    seed_col = ["seed"] if seeds is not None else []
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["file", *seed_col, "valid", "reason", *keys, "x", "y", "ratio", "coarse_ok"])
    lines = []
    for i, row in enumerate(rows):
        head = {"file": row["file"], **({"seed": int(seeds[i])} if seeds is not None else {})}
        lines.append(json.dumps(_jsonable({**head, **{k: v for k, v in row.items() if k != "file"}})))
        writer.writerow([*head.values(), row["valid"], row["reason"],
                         *("" if row["features"][k] is None else repr(row["features"][k]) for k in keys),
                         *("" if row[k] is None else row[k] for k in ("x", "y", "ratio", "coarse_ok"))])
    return {"evaluation.jsonl": ("\n".join(lines) + ("\n" if lines else "")).encode(),
            "evaluation.csv": text.getvalue().encode()}


def _write_outputs(out: Path, contents: dict[str, bytes], overwrite: bool) -> list[Path]:
    """Write the finished outputs: a new (or empty) ``out`` is built under a temporary name and renamed
    into place; in a folder that holds other files each output replaces its file atomically, summary.json
    last. Either way nothing is written before the evaluation is complete."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        with atomic_folder(out) as tmp:
            for name, data in contents.items():
                atomic_write_bytes(tmp / name, data)
    else:
        _check_out(out, overwrite)  # again: the folder may have changed while the images were evaluated
        for name, data in contents.items():
            atomic_write_bytes(out / name, data)
    return [out / name for name in contents]


def run_eval(args) -> int:
    task = args.task
    _check_eval_flags(args)
    src = Path(args.path)
    if args.out is None and src.is_file() and src.suffix.lower() != ".npz":
        raise ValueError(f"{str(src)!r} is a single image: give --out DIR for its outputs (the default, "
                         f"{str(_default_out(src))!r}, would be written inside the image's folder)")
    out = Path(args.out) if args.out is not None else _default_out(src)
    _check_out(out, args.overwrite)
    image_set = read_images(src)
    if not image_set.images:
        skipped = image_set.skipped
        why = "; ".join(f"{f}: {r}" for f, r in skipped[:5]) + (f"; and {len(skipped) - 5} more"
                                                                 if len(skipped) > 5 else "")
        what = f"{len(skipped)} skipped: {why}" if skipped else "no image files"
        raise ValueError(f"no image could be read from {str(src)!r} ({what})")
    _check_task(image_set, task, src)
    for name, why in image_set.skipped:
        print(f"skipped {name}: {why}", file=sys.stderr)
    t0 = time.perf_counter()
    summary: dict = {"task": task.value, "input": str(src), "n_files": len(image_set.files),
                     "input_task": None if image_set.task is None else image_set.task.value,
                     "seeds": image_set.seeds is not None,
                     "skipped": [{"file": f, "reason": r} for f, r in image_set.skipped]}
    ev = _evaluate_set(image_set.images, task, args)
    rows = ev.rows()
    for row, name in zip(rows, image_set.files):
        row["file"] = name
    try:
        summary.update(ev.summary(trim=tuple(args.trim), n_boot=args.n_boot, seed=args.seed))
    except ValueError as exc:
        raise ValueError(flag_words(str(exc))) from exc
    truth = image_set.params
    if truth is not None and set(SPECS[task].rule_features) <= set(truth) and ev.valid.any():
        summary["ground_truth_errors"] = ev.ground_truth_errors(truth)
    summary["seconds"] = time.perf_counter() - t0
    contents = _eval_files(rows, image_set.seeds)
    contents["summary.json"] = (json.dumps(_jsonable(summary), indent=2) + "\n").encode()
    jsonl_path, csv_path, summary_path = _write_outputs(out, contents, args.overwrite)
    n_valid = summary.get("n_valid", 0)
    print(f"task {task.value}: {plural(len(rows), 'image')} evaluated, {n_valid} valid, "
          f"{len(image_set.skipped)} skipped ({summary['seconds']:.1f} s)")
    if summary.get("r2") is not None:
        print(f"fit y = {summary['beta1']:.4f} x {summary['beta0']:+.4f} (k = {summary['k']:.4f}), "
              f"R^2 = {summary['r2']:.4f}, Error = {summary['error']:.4f}, "
              f"coarse violations = {summary['coarse_violations']}")
    print(f"wrote {jsonl_path}, {csv_path}, {summary_path}")
    return 0

