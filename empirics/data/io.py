"""Saving and loading task data: ``.npz`` archives and PNG folders, and reading images to evaluate.

PNG folder layout (read as-is by torchvision ``ImageFolder`` and by the diffusers examples'
``datasets.load_dataset("imagefolder", data_dir=...)``)::

    OUT/
      A/000000.png, A/000001.png, ...     one RGB PNG per image, in a folder named after the task
      params.csv                          file_name (relative to OUT), task, size, seed, then every
                                          ground-truth parameter of ``TaskBatch.params``

``params.csv`` is written last, atomically, so its presence marks a complete folder.
"""

from __future__ import annotations

import csv
import io
import json
import os
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from empirics.atomic import atomic_write_bytes
from empirics.data.images import as_float_rgb
from empirics.data.render import TaskBatch
from empirics.data.tasks import Task

__all__ = ["save_npz", "load_npz", "save_png_folder", "load_png_folder", "ImageSet", "read_images",
           "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
# Files that live next to images (ground truth, archives, evaluation outputs): not listed as skipped.
COMPANION_SUFFIXES = (".csv", ".npz", ".json", ".jsonl", ".md", ".txt")
_PARAM_PREFIX = "param__"
GRAYSCALE_REASON = ("grayscale (single-channel) image, but the rules are read from colours; "
                    "give an RGB or RGBA image")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_GRAY_TYPES = (0, 4)  # IHDR colour types: 0 grey, 4 grey + alpha (2 RGB, 3 palette, 6 RGBA)


def _as_path(path, what: str) -> Path:
    if not isinstance(path, str | os.PathLike) or str(path) == "":
        raise ValueError(f"{what} must be a path (str or pathlib.Path), got {path!r}")
    return Path(path)


def _atomic_write(path: Path, data: bytes) -> None:
    atomic_write_bytes(path, data)


def save_npz(batch: TaskBatch, path, overwrite: bool = False) -> None:
    """Write ``batch`` to a compressed ``.npz`` (images, task, meta and every parameter).

    Refuses to replace an existing file unless ``overwrite`` (as ``save_png_folder``).
    """
    if not isinstance(batch, TaskBatch):
        raise ValueError(f"batch must be a TaskBatch, got {type(batch).__name__}")
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"path must end in .npz, got {str(path)!r}")
    if path.exists() and not overwrite:
        raise ValueError(f"{str(path)!r} exists; pass overwrite=True (--overwrite) to replace it")
    buf = io.BytesIO()
    arrays = {f"{_PARAM_PREFIX}{k}": np.asarray(v, np.float64) for k, v in batch.params.items()}
    np.savez_compressed(buf, images=batch.images, task=np.array(batch.task.value),
                        meta=np.array(json.dumps(batch.meta)), **arrays)
    _atomic_write(path, buf.getvalue())


