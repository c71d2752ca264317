"""`hidden-rules theory-samples` end to end at toy sizes: files, JSON/CSV contents, no silent overwrite, errors."""

import csv
import json
import math

import pytest

from paper_figs import theory_samples
from paper_figs.cli import main

TOY = ["--d", "6", "--m", "2", "--n", "300", "--steps", "3", "--epochs", "150", "--joint-epochs", "60",
       "--activations", "relu", "cubic", "--n-train", "15", "--n-boot", "20", "--n-psi", "2000", "--workers", "1",
       "--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("theory_samples")
    assert main(["theory-samples", "--out", str(out), *TOY]) == 0
    return out, json.loads((out / "theory_samples.json").read_text())


def test_writes_png_pdf_json_csv_with_one_csv_row_per_sample(toy_run):
    out, meta = toy_run
    for name in theory_samples.NAMES:
        assert (out / name).stat().st_size > 0
    with open(out / "theory_samples.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 300 * len(meta["rows"])
    first = [r for r in rows if r["score"] == "true" and float(r["t_min"]) == 0.1]
    assert all(abs(float(r["a"]) + float(r["b"]) - 1) < 1e-6 for r in first)  # identity (*) survives Tweedie


def test_rows_hold_the_required_fields_and_sources(toy_run):
    _, meta = toy_run
    rows = meta["rows"]
    keys = {(r["score"], r["activation"], r["target"], r["t_min"]) for r in rows}
    assert keys == {("true", None, None, 0.1), ("per_patch", "relu", "score", 0.1),
                    ("per_patch", "cubic", "score", 0.1), ("joint", "relu", "score", 0.1),
                    ("marginal", None, None, 0.1), ("empirical", None, None, 0.1),
                    ("true", None, None, 1e-3), ("empirical", None, None, 1e-4)}
    for r in rows:
        for key in ("n", "slope", "intercept", "r2", "error", "error_bias", "error_variance", "corr", "corr_se"):
            assert key in r
        assert r["n"] == 300 and math.isfinite(r["corr_se"])
        if r["score"] in ("true", "marginal", "empirical"):  # a > 0 for every sample: a fit always exists
            assert r["fit_note"] is None and r["n_nonpositive_x"] == 0
        if r["fit_note"] is None:
            assert r["error"] == pytest.approx(r["error_bias"] + r["error_variance"], rel=1e-12)
            lo, hi = r["ci"]["error"]
            assert lo <= hi
        assert (r["within_delta_share"] is not None) == (r["score"] == "empirical")
    by_t = meta["by_t"]
    assert len(by_t) == 6 * 4  # six sources on the main grid, four grid times each
    assert [b["t"] for b in by_t[:4]] == pytest.approx(meta["grid"], rel=1e-15)
    for b in by_t:
        assert b["E"] == pytest.approx(b["E_bias"] ** 2 + b["E_variance"], rel=1e-9, abs=1e-300)
    marginal = [b for b in by_t if b["score"] == "marginal"]
    assert all(b["E_source"] == "exact" and abs(b["E_mc"] - b["E"]) <= 5 * b["E_mc_se"] for b in marginal)


def test_refuses_to_overwrite(toy_run):
    out, _ = toy_run
    with pytest.raises(SystemExit) as exc:
        main(["theory-samples", "--out", str(out), *TOY])
    assert exc.value.code == 2


@pytest.mark.parametrize("argv, words", [
    (["--activations", "relu", "relu"], "repeated values"),
    (["--n", "5"], "--n must be >= 10"),
    (["--t-min", "5"], "--t-min must be < T"),
])
def test_bad_settings_are_one_line_errors(tmp_path, capsys, argv, words):
    with pytest.raises(SystemExit) as exc:
        main(["theory-samples", "--out", str(tmp_path / "o"), *TOY, *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]
    assert not (tmp_path / "o").exists()
