"""`hidden-rules joint-width` at toy sizes: files, JSON/CSV contents, the linear closed form, clean errors."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from paper_figs import joint_width
from paper_figs.cli import main

TOY = ["--d", "3", "--widths", "1", "2d", "--epochs", "300", "--t", "0.4", "--activations", "linear", "relu",
       "--workers", "1", "--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("joint_width")
    assert main(["joint-width", "--out", str(out), *TOY]) == 0
    return out, json.loads((out / "joint_width.json").read_text())


def test_writes_every_point_once(toy_run):
    out, meta = toy_run
    for name in joint_width.NAMES:
        assert (out / name).stat().st_size > 0
    assert meta["widths"] == [1, 6]  # 2d = 6
    keys = {(p["activation"], p["architecture"], p["target"], p["t"], p["m"]) for p in meta["points"]}
    assert len(keys) == len(meta["points"]) == 2 * 2 * 2 * 1 * 2  # activations x archs x targets x t x widths
    with open(out / "joint_width.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {(r["activation"], r["architecture"], r["target"], float(r["t"]), int(r["m"])) for r in rows} == keys
    for p in meta["points"]:
        assert p["total"] == pytest.approx(p["bias"] ** 2 + p["variance"], rel=1e-12)
        assert p["train"]["epochs"] == 300 and p["lr"] > 0 and p["lr_halvings"] >= 0
    ans = meta["answers"]
    assert ans["joint_over_per_patch"]["pairs"] == 8 and ans["over_separable_floor"]["points"] == 16


def test_gd_reaches_the_derived_linear_joint_optimum(toy_run):
    """A linear joint net of width 2d trained on the consistent loss ends at derivations.joint's rank >= 2
    optimum (E(m) = E(2) for every m >= 2, P = 2), and E is above the separable level."""
    _, meta = toy_run
    ref = next(r for r in meta["references"] if (r["target"], r["t"]) == ("score", 0.4))
    p = next(p for p in meta["points"] if (p["activation"], p["architecture"], p["target"], p["m"])
             == ("linear", "joint", "score", 6))
    assert p["total"] == pytest.approx(ref["linear_joint_optimum_m2_and_more"]["total"], rel=1e-6)
    assert p["bias"] == pytest.approx(ref["linear_joint_optimum_m2_and_more"]["bias"], rel=1e-6)
    assert p["total"] > ref["separable_floor"]
    # the per-patch linear net of width 1 is Thm 4.5's GD limit
    q = next(p for p in meta["points"] if (p["activation"], p["architecture"], p["target"], p["m"])
             == ("linear", "per_patch", "score", 1))
    assert q["total"] == pytest.approx(ref["linear_per_patch_gd_m1"], rel=1e-6)


@pytest.mark.parametrize("bad", [["--widths", "4", "4"], ["--widths", "6", "2d"], ["--t", "0.4", "0.4"],
                                 ["--widths", "-3"], ["--epochs", "0"], ["--zeta", "uniform:0.8:0.2"]])
def test_bad_arguments_give_a_clean_error(tmp_path, capsys, bad):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        main(["joint-width", "--out", str(out), *TOY, *bad])
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err
    assert not out.exists()


def test_module_entry_point_gives_one_line(tmp_path):
    """``python -m paper_figs.joint_width`` is the verb ``joint-width``: a bad width is one line, exit 2, nothing
    written."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]), OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-m", "paper_figs.joint_width", "--out", str(tmp_path / "out"), *TOY,
                          "--widths", "0"], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 2 and not (tmp_path / "out").exists()
    assert res.stderr == "hidden-rules joint-width: error: --widths must be an integer in [1, 1000000], got 0\n"
