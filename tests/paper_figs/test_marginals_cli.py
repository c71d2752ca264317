"""hidden-rules marginals: writes JSON, CSV and figures over run folders, refuses to overwrite, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from empirics import ddpm
from empirics.tasks import generate
from paper_figs.cli import main as cli_main


@pytest.fixture(scope="module")
def run_d(tmp_path_factory):
    """A Task D run (training set of 48 renders) whose 'samples' are 40 renders dimmed to a grey background."""
    root = tmp_path_factory.mktemp("runs")
    run = ddpm.create_run(root / "D", ddpm.make_config("D", "smoke", n_train=48, batch_size=8)).root
    imgs = (generate("D", 40, 32, seed=321).images.astype(np.float64) * 230 / 255).round().astype(np.uint8)
    ddpm.save_samples(imgs, "D", run / "samples" / "grey", seeds=np.arange(40), meta={"train_step": 7})
    return run


def test_marginals_writes_its_files_and_refuses_to_overwrite(run_d, tmp_path):
    out = tmp_path / "m"
    args = ["marginals", str(run_d), "--samples", "grey", "--out", str(out), "--n-boot", "20", "--n-fresh", "40"]
    assert cli_main(args) == 0
    for name in ("marginals.json", "marginals.csv", "marginals.png", "marginals.pdf", "marginals_rule.png"):
        assert (out / name).stat().st_size > 0
    rec = json.loads((out / "marginals.json").read_text())["tasks"]["D"]
    assert rec["background"]["samples"]["median"] == 230.0 and rec["background"]["training"]["median"] == 255.0
    assert rec["background"]["samples"]["share_below_white"] == 1.0
    assert rec["colour_box"]["fresh"]["top"]["raw"]["share_in_box"] == 1.0
    assert set(rec["feature_distance"]["samples_vs_training"]) == {"side_top", "side_bottom", "top_x", "top_y",
                                                                   "bottom_x", "bottom_y"}
    # A dimmed render keeps its geometry: the rule fits as well as on the fresh renders.
    assert rec["fit"]["samples_all"]["r2"] > 0.999 and rec["fit"]["fresh_all"]["r2"] > 0.999
    rows = (out / "marginals.csv").read_text().splitlines()
    assert rows[0] == "task,quantity,value" and "D,background.samples.median,230.0" in rows
    before = (out / "marginals.json").read_bytes()
    with pytest.raises(SystemExit) as exc:
        cli_main(args)
    assert exc.value.code == 2
    assert (out / "marginals.json").read_bytes() == before


def test_marginals_bad_input_is_one_line_and_leaves_no_folder(run_d, tmp_path, capsys):
    out = tmp_path / "never"
    for bad in (["--widen", "1.5"], ["--samples", "nope"], ["--bins", "0"]):
        args = ["marginals", str(run_d), "--out", str(out)] + (["--samples", "grey"] if "--samples" not in bad else [])
        with pytest.raises(SystemExit) as exc:
            cli_main(args + bad)
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("hidden-rules marginals: error:") and "\n" not in err
        assert not out.exists()
