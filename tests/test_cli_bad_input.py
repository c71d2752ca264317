"""Bad command-line input, table-driven: each case runs ``hidden-rules`` as a user would (a subprocess)
and must end with the documented exit status, one message naming the problem, and no traceback.

Exit status: 2 for bad arguments or unusable input, 1 for a failure while running. The number of
cases is stated in the README ("Command line").
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
FIG6_TOY = ["--d", "5", "--m", "2", "--t", "0.4", "--activations", "relu", "--epochs", "20", "--samples", "50",
            "--loss", "paper", "--no-progress", "--workers", "1"]

# (id, argv with {file} = an existing file, {dir} = a fresh folder, {empty} = an empty folder,
#  {fake_npz} = a text file named .npz, {gray_npz} = an npz of single-channel images; exit status; message)
CASES = [
    ("no verb", [], 2, "usage: hidden-rules"),
    ("unknown verb", ["paint"], 2, "invalid choice: 'paint'"),
    ("figure6 --samples 0", ["figure6", "--out", "{dir}", *FIG6_TOY, "--samples", "0"], 2, "--samples must be >= 2"),
    ("figure6 --n with exact", ["figure6", "--out", "{dir}", *FIG6_TOY, "--n", "20"], 2,
     "apply to --estimator mc only"),
    ("figure6 --lr diverges", ["figure6", "--out", "{dir}", *FIG6_TOY, "--lr", "50"], 1, "diverged"),
    ("figure6 --lr negative", ["figure6", "--out", "{dir}", *FIG6_TOY, "--lr", "-1"], 2, "--lr must be"),
    ("figure6 --t 0", ["figure6", "--out", "{dir}", *FIG6_TOY, "--t", "0"], 2, "--t must be"),
    ("figure6 bad zeta", ["figure6", "--out", "{dir}", *FIG6_TOY, "--zeta", "uniform:0.8:0.2"], 2, "--zeta"),
    ("figure6 --out is a file", ["figure6", "--out", "{file}", *FIG6_TOY], 2, "is a file"),
    ("figure3 --out under a file", ["figure3", "--out", "{file}/sub", "--n", "10"], 2, "is under the file"),
    ("appendix-a --out is a file", ["appendix-a", "--out", "{file}"], 2, "is a file"),
    ("data --out is a file", ["data", "A", "--n", "5", "--out", "{file}"], 2, "is a file"),
    ("data --n 0", ["data", "A", "--n", "0", "--out", "{dir}"], 2, "--n must be >= 1"),
    ("data unknown task", ["data", "E", "--out", "{dir}"], 2, "task must be one of"),
    ("eval --out is a file", ["eval", "A", "{empty}", "--out", "{file}"], 2, "is a file"),
    ("eval empty folder", ["eval", "A", "{empty}", "--out", "{dir}"], 2, "no image could be read"),
    ("eval not an npz", ["eval", "A", "{fake_npz}", "--out", "{dir}"], 2, "is not an .npz archive"),
    ("eval grayscale npz", ["eval", "A", "{gray_npz}", "--out", "{dir}"], 2, "grayscale"),
    ("eval --n-boot -1", ["eval", "A", "{empty}", "--n-boot", "-1"], 2, "--n-boot must be >= 0"),
    ("eval missing path", ["eval", "A", "{dir}/nothing-here"], 2, "no such file or folder"),
    ("bounds --t -1", ["bounds", "--t", "-1"], 2, "--t must be"),
    ("bounds bad zeta", ["bounds", "--zeta", "gaussian:0:1"], 2, "--zeta"),
    ("train unknown task", ["train", "E", "--out", "{dir}"], 2, "task must be one of"),
    ("train unknown preset", ["train", "A", "--preset", "gpu", "--out", "{dir}"], 2, "invalid choice: 'gpu'"),
    ("train --out is a file", ["train", "A", "--preset", "smoke", "--out", "{file}"], 2, "is not a folder"),
    ("sample --n 0", ["sample", "{dir}", "--n", "0"], 2, "--n must be >= 1"),
    ("sample steps > T", ["sample", "{dir}", "--sampler", "ddim", "--steps", "1001"], 2, "steps must be in [1, 1000]"),
    ("sample no run", ["sample", "{dir}/absent", "--n", "2"], 2, "no run folder"),
    ("table1 no run", ["table1", "{dir}/absent", "--out", "{dir}"], 2, "is not a run folder"),
]


def _materialise(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "a_file.txt").write_text("not a folder")
    (tmp_path / "empty").mkdir()
    (tmp_path / "fake.npz").write_text("hello")
    np.savez(tmp_path / "gray.npz", images=np.zeros((2, 32, 32), np.uint8))
    return {"{file}": str(tmp_path / "a_file.txt"), "{dir}": str(tmp_path / "out"), "{empty}": str(tmp_path / "empty"),
            "{fake_npz}": str(tmp_path / "fake.npz"), "{gray_npz}": str(tmp_path / "gray.npz")}


@pytest.mark.parametrize("case_id, argv, status, message", CASES, ids=[c[0] for c in CASES])
def test_bad_cli_input(tmp_path, case_id, argv, status, message):
    subs = _materialise(tmp_path)
    args = []
    for a in argv:
        for key, value in subs.items():
            a = a.replace(key, value)
        args.append(a)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-m", "paper_figs.cli", *args], capture_output=True, text=True, env=env,
                         timeout=300, cwd=tmp_path)
    assert res.returncode == status, (res.returncode, res.stderr[-1500:])
    assert message in res.stderr, res.stderr[-1500:]
    assert "Traceback" not in res.stderr
    if status == 2 and case_id.startswith(("data", "train")):
        assert not (tmp_path / "out").exists()  # a bad argument leaves nothing behind
