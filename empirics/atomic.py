"""Atomic, umask-respecting file output: the one place where ``empirics`` and ``paper_figs`` write files.

Every result is written to a temporary name in its destination folder and renamed over the final
name, so a reader (or a resumed run) never sees half a file. Temporary files are created private
(``mkstemp``: 0600, ``mkdtemp``: 0700); before the rename they get the mode a plain ``open`` would
give (0666 / 0777 minus the umask: 0644 / 0755 under the usual 022), so collaborators and web
servers can read the results.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_torch_save", "atomic_folder", "write_json",
           "prepare_outputs", "check_folder"]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _open_mode(path, directory: bool = False) -> None:
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


@contextlib.contextmanager
def _temporary_file(path: Path) -> Iterator[tuple[int, str]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        yield fd, tmp
        _open_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with _temporary_file(Path(path)) as (fd, _):
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode())


def atomic_torch_save(obj, path) -> None:
    """``torch.save`` to ``path`` atomically, flushed to disk before the rename (checkpoints)."""
    import torch

    with _temporary_file(Path(path)) as (fd, _):
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_folder(path, overwrite: bool = False) -> Iterator[Path]:
    """Build a folder under a temporary name and rename it to ``path`` when the block succeeds.

    ``path`` must be absent or an empty folder, unless ``overwrite`` (its old content is removed
    only after the new folder is complete). On an exception nothing is left behind.
    """
    final = Path(path)
    if final.exists() and not final.is_dir():
        raise ValueError(f"{str(final)!r} exists and is not a folder")
    if final.exists() and any(final.iterdir()) and not overwrite:
        raise ValueError(f"{str(final)!r} exists and is not empty")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        yield tmp
        _open_mode(tmp, directory=True)
        if final.exists():
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path, obj) -> None:
    """``obj`` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def check_folder(path, flag: str = "--out") -> Path:
    """``path`` as a folder that exists or can be created: not a file, not under a file."""
    out = Path(path)
    for parent in (out, *out.parents):
        if parent.exists() and not parent.is_dir():
            where = "is a file" if parent == out else f"is under the file {str(parent)!r}"
            raise ValueError(f"{flag} {str(out)!r} {where}; give a folder")
    return out


def prepare_outputs(out_dir, names, overwrite: bool, flag: str = "--out") -> list[Path]:
    """Create the folder ``out_dir`` and return its output paths; refuse to replace existing files unless asked.

    Every problem is a ``ValueError`` naming ``flag``: a file where the folder should be, a path under
    a file, a folder that cannot be created, outputs that exist without ``overwrite``.
    """
    out = check_folder(out_dir, flag)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{flag} {str(out)!r} cannot be created: {exc.strerror or exc}") from exc
    paths = [out / n for n in names]
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise ValueError(f"output files exist: {', '.join(existing)}; pass --overwrite to replace them")
    return paths
