"""Metrics of Sections 3.2-5.1: trimmed fit, R^2, Error (eq. (4)), conforming fraction, CIs, coarse rules."""

import json
import math

import numpy as np
import pytest

from empirics.evaluator.metrics import (
    bootstrap_ci,
    coarse_rule,
    conforming_fraction,
    error_eq4,
    feature_errors,
    fine_ratio,
    summarize,
    trimmed_fit,
)


def test_exact_line_has_zero_error():
    x = np.linspace(0.02, 0.2, 50)
    fit = trimmed_fit(x, 1.5 * x)
    assert fit.beta1 == pytest.approx(1.5, abs=1e-12) and fit.beta0 == pytest.approx(0, abs=1e-12)
    assert fit.r2 == pytest.approx(1.0, abs=1e-12)
    err = error_eq4(x, 1.5 * x, fit, 1.5)
    assert err.total == pytest.approx(0, abs=1e-12)
    assert conforming_fraction(x, 1.5 * x, 1.5) == 1.0


def test_trimmed_fit_matches_polyfit_on_kept_points():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.05, 0.2, 1000)
    y = 1.2 * x + 0.003 + rng.normal(0, 0.004, x.size)
    y[:20] *= 3                                                    # outliers in the ratio
    fit = trimmed_fit(x, y, (2.5, 97.5))
    ratio = y / x
    lo, hi = np.percentile(ratio, [2.5, 97.5])
    kept = (ratio >= lo) & (ratio <= hi)
    np.testing.assert_array_equal(fit.kept, kept)
    assert fit.n_fit == kept.sum() == 950
    b1, b0 = np.polyfit(x[kept], y[kept], 1)
    assert fit.beta1 == pytest.approx(b1, rel=1e-10) and fit.beta0 == pytest.approx(b0, abs=1e-12)
    resid = y[kept] - b1 * x[kept] - b0
    r2 = 1 - np.sum(resid**2) / np.sum((y[kept] - y[kept].mean()) ** 2)
    assert fit.r2 == pytest.approx(r2, rel=1e-12)
    # configurable trimming
    assert trimmed_fit(x, y, (0, 100)).n_fit == 1000
    assert trimmed_fit(x, y, (10, 90)).n_fit == 800


def test_error_eq4_terms():
    x = np.array([0.1, 0.2, 0.3, 0.4])
    y = np.array([0.12, 0.21, 0.33, 0.41])
    fit = trimmed_fit(x, y, (0, 100))
    err = error_eq4(x, y, fit, 1.0)
    assert err.bias_slope == pytest.approx(abs(fit.beta1 - 1.0))
    assert err.bias_intercept == pytest.approx(abs(fit.beta0))
    y_hat = fit.beta1 * x + fit.beta0
    assert err.variance_term == pytest.approx(np.std(y_hat - y, ddof=1))
    assert err.total == pytest.approx(err.bias + err.variance_term)


def test_conforming_fraction_and_ratio():
    x = np.array([1.0, 1.0, 1.0, 1.0])
    y = np.array([1.414, 1.425, 1.405, 1.5])
    # |y/x - sqrt2| <= 0.01 sqrt2 = 0.01414
    assert conforming_fraction(x, y, math.sqrt(2)) == 0.75
    assert conforming_fraction(x, y, math.sqrt(2), rtol=0.001) == 0.25
    ratio = fine_ratio([0.0, 1.0, -1.0], [1.0, 2.0, 1.0])
    np.testing.assert_array_equal(np.isnan(ratio), [True, False, True])


def test_bootstrap_ci_covers_and_is_reproducible():
    rng = np.random.default_rng(1)
    x = rng.uniform(0.05, 0.2, 400)
    y = x + rng.normal(0, 0.002, x.size)
    ci = bootstrap_ci(x, y, 1.0, n_boot=300, seed=3)
    fit = trimmed_fit(x, y)
    assert ci["beta1"][0] < fit.beta1 < ci["beta1"][1]
    assert ci["beta1"][0] < 1.0 < ci["beta1"][1]                  # true slope inside the 95 % CI
    assert ci == bootstrap_ci(x, y, 1.0, n_boot=300, seed=3)
    assert ci["error"][0] <= ci["error"][1] and 0 <= ci["conforming_fraction"][0]