def _npz_arrays(path: Path, names, hint: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """The arrays ``names`` (all when None) of the ``.npz`` at ``path`` that it holds, and every name in it.

    A file that is not an archive of plain arrays raises a ValueError saying so (numpy's own
    errors advise unpickling, which we never do); ``hint`` says what to give instead.
    """
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{str(path)!r} is not an .npz archive (not a zip file); {hint}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{str(path)!r} is not a readable .npz archive ({exc}); {hint}") from exc
    with archive:
        present = list(archive.files)
        arrays = {}
        for name in present if names is None else [n for n in names if n in present]:
            try:
                value = archive[name]
            except ValueError as exc:
                why = ("holds Python objects (an object array), which are not read; store numeric arrays"
                       if "pickle" in str(exc) else f"is damaged ({exc})")
                raise ValueError(f"{str(path)!r}: the array {name!r} {why}") from exc
            except (OSError, EOFError, zipfile.BadZipFile) as exc:
                raise ValueError(f"{str(path)!r}: the array {name!r} is damaged ({exc})") from exc
            if not isinstance(value, np.ndarray):
                raise ValueError(f"{str(path)!r}: {name!r} is not a numpy array (.npy) but raw bytes; {hint}")
            arrays[name] = value
    return arrays, present


def load_npz(path) -> TaskBatch:
    """Read a ``TaskBatch`` written by ``save_npz``."""
    path = _as_path(path, "path")
    if not path.is_file():
        raise ValueError(f"no such file: {str(path)!r}")
    arrays, names = _npz_arrays(path, None, "give a task archive written by save_npz "
                                            "(hidden-rules data --format npz)")
    if not {"images", "task"} <= set(names):
        raise ValueError(f"{str(path)!r} is not a task archive (needs 'images' and 'task', has {names})")
    params = {k[len(_PARAM_PREFIX):]: v for k, v in arrays.items() if k.startswith(_PARAM_PREFIX)}
    try:
        meta = json.loads(str(arrays["meta"])) if "meta" in arrays else {}
    except json.JSONDecodeError as exc:
        raise ValueError(f"{str(path)!r}: 'meta' is not JSON ({exc})") from exc
    return TaskBatch(arrays["images"], params, str(arrays["task"]), meta)


def save_png_folder(batch: TaskBatch, out_dir, overwrite: bool = False) -> Path:
    """Write one PNG per image to ``out_dir/<task>/`` and ``out_dir/params.csv``; returns the csv path."""
    if not isinstance(batch, TaskBatch):
        raise ValueError(f"batch must be a TaskBatch, got {type(batch).__name__}")
    out = Path(out_dir)
    sub = out / batch.task.value
    csv_path = out / "params.csv"
    if not overwrite and (csv_path.exists() or (sub.exists() and any(sub.iterdir()))):
        raise ValueError(f"{str(out)!r} already holds a dataset; pass overwrite=True (--overwrite) "
                         "to replace it")
    sub.mkdir(parents=True, exist_ok=True)
    if overwrite:
        for old in sub.glob("*.png"):
            old.unlink()
    names = []
    for i, img in enumerate(batch.images):
        name = f"{batch.task.value}/{i:06d}.png"
        ok, enc = cv2.imencode(".png", np.ascontiguousarray(img[:, :, ::-1]))
        if not ok:  # pragma: no cover - OpenCV failure
            raise RuntimeError(f"PNG encoding failed for image {i}")
        (out / name).write_bytes(enc.tobytes())
        names.append(name)
    keys = sorted(batch.params)
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["file_name", "task", "size", "seed", *keys])
    seed = batch.meta.get("seed", "")
    for i, name in enumerate(names):
        values = (repr(float(batch.params[k][i])) for k in keys)
        writer.writerow([name, batch.task.value, batch.size, seed, *values])
    _atomic_write(csv_path, text.getvalue().encode())
    return csv_path


def load_png_folder(path) -> TaskBatch:
    """Read a folder written by ``save_png_folder`` (images in ``params.csv`` order)."""
    root = Path(path)
    csv_path = root / "params.csv"
    if not csv_path.is_file():
        raise ValueError(f"{str(root)!r} has no params.csv; use read_images() for folders without "
                         "ground truth")
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{str(csv_path)!r} lists no images")
    tasks = {r["task"] for r in rows}
    if len(tasks) != 1:
        raise ValueError(f"{str(csv_path)!r} mixes tasks {sorted(tasks)}")
    images = []
    for r in rows:
        img = _read_one(root / r["file_name"])
        if isinstance(img, str):
            raise ValueError(f"{r['file_name']}: {img}")
        images.append(img)
    sizes = {im.shape for im in images}
    if len(sizes) != 1:
        raise ValueError(f"images of different sizes in {str(root)!r}: {sorted(sizes)}")
    fixed = {"file_name", "task", "size", "seed"}
    params = {k: np.array([float(r[k]) for r in rows]) for k in rows[0] if k not in fixed}
    seed = rows[0].get("seed", "")
    meta = {"task": rows[0]["task"], "size": int(rows[0]["size"])}
    if seed not in ("", None):
        meta["seed"] = int(seed)
    return TaskBatch(np.stack(images), params, rows[0]["task"], meta)


@contextmanager
def _quiet_opencv() -> Iterator[None]:
    """OpenCV's own log lines ("[ WARN:0@...] global loadsave.cpp imread_ ...") off while decoding:
    a file that cannot be decoded is reported once, by its caller, with the reason."""
    log = cv2.utils.logging
    level = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        log.setLogLevel(level)


