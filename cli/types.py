"""Shared argparse types of the ``hidden-rules`` verbs: every flag is checked while the command line is
parsed, before any work, and a bad value is one line naming the flag (``cli.main`` prints it).

Each type is a callable ``text -> value`` raising ``argparse.ArgumentTypeError``; argparse adds the
flag's name (``argument --n: must be ...``), which ``cli.main`` rewrites as ``--n must be ...``.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from pathlib import Path

from empirics import threads
from empirics.tasks import Task


def _bad(message: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(message)


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise _bad(f"must be an integer, got {text!r}") from None


class IntRange:
    """An integer in [lo, hi]; ``hi`` bounds what memory or time allow (the message says so)."""

    def __init__(self, lo: int, hi: int | None = None, why: str = ""):
        self.lo, self.hi, self.why = lo, hi, why

    def __call__(self, text: str) -> int:
        n = _integer(text)
        if n < self.lo or (self.hi is not None and n > self.hi):
            span = f">= {self.lo}" if self.hi is None else f"an integer in [{self.lo}, {self.hi}]"
            raise _bad(f"must be {span}{f' ({self.why})' if self.why else ''}, got {n}")
        return n

    def __repr__(self) -> str:  # argparse names the type in some messages
        return "integer"


SEED = IntRange(0, 2**63 - 1)


def positive_int(hi: int | None = None, why: str = "") -> IntRange:
    return IntRange(1, hi, why)


class FiniteFloat:
    """A finite number with optional bounds: ``lo < x`` (or ``lo <= x`` when ``closed_lo``), ``x <= hi``."""

    def __init__(self, lo: float | None = None, hi: float | None = None, closed_lo: bool = True,
                 closed_hi: bool = True):
        self.lo, self.hi, self.closed_lo, self.closed_hi = lo, hi, closed_lo, closed_hi

    def __call__(self, text: str) -> float:
        try:
            x = float(text)
        except ValueError:
            raise _bad(f"must be a number, got {text!r}") from None
        ok = math.isfinite(x)
        if ok and self.lo is not None:
            ok = x >= self.lo if self.closed_lo else x > self.lo
        if ok and self.hi is not None:
            ok = x <= self.hi if self.closed_hi else x < self.hi
        if not ok:
            raise _bad(f"must be {self.describe()}, got {text}")
        return x

    def describe(self) -> str:
        if self.lo is None and self.hi is None:
            return "a finite number"
        if self.hi is None:
            return f"a finite number {'>=' if self.closed_lo else '>'} {self.lo:g}"
        if self.lo is None:
            return f"a finite number {'<=' if self.closed_hi else '<'} {self.hi:g}"
        return (f"a number in {'[' if self.closed_lo else '('}{self.lo:g}, {self.hi:g}"
                f"{']' if self.closed_hi else ')'}")

    def __repr__(self) -> str:
        return "number"


PROBABILITY = FiniteFloat(0.0, 1.0)
POSITIVE = FiniteFloat(0.0, closed_lo=False)
FINITE = FiniteFloat()


def task(text: str) -> Task:
    try:
        return Task.parse(text)
    except ValueError as exc:
        raise _bad(str(exc)) from exc


def thread_count(text: str):
    """``--threads``: ``auto`` or a positive integer (``empirics.threads.parse_threads``)."""
    try:
        return threads.parse_threads(text)
    except ValueError as exc:
        raise _bad(str(exc).removeprefix("--threads ")) from exc


def add_threads_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=thread_count, default=threads.AUTO,
                   help="torch CPU threads: a number, or auto (default: the cores idle at start, at least 1); "
                   "results are bit-identical for a given count, not across counts")


def nearest_existing(path: Path) -> Path:
    return next(q for q in (path, *path.parents) if q.exists())


def _named(text: str) -> Path:
    """``.`` and ``..`` as the folders they name (a folder called '' cannot be built under a temporary name)."""
    path = Path(text)
    return path.absolute().resolve() if path.name in ("", ".", "..") else path


def _writable(base: Path) -> bool:
    """Whether a folder can be created in ``base``: a probe created and removed at once (``os.access``
    says yes to root on read-only mounts)."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".hidden-rules-probe-", dir=base))
    except OSError:
        return False
    return True


class OutputFolder:
    """An output folder that exists or can be created: not a file, not under a file, and writable; checked
    up front so that no verb computes for minutes and then cannot write. Creates nothing; ``cli.main``
    removes the folders a failed call created (``created_by_call``)."""

    def __call__(self, text: str) -> str:
        if not text:
            raise _bad("must name a folder, got ''")
        out = _named(text)
        for parent in (out, *out.parents):
            if parent.exists() and not parent.is_dir():
                where = "is a file" if parent == out else f"is under the file {str(parent)!r}"
                raise _bad(f"{str(out)!r} {where}; give a folder")
        base = nearest_existing(out)
        if not _writable(base):
            raise _bad(f"{str(out)!r} cannot be created or written: {str(base)!r} is not writable")
        return str(out)  # a string, as argparse gives every other flag (figure scripts record args in JSON)

    def __repr__(self) -> str:
        return "folder"


OUTPUT_FOLDER = OutputFolder()


class OutputFile(OutputFolder):
    """An output file (``bounds --json``): its folder as ``OutputFolder``, and the path not a folder."""

    def __call__(self, text: str) -> str:
        path = Path(text)
        if path.is_dir() or not path.name:
            raise _bad(f"{text!r} is a folder; give a file name")
        OutputFolder.__call__(self, str(path.parent))
        return text


OUTPUT_FILE = OutputFile()


def run_folder(text: str) -> str:
    """A run folder written by ``hidden-rules train`` (it holds config.json)."""
    path = Path(text)
    if not path.exists():
        raise _bad(f"{text!r}: no run folder there (no such file or folder); train one with 'hidden-rules train'")
    if not (path / "config.json").is_file():
        raise _bad(f"{text!r} is not a run folder (no config.json); train one with 'hidden-rules train'")
    return text


def available_memory() -> int:
    """Bytes of physical memory (the bound of ``check_memory``)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 * 2**30


def check_memory(what: str, n_bytes: float) -> None:
    """Refuse up front a size whose arrays cannot fit in memory (rather than a MemoryError later)."""
    have = available_memory()
    if n_bytes > have / 2:
        raise ValueError(f"{what} needs about {n_bytes / 2**30:.3g} GiB of memory; this machine has "
                         f"{have / 2**30:.3g} GiB: ask for less")


def created_by_call(paths: list[Path]) -> list[Path]:
    """The top folders a call would create for ``paths`` (their first missing ancestors)."""
    out = []
    for path in paths:
        missing = [q for q in (path, *path.parents) if not q.exists()]
        if missing:
            out.append(missing[-1])
    return out


def holds_no_files(folder: Path) -> bool:
    return folder.is_dir() and not any(p.is_file() or p.is_symlink() for p in folder.rglob("*"))


def plural(n: int, noun: str) -> str:
    """``1 image``, ``2 images``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


# Diffusion times of the OU schedule (App. F) the theory verbs accept: below 1e-4, beta^2 = 1 - e^-2t loses
# its digits and the separable floor's quadrature grows past any memory (t = 1e-10: 215 GiB); above 10,
# alpha = e^-t < 5e-5 and the floor's fixed point no longer converges (t = 20), alpha = 0 past t ~ 745.
T_RANGE = (1e-4, 10.0)
DIFFUSION_TIME = FiniteFloat(*T_RANGE)

BOOT = IntRange(0, 100_000)  # bootstrap replicates: 1e5 already take minutes per task; 1e12 would never end