def test_coarse_rules():
    nan = float("nan")
    a = {"sun_x": np.array([0.2, 0.8, 0.2, nan]), "pole_x": np.full(4, 0.5),
         "shadow_end": np.array([0.7, 0.3, 0.3, 0.7])}
    np.testing.assert_array_equal(coarse_rule("A", a), [True, True, False, False])
    np.testing.assert_array_equal(coarse_rule("B", {"h1": np.array([0.3, 0.2]), "h2": np.array([0.2, 0.3])}),
                                  [True, False])
    c = {"r_small": np.array([0.1, 0.1, 0.1]), "r_large": np.array([0.141, 0.104, 0.09])}
    np.testing.assert_array_equal(coarse_rule("C", c), [True, False, True])
    d = {"side_top": np.array([0.2, 0.3]), "side_bottom": np.array([0.3, 0.2])}
    np.testing.assert_array_equal(coarse_rule("D", d), [True, False])
    with pytest.raises(ValueError, match="h2"):
        coarse_rule("B", {"h1": np.ones(2)})


def test_summarize_is_complete_and_json_ready():
    rng = np.random.default_rng(2)
    n = 200
    x = rng.uniform(0.05, 0.15, n)
    y = math.sqrt(2) * x + rng.normal(0, 0.001, n)
    valid = np.ones(n, bool)
    valid[:10] = False
    reason = np.array(["missing yellowish circle"] * 10 + [""] * (n - 10), dtype=object)
    coarse = np.ones(n, bool)
    coarse[50] = False
    xs, ys = np.where(valid, x, np.nan), np.where(valid, y, np.nan)
    s = summarize("C", xs, ys, valid, coarse, reason, n_boot=100)
    assert s["n_images"] == 200 and s["n_valid"] == 190 and s["valid_fraction"] == 0.95
    assert s["invalid_reasons"] == {"missing yellowish circle": 10}
    assert s["coarse_violations"] == 1
    for key in ("beta1", "beta0", "r2", "error", "error_bias", "error_variance", "slope_rel_error",
                "conforming_fraction", "ratio", "ci95", "trim"):
        assert s[key] is not None, key
    assert set(s["ci95"]) >= {"beta1", "beta0", "r2", "error", "conforming_fraction", "valid_fraction"}
    assert s["error"] == pytest.approx(s["error_bias"] + s["error_variance"])
    json.dumps(s)
    empty = summarize("C", np.full(3, np.nan), np.full(3, np.nan), np.zeros(3, bool), np.zeros(3, bool),
                      np.array(["x"] * 3, dtype=object), n_boot=10)
    assert empty["r2"] is None and empty["ci95"] is None and empty["n_valid"] == 0
    json.dumps(empty)


@pytest.mark.parametrize("call, word", [
    (lambda: trimmed_fit([1, 2], [1, 2, 3]), "same length"),
    (lambda: trimmed_fit([1, 2, np.nan], [1, 2, 3]), "finite"),
    (lambda: trimmed_fit([1, 2, 3], [1, 2, 3], (50, 40)), "trim"),
    (lambda: trimmed_fit([1, 2, 3], [1, 2, 3], "ab"), "trim"),
    (lambda: trimmed_fit([0, 1, 2], [1, 2, 3]), "x must be > 0"),
    (lambda: trimmed_fit([1.0, 2.0], [1.0, 2.0], (0, 100)), "at least 3"),
    (lambda: conforming_fraction([1.0], [1.0], 1.0, rtol=-1), "rtol"),
    (lambda: bootstrap_ci([1.0, 2, 3], [1.0, 2, 3], 1.0, n_boot=0), "n_boot"),
    (lambda: summarize("C", np.ones(2), np.ones(2), np.ones(3, bool), np.ones(2, bool), np.array(["", ""])),
     "shape"),
])
def test_validation(call, word):
    with pytest.raises(ValueError, match=word):
        call()


def test_feature_errors_in_pixels():
    m = {"a": np.array([0.5, 0.25, np.nan])}
    t = {"a": np.array([0.5, 0.5, 0.5])}
    e = feature_errors(m, t, ["a"], 32)
    assert e["a"]["n"] == 2 and e["a"]["max_px"] == pytest.approx(8.0) and e["all"]["median_px"] == 4.0
