"""`hidden-rules figure6` end to end at toy sizes: files, JSON contents, no silent overwrite."""

import json

import pytest

from paper_figs.cli import main

TOY = ["--epochs", "20", "--d", "5", "--m", "2", "--t", "0.3", "0.7",
       "--activations", "relu", "cubic", "--samples", "200", "--no-progress", "--device", "cpu"]
MC_TOY = ["--n", "10", "--n-eps", "4"]  # Monte Carlo sample sizes (the exact estimator refuses them)


def test_figure6_default_is_exact_for_both_targets(tmp_path, capsys):
    """Default: exact estimator, both loss targets, exact rule error beside the Monte Carlo one."""
    assert main(["figure6", "--out", str(tmp_path), *TOY, "--workers", "1"]) == 0
    for target in ("paper", "score"):
        meta = json.loads((tmp_path / f"figure6_{target}.json").read_text())
        assert meta["estimator"] == "exact" and meta["loss_target"] == target
        assert meta["trained_together"] == 8
        for panel in meta["panels"]:
            assert panel["config"]["estimator"] == "exact" and panel["config"]["epochs"] == 20
            exact, mc = panel["rule_error_exact"], panel["rule_error_mc"]
            assert exact["total"] == pytest.approx(exact["bias"] ** 2 + exact["variance"], rel=1e-12)
            # the Monte Carlo rule error on 200 fresh x_t estimates the exact one: within 5 standard errors
            assert abs(mc["bias"] - exact["bias"]) <= 5 * mc["bias_se"]
            assert abs(mc["variance"] - exact["variance"]) <= 5 * mc["variance_se"]
    out = capsys.readouterr().out
    assert "rule error exact (population)" in out and "loss target 'score'" in out


def test_figure6_writes_png_pdf_json_csv(tmp_path, capsys):
    assert main(["figure6", "--out", str(tmp_path), *TOY, *MC_TOY, "--estimator", "mc", "--loss", "paper"]) == 0
    for name in ("figure6_paper.png", "figure6_paper.pdf", "figure6_paper.json", "figure6_paper_psi.csv"):
        assert (tmp_path / name).stat().st_size > 0
    meta = json.loads((tmp_path / "figure6_paper.json").read_text())
    assert meta["loss_target"] == "paper"
    assert {"zeta", "init_std", "lr"} <= set(meta["choices_not_in_paper"])
    assert len(meta["panels"]) == 4
    for panel in meta["panels"]:
        err = panel["rule_error_mc"]
        assert err["total"] == pytest.approx(err["bias"] ** 2 + err["variance"], rel=1e-12)
        assert sum(panel["hist_counts"]) <= 200 and panel["psi_summary"]["n"] == 200
    rows = (tmp_path / "figure6_paper_psi.csv").read_text().strip().splitlines()
    assert len(rows) == 201 and rows[0].split(",")[0] == "relu_t0.3"
    assert "bias" in capsys.readouterr().out


def test_figure6_refuses_to_overwrite(tmp_path):
    (tmp_path / "figure6_paper.png").write_bytes(b"x")
    with pytest.raises(SystemExit) as info:
        main(["figure6", "--out", str(tmp_path), *TOY, "--loss", "paper"])
    assert info.value.code == 2
    assert (tmp_path / "figure6_paper.png").read_bytes() == b"x"


def test_figure6_rejects_bad_zeta(tmp_path):
    with pytest.raises(SystemExit):
        main(["figure6", "--out", str(tmp_path), "--zeta", "uniform:0.8:0.2", *TOY])
