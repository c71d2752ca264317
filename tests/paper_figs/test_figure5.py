"""Figure 5 with controls (paper_figs.figure5): replica curves of every set in every space, panel (a)'s
control rows, and a run whose 'samples' are copies of its training images, which the figure must flag."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from empirics import ddpm
from empirics.data.io import load_npz
from empirics.tasks import generate
from paper_figs.cli import main as cli_main


@pytest.fixture(scope="module")
def run_c(tmp_path_factory):
    """Task C run with two sample sets: fresh renders, and half fresh renders + half training images."""
    run = ddpm.create_run(tmp_path_factory.mktemp("runs") / "C",
                          ddpm.make_config("C", "smoke", n_train=60, batch_size=8)).root
    fresh = generate("C", 30, 32, seed=123).images
    train = load_npz(run / "train.npz").images
    ddpm.save_samples(fresh, "C", run / "samples" / "rendered", seeds=np.arange(30), meta={})
    ddpm.save_samples(np.concatenate([fresh[:15], train[:15]]), "C", run / "samples" / "copies",
                      seeds=np.arange(30), meta={})
    return run


def _figure5(run, name, out):
    assert cli_main(["figure5", str(run), "--samples", name, "--out", str(out), "--show", "2"]) == 0
    return json.loads((out / "figure5.json").read_text())["tasks"]["C"]


def test_figure5_json_carries_every_curve_and_the_controls(run_c, tmp_path):
    rec = _figure5(run_c, "rendered", tmp_path)
    assert set(rec["conforming"]) == {"DDPM", "training data", "fresh control", "degraded control",
                                      "matched control"}
    assert rec["conforming"]["fresh control"]["n_valid"] == 30
    spaces = rec["replica_curves"]["spaces"]
    assert {s: spaces[s]["dim"] for s in spaces} == {"lengths": 2, "lengths_colours": 8,
                                                     "pixels_whitened": 3072, "pixels_raw": 3072}
    for s in spaces.values():
        assert set(s["sets"]) == {"conforming", "valid", "fresh", "train_loo", "matched"}
        for curve in s["sets"].values():
            assert len(curve["curve"]) == len(s["thresholds"]) and curve["curve"][-1] == 1.0
            assert all(a <= b for a, b in zip(curve["curve"], curve["curve"][1:]))
    # rule-exact fresh renders are not copies: none at pixel distance 0
    assert spaces["pixels_whitened"]["sets"]["valid"]["distance_quantiles"]["0.0"] > 0
    assert spaces["pixels_raw"]["novelty"]["valid"]["verdict"] != "closer to the training set than fresh draws"
    assert (tmp_path / "figure11_C.png").stat().st_size > 0 and (tmp_path / "figure5.pdf").stat().st_size > 0


def test_figure5_flags_samples_that_are_training_images(run_c, tmp_path):
    rec = _figure5(run_c, "copies", tmp_path)
    for space in ("pixels_whitened", "pixels_raw"):
        nov = rec["replica_curves"]["spaces"][space]["novelty"]["valid"]
        assert nov["n_below"] >= 15 and nov["share_below_ci95"][0] > 0.01
    rows = list(csv.DictReader((tmp_path / "figure5.csv").open()))
    copies = [r for r in rows if int(r["sample"]) >= 15]
    assert copies  # the training images conform (fresh renders do, within +-1 %)
    for r in copies:
        assert float(r["nn_pixels_whitened"]) == 0.0 and int(r["nn_pixels_whitened_index"]) == int(r["sample"]) - 15
        assert float(r["nn_pixels_raw"]) == 0.0


def test_figure5_rejects_bad_options(run_c, tmp_path):
    with pytest.raises(SystemExit):
        cli_main(["figure5", str(run_c), "--samples", "rendered", "--out", str(tmp_path), "--rtol", "0"])
    with pytest.raises(SystemExit):
        cli_main(["figure5", str(run_c), "--samples", "rendered", "--out", str(tmp_path), "--control-seed", "-1"])
