"""`hidden-rules figure6` end to end at toy sizes: files, JSON contents, no silent overwrite."""

import json

import pytest

from paper_figs.cli import main

TOY = ["--n", "10", "--n-eps", "4", "--epochs", "20", "--d", "5", "--m", "2", "--t", "0.3", "0.7",
       "--activations", "relu", "cubic", "--samples", "200", "--no-progress", "--device", "cpu"]


def test_figure6_writes_png_pdf_json_csv(tmp_path, capsys):
    assert main(["figure6", "--out", str(tmp_path), *TOY]) == 0
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
        main(["figure6", "--out", str(tmp_path), *TOY])
    assert info.value.code == 2
    assert (tmp_path / "figure6_paper.png").read_bytes() == b"x"


def test_figure6_rejects_bad_zeta(tmp_path):
    with pytest.raises(SystemExit):
        main(["figure6", "--out", str(tmp_path), "--zeta", "uniform:0.8:0.2", *TOY])
