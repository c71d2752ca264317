"""Table 1, Figures 4/5/11 and the DDPM curves over run folders (paper_figs.table1/figure4/figure5/ddpm_curves)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from empirics import ddpm
from empirics.evaluator.controls import FRESH_SEED, Metric
from empirics.tasks import generate
from paper_figs import ddpm_curves
from paper_figs.cli import main as cli_main


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run folders for Tasks A and C whose 'samples' are fresh rendered images (all valid, rule-exact),
    plus a second sample set in which half of Task A's images break the coarse rule."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for task in "AC":
        run = ddpm.create_run(root / task, ddpm.make_config(task, "smoke", n_train=48, batch_size=8)).root
        imgs = generate(task, 40, 32, seed=123).images
        ddpm.save_samples(imgs, task, run / "samples" / "rendered", seeds=np.arange(40), meta={"train_step": 7})
        out[task] = run
    bad = np.concatenate([generate("A", 20, 32, seed=5).images,
                          generate("A", 20, 32, seed=6, violate_coarse=True).images])
    ddpm.save_samples(bad, "A", out["A"] / "samples" / "mixed", seeds=np.arange(40), meta={})
    return out


def test_table1_counts_and_cis(runs, tmp_path):
    assert cli_main(["table1", str(runs["A"]), str(runs["C"]), "--samples", "rendered", "--out", str(tmp_path),
                     "--n-boot", "50"]) == 0
    rows = {r["task"]: r for r in json.loads((tmp_path / "table1.json").read_text())["rows"]}
    assert rows["A"]["invalid"] == 0 and rows["A"]["coarse_violations"] == 0
    lo, hi = rows["A"]["invalid_percent_ci95"]
    assert lo == 0.0 and 0 < hi < 10  # Clopper-Pearson upper bound for 0 of 40: 8.8 %
    assert rows["C"]["paper"]["invalid_percent"] == 41.75
    assert rows["A"]["train_step"] == 7
    assert (tmp_path / "table1.csv").read_text().count("\n") == 1 + 2 * 4   # header, samples + 3 controls per task
    ctl = rows["A"]["controls"]
    assert ctl["n_per_control"] == 40 and set(ctl["metrics"]) == {m.value for m in Metric}
    inv = ctl["metrics"]["invalid_percent"]
    assert set(inv["controls"]) == {"fresh", "degraded", "matched"}
    # rule-exact 'samples' are as valid as fresh renders: Invalid % is no evidence here
    assert "fresh" not in inv["differs_from_controls"] and not inv["evidence"]


def test_table1_sees_coarse_violations(runs, tmp_path):
    assert cli_main(["table1", str(runs["A"]), "--samples", "mixed", "--out", str(tmp_path), "--n-boot", "0"]) == 0
    row = json.loads((tmp_path / "table1.json").read_text())["rows"][0]
    assert row["coarse_violations"] == 20 and row["n_valid"] == 40


def test_figure4_fit_on_rule_exact_samples(runs, tmp_path):
    assert cli_main(["figure4", str(runs["A"]), str(runs["C"]), "--samples", "rendered", "--out", str(tmp_path),
                     "--n-boot", "50"]) == 0
    rec = json.loads((tmp_path / "figure4.json").read_text())
    for task in "AC":
        s = rec["tasks"][task]["summary"]
        assert s["r2"] > 0.999 and s["error"] < 0.02
        ctl = rec["tasks"][task]["controls"]["metrics"]
        assert set(ctl) == {"slope", "r2", "error"}
        assert "fresh" not in ctl["slope"]["differs_from_controls"]
    assert (tmp_path / "figure4.png").stat().st_size > 0


def test_figure5_conforming_and_memorization(runs, tmp_path):
    assert cli_main(["figure5", str(runs["A"]), "--samples", "rendered", "--out", str(tmp_path), "--show", "3"]) == 0
    rec = json.loads((tmp_path / "figure5.json").read_text())["tasks"]["A"]
    assert rec["conforming_fraction_samples"] > 0.5
    mem = rec["memorization"]
    assert mem["dims"] == {"structure": 4, "structure_colour": 13}
    assert mem["replica_fraction_colour"]["0.01"] == 0.0  # fresh images are not training images
    assert (tmp_path / "figure11_A.png").exists()


def test_run_folder_errors(runs, tmp_path):
    with pytest.raises(SystemExit) as exc:
        cli_main(["table1", str(runs["A"]), "--out", str(tmp_path)])  # two sample sets, none named
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        cli_main(["table1", str(runs["A"]), "--samples", "nope", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        cli_main(["table1", str(runs["C"]), str(runs["C"]), "--samples", "rendered", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        cli_main(["table1", str(tmp_path / "absent"), "--out", str(tmp_path)])


def test_ddpm_curves_over_snapshots(tmp_path):
    run = tmp_path / "run"
    ddpm.train(run, ddpm.make_config("A", "smoke", n_train=32, batch_size=8, train_steps=4, snapshot_every=2),
               progress=False)
    assert cli_main(["ddpm-curves", str(run), "--n", "4", "--steps", "3", "--threads", "1", "--out",
                     str(tmp_path / "o")]) == 0
    rec = json.loads((tmp_path / "o" / "ddpm_curves_A.json").read_text())
    assert rec["torch_threads"] == 1 and rec["compiled"] is False
    assert [p["train_step"] for p in rec["training"]] == [2, 4]
    assert all(p["n"] == 4 for p in rec["training"])
    for p in rec["training"]:  # Fig. 12's measures: the rule and the marginal goals, beside fresh renders
        assert {"r2", "r2_ci95", "error", "conforming_fraction", "background_white_percent",
                "outside_rule_range_percent", "goals"} <= set(p)
        assert 0.0 <= p["background_white_percent"] <= 100.0
    control = rec["control_fresh"]
    assert control["n"] == 4 and control["seed"] == FRESH_SEED
    for p in [*rec["training"], control]:  # the conforming share carries its bootstrap CI, as R^2 and Error do
        if p["conforming_fraction_ci95"] is not None:
            lo, hi = p["conforming_fraction_ci95"]
            assert 0.0 <= lo <= p["conforming_fraction"] <= hi <= 1.0
    # 4 renders are too few for the trimmed fit (no CI); 40 get one, and exact renders conform in the main
    big = ddpm_curves._fresh_control("A", 40, 32, n_boot=200)
    lo, hi = big["conforming_fraction_ci95"]
    assert big["n_valid"] == 40 and lo <= big["conforming_fraction"] <= hi and big["conforming_fraction"] >= 0.9
    rows = list(csv.DictReader((tmp_path / "o" / "ddpm_curves_A.csv").open()))
    assert [int(r["train_step"]) for r in rows] == [2, 4] and "invalid_percent" in rows[0]
    # --every keeps the multiples of K and always the last snapshot; the cached samples are reused
    assert cli_main(["ddpm-curves", str(run), "--n", "4", "--steps", "3", "--every", "3", "--out",
                     str(tmp_path / "o3")]) == 0
    rec3 = json.loads((tmp_path / "o3" / "ddpm_curves_A.json").read_text())
    assert [p["train_step"] for p in rec3["training"]] == [4]
    assert rec3["training"][0]["invalid_percent"] == rec["training"][1]["invalid_percent"]
    # benchmark sets at the final checkpoint add the by-sampler panel; of two sizes of one sampler, the larger
    spec = ddpm.SampleSpec("ddim", 3, 1.0)
    for n in (2, 3):
        ddpm.sample(run, n, spec, out=run / "samples" / f"bench{n}-{spec.name}", batch_size=n, progress=False)
    assert cli_main(["ddpm-curves", str(run), "--n", "4", "--steps", "3", "--every", "3", "--out",
                     str(tmp_path / "ob")]) == 0
    recb = json.loads((tmp_path / "ob" / "ddpm_curves_A.json").read_text())
    assert [(p["family"], p["sampling_steps"], p["n"]) for p in recb["sampling"]] == [("DDIM eta=1", 3, 3)]
    assert (tmp_path / "ob" / "ddpm_curves_A.png").stat().st_size > 0