def _read_one(path: Path):
    """An RGB uint8 image, or a string saying why the file cannot be evaluated."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if not data:
        return "unreadable (empty file)"
    with _quiet_opencv():
        try:
            raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        except cv2.error:
            raw = None
    if raw is None:
        return "unreadable (not a decodable image)"
    # OpenCV gives grey + alpha PNGs four channels: the PNG header says what the file holds.
    png_gray = data.startswith(_PNG_SIGNATURE) and len(data) > 25 and data[25] in _PNG_GRAY_TYPES
    if raw.ndim == 2 or raw.shape[2] in (1, 2) or png_gray:
        return GRAYSCALE_REASON
    if raw.dtype == np.uint16:
        raw = np.round(raw / 257.0).astype(np.uint8)
    elif raw.dtype != np.uint8:
        return f"unsupported pixel type {raw.dtype}"
    if raw.shape[2] == 3:
        rgb = raw[:, :, ::-1]
    elif raw.shape[2] == 4:
        alpha = raw[:, :, 3:4].astype(np.float32) / 255.0
        rgb = np.round(raw[:, :, 2::-1] * alpha + 255.0 * (1 - alpha)).astype(np.uint8)
    else:
        return f"unsupported channel layout {raw.shape}"
    h, w = rgb.shape[:2]
    if h != w:
        return f"not square ({w} x {h} px)"
    if h < 16:
        return f"too small ({w} x {h} px, need >= 16)"
    return np.ascontiguousarray(rgb)


def _image_list(arr: np.ndarray, path: Path) -> list[np.ndarray]:
    """The images of an array read from ``path``, each [S, S, 3]; refused (ValueError) as ``as_float_rgb``
    refuses it: grayscale, RGBA, empty, not square, too small, not numeric."""
    try:  # shape and type checks only (an explicit range skips the value checks), on one image
        as_float_rgb(arr[:1] if arr.ndim == 4 else arr, value_range=(0.0, 1.0))
    except ValueError:
        try:  # refused before any conversion: again on the whole array, for a message with its shape
            as_float_rgb(arr, value_range=(0.0, 1.0))
        except ValueError as exc:
            raise ValueError(f"{str(path)!r}: {exc}") from exc
        raise
    if arr.ndim == 3:
        arr = arr[None]  # one image
    if arr.shape[-1] != 3:
        arr = arr.transpose(0, 2, 3, 1)  # channels first, as as_float_rgb reads it
    return list(arr)


@dataclass(frozen=True)
class ImageSet:
    """Images found at a path, in order, and what the input says about them.

    ``files``: a name per image (``<archive>.npz#i`` for archives, the relative path in a folder);
    ``images``: arrays [S, S, 3] (RGB uint8 or float); ``skipped``: (file, reason) of what could not be
    read; ``params``: ground truth per image (``TaskBatch.params``), None when the input has none;
    ``task``: the task the input names (an npz's ``task`` entry, a folder's ``params.csv``), None when
    it names none; ``seeds``: int64 [N] sampling seeds (an npz's ``seeds``, a sample folder's
    ``samples.csv``), None when absent.
    """

    files: list[str]
    images: list[np.ndarray]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    params: dict[str, np.ndarray] | None = None
    task: Task | None = None
    seeds: np.ndarray | None = None


def _per_image(value: np.ndarray, n: int, what: str, path: Path, integer: bool) -> np.ndarray:
    """``value`` as one number per image (float64, or int64 when ``integer``), or a ValueError naming it."""
    value = np.asarray(value)
    kinds = "iu" if integer else "iuf"
    if value.shape != (n,) or value.dtype.kind not in kinds:
        allowed = "integers" if integer else "numbers"
        raise ValueError(f"{str(path)!r}: {what} must hold one of {allowed} per image ({n},), got "
                         f"{value.dtype} {value.shape}")
    return value.astype(np.int64 if integer else np.float64)


def _read_npz(p: Path) -> ImageSet:
    """An archive with ``images`` and optionally ``task``, ``seeds``, ``meta`` and ``param__<name>``
    arrays (``save_npz`` writes a task archive, ``hidden-rules sample`` images + seeds + task)."""
    hint = ("give an .npz written by numpy (np.savez) with an 'images' array, an image, "
            "or a folder of images")
    _, names = _npz_arrays(p, (), hint)
    if "images" not in names:
        raise ValueError(f"{str(p)!r} has no 'images' array (it holds {names}); {hint}")
    wanted = ["images", "task", "seeds", *(k for k in names if k.startswith(_PARAM_PREFIX))]
    arrays, _ = _npz_arrays(p, wanted, hint)
    images = _image_list(arrays["images"], p)
    n = len(images)
    task = None
    if "task" in arrays:
        try:
            task = Task.parse(str(arrays["task"]))
        except ValueError:  # a 'task' entry that is not one of ours: the images are read alone
            task = None
    seeds = _per_image(arrays["seeds"], n, "'seeds'", p, integer=True) if "seeds" in arrays else None
    params = {k[len(_PARAM_PREFIX):]: _per_image(v, n, repr(k), p, integer=False)
              for k, v in arrays.items() if k.startswith(_PARAM_PREFIX)}
    return ImageSet([f"{p.name}#{i}" for i in range(n)], images, [], params or None, task, seeds)


def _csv_rows(path: Path, files: list[str]) -> list[dict] | None:
    """The rows of a companion csv (``params.csv``, ``samples.csv``) for ``files``, in their order, or
    None when it is unreadable or does not cover every file."""
    if not path.is_file() or not files:
        return None
    try:
        with open(path, newline="") as fh:
            rows = {r["file_name"]: r for r in csv.DictReader(fh)}
    except (KeyError, csv.Error, UnicodeDecodeError, OSError):
        return None
    return [rows[f] for f in files] if all(f in rows for f in files) else None


def _folder_truth(root: Path, files: list[str]) -> tuple[dict | None, Task | None, np.ndarray | None]:
    """Ground truth and task from ``params.csv``, seeds from ``samples.csv`` (``hidden-rules sample``),
    each kept only when its file covers every image and parses."""
    params = task = seeds = None
    rows = _csv_rows(root / "params.csv", files)
    if rows is not None:
        fixed = {"file_name", "task", "size", "seed"}
        try:
            params = {k: np.array([float(r[k]) for r in rows]) for k in rows[0] if k not in fixed}
            task = Task.parse(rows[0]["task"])
        except (KeyError, ValueError, TypeError):
            params, task = None, None
    rows = _csv_rows(root / "samples.csv", files)
    if rows is not None:
        try:
            seeds = np.array([int(r["seed"]) for r in rows], np.int64)
        except (KeyError, ValueError, TypeError):
            seeds = None
    return params or None, task, seeds


def read_images(path) -> ImageSet:
    """Everything ``hidden-rules eval`` can read at ``path``.

    ``path`` is an ``.npz`` (any archive with an ``images`` array; ``task``, ``seeds`` and ground-truth
    ``param__<name>`` arrays are kept when present, as ``save_npz`` and ``hidden-rules sample`` write
    them), an image file, or a folder searched recursively for image files (sorted by relative path).
    Unreadable, grayscale, non-square or too small files, and unknown non-image files, are listed in
    ``skipped`` with the reason (companions such as ``params.csv``, ``.npz``, ``.json`` are passed over
    silently). If the folder has a ``params.csv`` covering the images, its ground truth and task are
    kept; a ``samples.csv`` covering them gives the seeds. An ``.npz`` that is not an archive of images,
    whose images are not RGB, or whose ``seeds`` / ``param__`` arrays are not one number per image,
    raises ValueError saying so.
    """
    p = _as_path(path, "path")
    if not p.exists():
        raise ValueError(f"no such file or folder: {str(p)!r}")
    if p.is_file() and p.suffix.lower() == ".npz":
        return _read_npz(p)
    if p.is_file():
        img = _read_one(p)
        if isinstance(img, str):
            return ImageSet([], [], [(p.name, img)])
        return ImageSet([p.name], [img])
    files, images, skipped = [], [], []
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        rel = f.relative_to(p).as_posix()
        if any(part.startswith(".") for part in f.relative_to(p).parts):
            continue
        if f.suffix.lower() not in IMAGE_SUFFIXES:
            if f.suffix.lower() not in COMPANION_SUFFIXES:
                skipped.append((rel, "not an image file"))
            continue
        img = _read_one(f)
        if isinstance(img, str):
            skipped.append((rel, img))
        else:
            files.append(rel)
            images.append(img)
    return ImageSet(files, images, skipped, *_folder_truth(p, files))
