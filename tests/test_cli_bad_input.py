"""Bad command-line input, table-driven: each case runs ``hidden-rules`` as a user would (a subprocess)
and must end with the documented exit status, one message naming the problem, and no traceback.

Exit status: 2 for bad arguments or unusable input, 1 for a failure while running. The number of
cases is stated in the README ("Command line").
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
FIG6_TOY = ["--d", "5", "--m", "2", "--t", "0.4", "--activations", "relu", "--epochs", "20", "--samples", "50",
            "--loss", "paper", "--no-progress", "--workers", "1"]

# (id, argv with {file} = an existing file, {dir} = a fresh folder, {empty} = an empty folder,
#  {fake_npz} = a text file named .npz, {gray_npz} = an npz of (N, S, S) single-channel images, {input:NAME} =
#  the input NAME of ``_EVAL_INPUTS``; exit status; message)
CASES = [
    ("no verb", [], 2, "hidden-rules: error: a verb is needed"),
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
    ("eval (N, S, S) npz", ["eval", "A", "{gray_npz}", "--out", "{dir}"], 2,
     "images have shape (2, 32, 32): single-channel (grayscale) images"),
    ("eval (N, S, S, 1) npz", ["eval", "A", "{input:gray1.npz}", "--out", "{dir}"], 2,
     "images have shape (3, 32, 32, 1): single-channel (grayscale)"),
    ("eval npz of 0 images", ["eval", "A", "{input:none.npz}", "--out", "{dir}"], 2, "images is empty"),
    ("eval npz of objects", ["eval", "A", "{input:objects.npz}", "--out", "{dir}"], 2, "holds Python objects"),
    ("eval npz of raw bytes", ["eval", "A", "{input:raw.npz}", "--out", "{dir}"], 2, "is not a numpy array"),
    ("eval corrupt PNGs", ["eval", "A", "{input:corrupt}", "--out", "{dir}"], 2,
     "(2 skipped: a.png: unreadable (not a decodable image); b.png: unreadable"),
    ("eval grayscale PNGs", ["eval", "A", "{input:grey}", "--out", "{dir}"], 2, "g.png: grayscale (single-channel)"),
    ("eval float out of range", ["eval", "A", "{input:float255.npz}", "--out", "{dir}"], 2,
     "pass --value-range LO HI"),
    ("eval --value-range reversed", ["eval", "A", "{input:float255.npz}", "--value-range", "1", "0"], 2,
     "--value-range must be two finite numbers"),
    ("eval --workers 100", ["eval", "A", "{input:float255.npz}", "--workers", "100", "--out", "{dir}"], 2,
     "--workers must be an integer in [1, 64]"),
    ("eval --trim reversed", ["eval", "A", "{empty}", "--trim", "60", "40"], 2, "--trim must be two percentiles"),
    ("eval --n-boot -1", ["eval", "A", "{empty}", "--n-boot", "-1"], 2,
     "--n-boot must be an integer in [0, 100000], got -1"),
    ("eval missing path", ["eval", "A", "{dir}/nothing-here"], 2, "no such file or folder"),
    ("bounds --t -1", ["bounds", "--t", "-1"], 2, "--t must be"),
    ("bounds bad zeta", ["bounds", "--zeta", "gaussian:0:1"], 2, "--zeta"),
    ("train unknown task", ["train", "E", "--out", "{dir}"], 2, "task must be one of"),
    ("train unknown preset", ["train", "A", "--preset", "gpu", "--out", "{dir}"], 2, "invalid choice: 'gpu'"),
    ("train --out is a file", ["train", "A", "--preset", "smoke", "--out", "{file}"], 2, "is a file; give a folder"),
    ("sample --n 0", ["sample", "--n", "0", "{dir}"], 2, "--n must be >= 1"),
    ("sample steps > T", ["sample", "--sampler", "ddim", "--steps", "1001", "{dir}"], 2,
     "--steps must be an integer in [1, 1000]"),
    ("sample no run", ["sample", "{dir}/absent", "--n", "2"], 2, "no run folder"),
    ("table1 no run", ["table1", "{dir}/absent", "--out", "{dir}"], 2, "is not a run folder"),
]


def _corrupt_pngs(folder: Path) -> None:
    folder.mkdir()
    (folder / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(64)))  # OpenCV logs about this one
    (folder / "b.png").write_bytes(b"not a png")


def _grey_pngs(folder: Path) -> None:
    folder.mkdir()
    cv2.imwrite(str(folder / "g.png"), np.full((32, 32), 200, np.uint8))


def _raw_bytes_npz(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as z:  # a zip whose member is not a .npy array
        z.writestr("images.npy", b"raw bytes")


# Inputs of the eval cases, made only when a case names them.
_EVAL_INPUTS = {
    "gray1.npz": lambda p: np.savez(p, images=np.zeros((3, 32, 32, 1), np.uint8)),
    "none.npz": lambda p: np.savez(p, images=np.zeros((0, 32, 32, 3), np.uint8)),
    "objects.npz": lambda p: np.savez(p, images=np.array([{"a": 1}], dtype=object)),
    "raw.npz": _raw_bytes_npz,
    "float255.npz": lambda p: np.savez(p, images=np.full((2, 32, 32, 3), 200.0)),
    "corrupt": _corrupt_pngs,
    "grey": _grey_pngs,
}


def _materialise(tmp_path: Path, argv: list[str]) -> dict[str, str]:
    (tmp_path / "a_file.txt").write_text("not a folder")
    (tmp_path / "empty").mkdir()
    (tmp_path / "fake.npz").write_text("hello")
    np.savez(tmp_path / "gray.npz", images=np.zeros((2, 32, 32), np.uint8))
    subs = {"{file}": str(tmp_path / "a_file.txt"), "{dir}": str(tmp_path / "out"), "{empty}": str(tmp_path / "empty"),
            "{fake_npz}": str(tmp_path / "fake.npz"), "{gray_npz}": str(tmp_path / "gray.npz")}
    for name, make in _EVAL_INPUTS.items():
        if any(f"{{input:{name}}}" in a for a in argv):
            make(tmp_path / name)
            subs[f"{{input:{name}}}"] = str(tmp_path / name)
    return subs


@pytest.mark.parametrize("case_id, argv, status, message", CASES, ids=[c[0] for c in CASES])
def test_bad_cli_input(tmp_path, case_id, argv, status, message):
    subs = _materialise(tmp_path, argv)
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
    # our words only: no OpenCV log lines, no numpy advice to unpickle, flags rather than keywords
    assert "[ WARN" not in res.stderr and "[ERROR" not in res.stderr
    assert "allow_pickle" not in res.stderr and "value_range" not in res.stderr
    if status == 2 and case_id.startswith(("data", "train")):
        assert not (tmp_path / "out").exists()  # a bad argument leaves nothing behind
