"""Section 5 end to end on a smoke run folder: classifier, filter, guided sampling and Table 2 (CLI)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from paper_figs.cli import main as cli_main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A smoke DDPM run of Task A with its guidance classifier, an MLP filter, and unguided samples."""
    root = tmp_path_factory.mktemp("mitigation") / "A"
    assert cli_main(["train", "A", "--preset", "smoke", "--out", str(root), "--no-progress"]) == 0
    assert cli_main(["classifier", str(root), "--preset", "smoke", "--n-per-class", "8", "--no-progress"]) == 0
    assert cli_main(["filter", str(root), "--arch", "mlp", "--preset", "smoke", "--n-per-class", "8",
                     "--no-progress"]) == 0
    assert cli_main(["sample", str(root), "--n", "12", "--sampler", "ddim", "--steps", "10", "--no-progress"]) == 0
    return root


def test_classifier_and_filter_records(run):
    acc = json.loads((run / "classifier" / "accuracy.json").read_text())
    assert acc["task"] == "A" and acc["train_steps"] == 4 and acc["n_heldout"] == 900
    assert set(acc["accuracy_heldout"]) == {"0", "50", "100", "250", "500", "750", "999"}
    assert all(0.0 <= a <= 1.0 for a in acc["accuracy_heldout"].values())
    rec = json.loads((run / "filters" / "mlp.json").read_text())
    assert rec["architecture"] == "mlp" and rec["n_train"] + rec["n_test"] == 24 and 0 <= rec["test_accuracy"] <= 1


def test_guided_set_is_named_by_its_schedule_and_recorded(run):
    assert cli_main(["sample", str(run), "--n", "12", "--sampler", "ddim", "--steps", "10", "--classifier",
                     str(run / "classifier"), "--scale", "5", "--no-progress"]) == 0
    folder = run / "samples" / "ddim-10-eta1-guided-constant-s5"
    meta = json.loads((folder / "sample.json").read_text())
    assert meta["guidance"] == {"kind": "constant", "scale": 5.0, "last_k": 20, "target": 1,
                                "classifier": str(run / "classifier")}
    with np.load(folder / "samples.npz") as z, np.load(run / "samples" / "ddim-10-eta1" / "samples.npz") as u:
        assert z["images"].shape == u["images"].shape == (12, 32, 32, 3)
        assert not np.array_equal(z["images"], u["images"])        # the guide moved the samples


def test_table2_over_the_run(run, tmp_path):
    out = tmp_path / "t2"
    assert cli_main(["table2", str(run), "--samples", "ddim-10-eta1", "--guided", "ddim-10-eta1-guided-constant-s5",
                     "--out", str(out), "--n-boot", "0"]) == 0
    table = json.loads((out / "table2.json").read_text())
    row = table["rows"][0]
    assert row["task"] == "A" and row["n_samples"] == 12
    assert row["guidance"]["samples"] == "ddim-10-eta1-guided-constant-s5"
    belief = row["guidance"]["classifier_p_rule_t0"]
    assert set(belief) == {"ddpm", "guided"} and all(0.0 < p < 1.0 for p in belief.values())
    assert row["filtering"]["architecture"] == "mlp" and 0.0 <= row["filtering"]["kept_fraction"] <= 1.0
    assert row["filtering"]["chosen_by"] == "highest test accuracy"        # the default, --filter best
    assert set(row["filters"]) == {"mlp"} and sum(row["filters"]["mlp"]["predicted_class_counts"]) == 12
    assert row["filters"]["mlp"]["predicted_class_counts"][1] == row["filtering"]["n"]   # argmax rule
    assert row["filtering"]["n"] == round(row["filtering"]["kept_fraction"] * 12)
    assert row["oracle"]["tolerance"] == 0.05 and row["paper"]["guidance"] == {"error": 0.21, "r2": 0.9}
    # Every filter stands beside its random-subset null (None when it keeps < 3 valid samples).
    for method in (row["filtering"], row["oracle"]):
        null = method["random_subset"]
        assert null is None or (null["n_keep"] == method["n"] and 0 < null["p_error_lower"] <= 1)
    assert (out / "table2.csv").is_file() and (out / "table2.png").is_file()
    assert "p_error_lower" in (out / "table2.csv").read_text().splitlines()[0]


@pytest.mark.parametrize(("args", "message"), [
    (["--scale", "nan"], "scale must be a finite"),
    (["--guidance", "piecewise", "--last-k", "50"], "last_k=50 steps, more than the 10 sampling steps"),
])
def test_bad_guidance_is_one_clear_error(run, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        cli_main(["sample", str(run), "--n", "2", "--sampler", "ddim", "--steps", "10", "--classifier",
                  str(run / "classifier"), "--out", str(run / "never"), "--no-progress", *args])
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (run / "never").exists()


def test_guidance_flags_need_a_classifier(run, capsys):
    with pytest.raises(SystemExit):
        cli_main(["sample", str(run), "--n", "2", "--scale", "3", "--no-progress"])
    assert "need --classifier" in capsys.readouterr().err


def test_table2_threshold_outside_unit_interval(run, tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli_main(["table2", str(run), "--samples", "ddim-10-eta1", "--threshold", "1.5", "--out", str(tmp_path)])
    assert "threshold must be" in capsys.readouterr().err


def test_best_filter_is_the_highest_test_accuracy(tmp_path):
    """The paper's rule (App. G.2): the filter with the best test accuracy; ties go to the simpler net."""
    from empirics.mitigation import best_filter

    folder = tmp_path / "filters"
    folder.mkdir()
    assert best_filter(tmp_path) is None
    for arch, acc in (("mlp", 0.70), ("resnet8", 0.75), ("unet_encoder", 0.75)):
        (folder / f"{arch}.json").write_text(json.dumps({"test_accuracy": acc}))
        (folder / f"{arch}.pt").write_bytes(b"")
    assert best_filter(tmp_path) == "resnet8"
    (folder / "resnet8.pt").unlink()                     # a record without its weights is not a filter
    assert best_filter(tmp_path) == "unet_encoder"


def test_table2_unknown_filter_is_refused(run):
    from empirics.mitigation import table2_row

    with pytest.raises(ValueError, match="filter_arch must be one of"):
        table2_row(run, "ddim-10-eta1", filter_arch="vgg", n_boot=0)
