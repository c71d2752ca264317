"""``--threads auto`` (the default) against 1 and 2 threads, idle and beside one competing process.

Times whole ``hidden-rules train`` commands (start-up included, as a user sees them) in rounds that
visit every setting in turn; the competitor is one busy python process started before and stopped
after each command. Prints the median wall time per setting and its ratio to ``auto``.

    python benchmarks/threads.py --rounds 2 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ("auto", "1", "2")
JOBS = {"smoke, 20 steps": ["--preset", "smoke"], "cpu, 10 steps": ["--preset", "cpu", "--steps", "10"]}


def timed_train(job: list[str], threads: str, competitor: bool) -> tuple[float, int]:
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if competitor else None
    try:
        time.sleep(0.5)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "run"
            env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
            env["PYTHONPATH"] = str(ROOT)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "paper_figs.cli", "train", "C", *job, "--out", str(out),
                            "--threads", threads, "--no-progress"], check=True, env=env, capture_output=True)
            seconds = time.perf_counter() - t0
            used = json.loads((out / "train_stats.json").read_text())["sessions"][-1]["torch_threads"]
    finally:
        if spin is not None:
            spin.kill()
            spin.wait()
    return seconds, used


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", default=None, help="write the numbers here (refuses an existing file)")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    if args.json and Path(args.json).exists():
        p.error(f"--json {args.json!r} exists; choose another path")
    out = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(), "rounds": args.rounds, "jobs": {}}
    for job_name, job in JOBS.items():
        for competitor in (False, True):
            key = f"{job_name}, {'one competing process' if competitor else 'idle'}"
            times = {s: [] for s in SETTINGS}
            used = {}
            for _ in range(args.rounds):
                for s in SETTINGS:
                    sec, n = timed_train(job, s, competitor)
                    times[s].append(sec)
                    used[s] = n
            med = {s: statistics.median(v) for s, v in times.items()}
            out["jobs"][key] = {s: {"seconds": round(med[s], 2), "ratio_to_auto": round(med[s] / med["auto"], 3),
                                    "threads_used": used[s]} for s in SETTINGS}
            print(key, "  ".join(f"{s}: {med[s]:.1f} s ({med[s] / med['auto']:.2f}x auto, {used[s]} thr)"
                                 for s in SETTINGS), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
