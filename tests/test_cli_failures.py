"""The command line fails the same way everywhere (issue 26, "A CLI that fails the same way everywhere"):
one row per item of the issue's list, each run as a user would (``python -m paper_figs.cli``, a subprocess).

Every row checks: the exit status; ONE line on stderr holding the expected words (``hidden-rules VERB:
error: ...``), or for a successful row the expected words on stdout; no traceback; nothing left behind
in the row's folder (no new file or folder but the ones the row names); the user's files intact.

The rows run concurrently (two at a time) in one module-scoped fixture; the rows that need a trained run
share one smoke run, made by the Ctrl-C row's training and its resume.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNWRITABLE = "/proc/hidden-rules-test/out"  # cannot be created, not even by root
USER_FILE = "notes.txt"                     # every row's folder holds this user's file
T_RANGE = "--t must be a number in [0.0001, 10]"
INTERRUPT_STEPS = "40"  # steps of the shared smoke run that the Ctrl-C row interrupts


@dataclass(frozen=True)
class Row:
    item: str                       # the words
    argv: tuple[str, ...]           # {run} = the trained smoke run, {here} = the row's folder
    status: int
    message: str                    # expected in the one stderr line (status != 0) or on stdout (status 0)
    needs_run: bool = False
    setup: str | None = None        # a name of SETUPS: more user files in the row's folder
    creates: tuple[str, ...] = ()   # what the row may leave in its folder (a successful row's outputs)
    within: float | None = None     # CPU seconds: refused before any work (the work takes longer)


FIG6 = ("figure6", "--out", "{here}/fig", "--d", "5", "--m", "2", "--t", "0.4", "--activations", "relu",
        "--epochs", "20", "--no-progress", "--workers", "1")

ROWS = [
    # Data loss
    Row("sample --out on a folder holding only a user's file", ("sample", "{run}", "--n", "2", "--out", "{here}"),
        2, "is not a sample folder", needs_run=True),
    Row("sample --out on a user's folder with --overwrite",
        ("sample", "{run}", "--n", "2", "--out", "{here}", "--overwrite"), 2, "is not a sample folder",
        needs_run=True),
    # An unwritable or odd --out
    Row("data: unwritable --out", ("data", "A", "--n", "5", "--out", UNWRITABLE), 2, "is not writable"),
    Row("bounds --json: unwritable", ("bounds", "--json", UNWRITABLE + "/b.json"), 2, "is not writable"),
    Row("figure4: unwritable --out", ("figure4", "{here}/no-run", "--out", UNWRITABLE), 2, "is not writable"),
    Row("figure6: unwritable --out, before any training", ("figure6", "--out", UNWRITABLE), 2, "is not writable",
        within=6.0),
    Row("sample: unwritable --out", ("sample", "{run}", "--n", "2", "--out", UNWRITABLE), 2, "is not writable",
        needs_run=True),
    Row("train: unwritable --out", ("train", "A", "--preset", "smoke", "--out", UNWRITABLE), 2, "is not writable"),
    Row("sample --out EXISTING_FILE", ("sample", "{run}", "--n", "2", "--out", "{here}/" + USER_FILE), 2,
        "is a file; give a folder", needs_run=True),
    Row("sample --out .", ("sample", "{run}", "--n", "2", "--out", "."), 2, "is not a sample folder",
        needs_run=True),
    # Empty folders left behind after a failure
    Row("table1 leaves no folder", ("table1", "{here}/no-run", "--out", "{here}/new"), 2, "is not a run folder"),
    Row("figure4 leaves no folder", ("figure4", "{here}/no-run", "--out", "{here}/new"), 2, "is not a run folder"),
    Row("table2 leaves no folder", ("table2", "{here}/no-run", "--samples", "ddim-50", "--out", "{here}/new"), 2,
        "no-run"),
    Row("appendix-a --grid 0 leaves no folder", ("appendix-a", "--grid", "0", "--out", "{here}/new"), 2,
        "--grid must be an integer in [11, 4001], got 0"),
    Row("eval after an error leaves no folder", ("eval", "A", "{here}/empty", "--out", "{here}/new/sub"), 2,
        "no image could be read", setup="empty_folder"),
    # Absurd sizes, refused up front
    Row("eval --n-boot 1000000000000", ("eval", "A", "{here}/empty", "--n-boot", "1000000000000"), 2,
        "--n-boot must be an integer in [0, 100000]", setup="empty_folder"),
    Row("data --n 99999999999", ("data", "A", "--n", "99999999999", "--out", "{here}/new"), 2, "GiB of memory"),
    Row("figure6 --d 100000000", (*FIG6, "--d", "100000000"), 2, "--d must be an integer in [1, 1000000]"),
    Row("figure6 --samples 10000000000, before any training", ("figure6", "--out", "{here}/fig", "--samples",
                                                                "10000000000"), 2, "GiB of memory", within=6.0),
    Row("appendix-a --grid 100000000", ("appendix-a", "--grid", "100000000", "--out", "{here}/new"), 2,
        "--grid must be an integer in [11, 4001]"),
    # bounds at extreme t: a range check up front
    Row("bounds --t 20", ("bounds", "--t", "20"), 2, T_RANGE, within=6.0),
    Row("bounds --t 1e-10", ("bounds", "--t", "1e-10"), 2, T_RANGE, within=6.0),
    Row("bounds --t 1e-300", ("bounds", "--t", "1e-300"), 2, T_RANGE, within=6.0),
    Row("bounds --t 1e308", ("bounds", "--t", "1e308"), 2, T_RANGE, within=6.0),
    # Messages
    Row("ddpm-curves --every 0", ("ddpm-curves", "{run}", "--every", "0", "--out", "{here}/new"), 2,
        "--every must be", needs_run=True),
    Row("ddpm-curves --threads 0", ("ddpm-curves", "{run}", "--threads", "0", "--out", "{here}/new"), 2,
        "--threads", needs_run=True),
    Row("argparse errors are one line", ("data", "A"), 2, "the following arguments are required: --out"),
    Row("argparse: a bad choice is one line", ("train", "A", "--preset", "gpu", "--out", "{here}/new"), 2,
        "--preset: invalid choice: 'gpu'"),
    Row("--help still prints the usage", ("data", "--help"), 0, "usage: hidden-rules data"),
    Row("no internal name: --fine-factor", ("data", "A", "--fine-factor", "3", "--out", "{here}/new"), 2,
        "--fine-factor must be a number in [0.5, 1.5], got 3"),
    Row("no 'alpha must be > 0' for --t 1e308", (*FIG6, "--t", "1e308"), 2, T_RANGE),
    Row("no 'a finite number in [-inf, inf]'", ("train", "A", "--preset", "smoke", "--lr", "nan", "--out",
                                                "{here}/new"), 2, "--lr must be a finite number > 0, got nan"),
    Row("a bad value before an existing-file conflict", ("data", "A", "--fine-factor", "nan", "--out", "{here}"), 2,
        "--fine-factor must be a number", setup="data_set"),
    Row("train B --out runs/A says task B was asked for", ("train", "B", "--preset", "smoke", "--out", "{run}"), 2,
        "you asked for task B, preset smoke, but --out", needs_run=True),
    Row("train on a finished run names --force",
        ("train", "A", "--preset", "smoke", "--steps", INTERRUPT_STEPS, "--out", "{run}"), 2, "pass --force",
        needs_run=True),
    # Small things
    Row("eval of a single image writes nothing inside its folder", ("eval", "A", "{here}/img/000000.png"), 2,
        "is a single image: give --out DIR", setup="one_image"),
    Row("'1 image', not '1 images'", ("eval", "A", "{here}/img/000000.png", "--out", "{here}/res", "--n-boot", "0",
                                      "--workers", "1"), 0, "1 image evaluated", setup="one_image", creates=("res",)),
    Row("the sample help lists dpmpp-sde", ("sample", "--help"), 0, "dpmpp-sde"),
    Row("figure6 --no-progress has a help text", ("figure6", "--help"), 0, "--no-progress         no progress bars"),
    Row("the evaluator benchmark does not overwrite a JSON without --overwrite",
        ("benchmarks/evaluator.py", "--json", "{here}/" + USER_FILE), 2, "pass --overwrite"),
    Row("theory-samples: unwritable --out, before any training", ("theory-samples", "--out", UNWRITABLE), 2,
        "is not writable", within=6.0),
    Row("theory-samples --steps 0", ("theory-samples", "--steps", "0", "--out", "{here}/new"), 2,
        "--steps must be an integer in [1, 200], got 0"),
    Row("theory-samples --t-min 20", ("theory-samples", "--t-min", "20", "--out", "{here}/new"), 2,
        "--t-min must be a number in [0.0001, 10], got 20"),
    Row("theory-samples --zeta bogus leaves no folder", ("theory-samples", "--zeta", "bogus", "--out", "{here}/new"),
        2, "bad zeta spec 'bogus'", within=6.0),
    Row("theory-samples --n 5", ("theory-samples", "--n", "5", "--out", "{here}/new"), 2, "--n must be >= 10"),
]
INTERRUPT_ITEM = "Ctrl-C in train says progress is saved and a rerun resumes"


def _one_image(here: Path) -> None:
    import cv2

    from empirics.tasks import generate

    (here / "img").mkdir()
    cv2.imwrite(str(here / "img" / "000000.png"), generate("A", 1, 32, seed=0).images[0][..., ::-1])


SETUPS = {
    "empty_folder": lambda here: (here / "empty").mkdir(),
    "data_set": lambda here: (here / "params.csv").write_text("user's data set\n"),
    "one_image": _one_image,
}


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


def _command(argv: list[str]) -> list[str]:
    if argv[0].endswith(".py"):
        return [sys.executable, str(ROOT / argv[0]), *argv[1:]]
    return [sys.executable, "-m", "paper_figs.cli", *argv]


def _listing(root: Path) -> dict[str, bytes | None]:
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in root.rglob("*")}


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str
    cpu_seconds: float
    before: dict
    after: dict


def _run_row(row: Row, here: Path, run: Path | None) -> Outcome:
    here.mkdir(parents=True)
    (here / USER_FILE).write_text("mine")
    if row.setup:
        SETUPS[row.setup](here)
    before = _listing(here)
    subs = {"{here}": str(here), "{run}": str(run)}
    argv = [a.replace("{here}", subs["{here}"]).replace("{run}", subs["{run}"]) for a in row.argv]
    code, out, err, cpu = _run_measured(_command(argv), here)
    return Outcome(code, out, err, cpu, before, _listing(here))


def _run_measured(cmd: list[str], cwd: Path) -> tuple[int, str, str, float]:
    """Exit status, stdout, stderr and CPU seconds of one command (CPU, not wall time: the machine may be busy)."""
    logs = cwd.parent / f"{cwd.name}.stdout", cwd.parent / f"{cwd.name}.stderr"  # outside the row's folder
    with open(logs[0], "w+") as out, open(logs[1], "w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=_env(), cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        texts = out.read(), err.read()
    return proc.returncode, *texts, usage.ru_utime + usage.ru_stime


def _interrupt_and_resume(here: Path) -> tuple[Outcome, Path]:
    """Ctrl-C a smoke training once its first checkpoint is written, then rerun it: the shared run."""
    here.mkdir(parents=True)
    (here / USER_FILE).write_text("mine")
    run = here / "run"
    argv = ["train", "A", "--preset", "smoke", "--steps", INTERRUPT_STEPS, "--out", str(run), "--no-progress",
            "--threads", "1"]
    t0 = time.perf_counter()
    # The child gets the default SIGINT action whatever the test runner inherited: a suite started in the
    # background (`make test &`) ignores SIGINT, Python then installs no KeyboardInterrupt handler, and the
    # "Ctrl-C" would be lost (the training ran to its end, and the resume found a finished run).
    proc = subprocess.Popen(_command(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                            cwd=here, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    while not (run / "checkpoint.pt").exists() and proc.poll() is None and time.perf_counter() - t0 < 240:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    outcome = Outcome(proc.returncode, out, err, time.perf_counter() - t0, {USER_FILE: b"mine"}, _listing(here))
    resumed = subprocess.run(_command(argv), capture_output=True, text=True, env=_env(), timeout=300, cwd=here)
    assert resumed.returncode == 0 and re.search(rf"steps [1-9]\d*0 -> {INTERRUPT_STEPS} of {INTERRUPT_STEPS}",
                                                 resumed.stdout), \
        (resumed.stdout, resumed.stderr[-1500:])  # resumed from a checkpoint, not from step 0
    return outcome, run


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, Outcome]:
    root = tmp_path_factory.mktemp("cli_failures")
    with ThreadPoolExecutor(max_workers=2) as pool:
        trained = pool.submit(_interrupt_and_resume, root / "interrupt")
        free = {row.item: pool.submit(_run_row, row, root / f"row{i:02d}", None)
                for i, row in enumerate(ROWS) if not row.needs_run}
        interrupted, run = trained.result()
        run_before = _listing(run)
        with_run = {row.item: pool.submit(_run_row, row, root / f"row{i:02d}", run)
                    for i, row in enumerate(ROWS) if row.needs_run}
        results = {item: f.result() for item, f in {**free, **with_run}.items()}
    assert _listing(run) == run_before  # no row touched the trained run
    results[INTERRUPT_ITEM] = interrupted
    return results


def _check(row: Row, res: Outcome) -> None:
    lines = res.stderr.strip().splitlines()
    assert res.returncode == row.status, (res.returncode, res.stderr[-1500:])
    assert "Traceback" not in res.stderr
    if row.status == 0:
        assert row.message in res.stdout, res.stdout[-1500:]
    else:
        assert len(lines) == 1, res.stderr[-1500:]      # one line, no usage block
        assert row.message in lines[0] and ": error: " in lines[0], lines
    if row.within is not None:
        assert res.cpu_seconds < row.within, res.cpu_seconds
    new = {name for name in res.after if name not in res.before and name.split("/")[0] not in row.creates}
    assert not new, new                                 # nothing left behind
    assert {k: v for k, v in res.after.items() if k in res.before} == res.before  # the user's files intact


@pytest.mark.parametrize("row", ROWS, ids=[r.item for r in ROWS])
def test_cli_failure(outcomes, row):
    _check(row, outcomes[row.item])


def test_ctrl_c_in_train_says_progress_is_saved(outcomes):
    res = outcomes[INTERRUPT_ITEM]
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 130 and "Traceback" not in res.stderr, res.stderr[-1500:]
    assert len(lines) == 1 and lines[0].startswith("hidden-rules train: interrupted: progress is saved"), lines
    assert "run the same command again to resume" in lines[0]
    assert (res.before[USER_FILE] == b"mine") and res.after[USER_FILE] == b"mine"


def test_the_table_covers_each_row_once():
    items = [r.item for r in ROWS] + [INTERRUPT_ITEM]
    assert len(items) == len(set(items)) and all(r.status in (0, 1, 2) for r in ROWS)
