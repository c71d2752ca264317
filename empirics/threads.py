"""How many CPU threads torch uses: ``--threads auto`` (the default) or a fixed count.

torch starts one worker thread per core, which oversubscribes a shared machine: beside one busy
process, a whole ``hidden-rules train`` of 10 ``cpu``-preset steps took 13.8 s with 2 threads against
10.3 s with 1, and 20 ``smoke`` steps 10.5 s against 7.1 s (docs/threads_benchmark.json, written by
``benchmarks/threads.py`` on one 2-core machine). ``auto``
therefore counts the cores that are idle now (``/proc/stat`` over a quarter second; the 1-minute load
average elsewhere) and uses that many, at least 1 and at most the cores this process may run on (and
at most ``OMP_NUM_THREADS`` when that is set: a limit the user chose is kept).

Results are bit-identical for a given thread count, not across counts (a convolution sums in another
order with another count: a ``smoke`` run trained with 1 and with 2 threads ends with different
weights). Every run records the count it used (``train_stats.json``, the samples' ``meta``); pass
``--threads N`` to repeat a run bit for bit.
"""

from __future__ import annotations

import os
import time

__all__ = ["AUTO", "usable_cpus", "idle_cpus", "choose_threads", "set_threads", "parse_threads"]

AUTO = "auto"


def usable_cpus() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _cpu_times() -> tuple[int, int] | None:
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return idle, sum(fields[:8])


def idle_cpus(interval: float = 0.25) -> float:
    """Cores idle over the next ``interval`` seconds (Linux ``/proc/stat``); elsewhere cores minus the
    1-minute load average."""
    if not (0.01 <= interval <= 10):
        raise ValueError(f"interval must be in [0.01, 10] seconds, got {interval}")
    total = os.cpu_count() or 1
    first = _cpu_times()
    if first is None:
        try:
            return max(0.0, total - os.getloadavg()[0])
        except (AttributeError, OSError):
            return float(total)
    time.sleep(interval)
    second = _cpu_times()
    d_idle, d_all = second[0] - first[0], second[1] - first[1]
    return total * d_idle / d_all if d_all > 0 else float(total)


def choose_threads(spec: int | str = AUTO) -> int:
    """The thread count for ``spec``: a positive int as given (at most the usable cores), or ``"auto"``:
    the idle cores rounded to the nearest integer, between 1 and the usable cores (and
    ``OMP_NUM_THREADS`` when set)."""
    cores = usable_cpus()
    if isinstance(spec, str) and spec == AUTO:
        cap = cores
        omp = os.environ.get("OMP_NUM_THREADS", "").strip()
        if omp.isdigit() and int(omp) >= 1:
            cap = min(cap, int(omp))
        return max(1, min(cap, int(idle_cpus() + 0.5)))
    if isinstance(spec, bool) or not isinstance(spec, int):
        raise ValueError(f"threads must be a positive integer or 'auto', got {spec!r}")
    if not 1 <= spec <= cores:
        raise ValueError(f"threads must be between 1 and the {cores} usable cores, got {spec}")
    return spec


def set_threads(spec: int | str = AUTO) -> int:
    """Set torch's intra-op thread count from ``spec`` (see :func:`choose_threads`) and return it."""
    import torch

    n = choose_threads(spec)
    torch.set_num_threads(n)
    return n


def parse_threads(text: str) -> int | str:
    """argparse type of ``--threads``: ``auto`` or a positive integer (checked against the cores later)."""
    if text == AUTO:
        return AUTO
    try:
        n = int(text)
    except ValueError:
        raise ValueError(f"--threads must be 'auto' or a positive integer, got {text!r}") from None
    if n < 1:
        raise ValueError(f"--threads must be 'auto' or a positive integer, got {text!r}")
    return n
