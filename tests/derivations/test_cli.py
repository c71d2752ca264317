"""`hidden-rules bounds` and `hidden-rules appendix-a` end to end (next to the derivations they report)."""

import json

import pytest

from paper_figs.cli import main
from theory import Uniform, ou_schedule
from theory.bounds import linear_rule_error, separable_floor


def test_bounds_prints_points_gd_limit_c0_c1(tmp_path, capsys):
    out = tmp_path / "b.json"
    args = ["bounds", "--zeta", "uniform:0.2:0.8", "--t", "0.4", "--target", "both", "--json", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    for word in ("origin", "orthogonal", "aligned", "<- GD from small init", "C0 = |E_bias|",
                 "C1 = E_variance", "App. E as printed", "separable floor"):
        assert word in text
    recs = json.loads(out.read_text())["records"]
    assert [r["target"] for r in recs] == ["paper", "score"]
    alpha, beta = ou_schedule(0.4)
    for r in recs:
        exact = linear_rule_error(Uniform(0.2, 0.8), alpha, beta, r["target"])
        assert r["C0"] == abs(exact.bias) and r["C1"] == exact.variance
        assert r["separable_floor"]["variance"] == separable_floor(Uniform(0.2, 0.8), alpha, beta).variance
        assert sum(p["reached_by_gd"] for p in r["stationary_points"]) == 2
    assert set(recs[0]["app_e_as_printed"]) == {"+", "-"}
    with pytest.raises(SystemExit):  # no silent overwrite of --json
        main(["bounds", "--t", "0.4", "--json", str(out)])


def test_bounds_rejects_bad_zeta(capsys):
    with pytest.raises(SystemExit):
        main(["bounds", "--zeta", "uniform:0.8:0.2"])
    assert "zeta" in capsys.readouterr().err


def test_appendix_a_writes_png_pdf_json(tmp_path, capsys):
    assert main(["appendix-a", "--out", str(tmp_path), "--grid", "41"]) == 0
    for name in ("appendix_a.png", "appendix_a.pdf", "appendix_a.json"):
        assert (tmp_path / name).stat().st_size > 0
    meta = json.loads((tmp_path / "appendix_a.json").read_text())
    assert abs(meta["fid"]) < 1e-12
    assert meta["p"]["covariance"] == [[2.0, 1.0], [1.0, 2.0]] == meta["q"]["covariance"]
    assert len(meta["x"]) == 41 and len(meta["conditional_mean_p"]) == 41
    assert "FID" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["appendix-a", "--out", str(tmp_path), "--grid", "41"])
