"""theory.line_fit: the trimmed fit, eq. (4) and the bootstrap, against independent references."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from theory.line_fit import BOOT_KEYS, bootstrap_replicates, eq4_error, percentile_ci, trimmed_line_fit


def _points(seed: int, n: int = 500):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.1, 1.0, n)
    return x, 1.2 * x + 0.03 + 0.04 * rng.standard_normal(n)


@pytest.mark.parametrize("seed", range(5))
def test_fit_equals_linregress_on_the_kept_points(seed):
    x, y = _points(seed)
    fit = trimmed_line_fit(x, y, (5.0, 95.0))
    ratio = y / x
    lo, hi = np.percentile(ratio, (5.0, 95.0))
    keep = (ratio >= lo) & (ratio <= hi)
    ref = stats.linregress(x[keep], y[keep])
    assert fit.n_fit == keep.sum() and np.array_equal(fit.kept, keep)
    assert fit.slope == pytest.approx(ref.slope, rel=1e-12)
    assert fit.intercept == pytest.approx(ref.intercept, rel=1e-10, abs=1e-13)
    assert fit.r2 == pytest.approx(ref.rvalue**2, rel=1e-12)
    bs, bi, var = eq4_error(x, y, fit, k=1.1)
    resid = ref.slope * x[keep] + ref.intercept - y[keep]
    assert (bs, bi) == pytest.approx((abs(ref.slope - 1.1), abs(ref.intercept)), rel=1e-10, abs=1e-13)
    assert var == pytest.approx(np.std(resid, ddof=1), rel=1e-10)


def test_exact_rule_has_zero_error():
    x = np.linspace(0.1, 1.0, 50)
    fit = trimmed_line_fit(x, 1.5 * x)
    assert fit.slope == pytest.approx(1.5, abs=1e-12) and abs(fit.intercept) < 1e-12
    assert fit.r2 == pytest.approx(1.0, abs=1e-12)
    assert max(eq4_error(x, 1.5 * x, fit, 1.5)) < 1e-12


@pytest.mark.parametrize("n_boot", [1, 7, 2_000_000 // 300 + 3])  # the last spans two vectorised blocks
def test_each_replicate_is_the_scalar_fit_of_its_resample(n_boot):
    """The vectorised replicates equal trimmed_line_fit / eq4_error on the same resampled indices."""
    x, y = _points(7, 300)
    k, rtol = 1.2, 0.02
    reps = bootstrap_replicates(x, y, k, (2.5, 97.5), n_boot, seed=11, rtol=rtol)
    assert set(reps) == set(BOOT_KEYS) and all(v.shape == (n_boot,) for v in reps.values())
    rng = np.random.default_rng(11)
    block = 2_000_000 // 300
    idx = np.concatenate([rng.integers(0, 300, (min(block, n_boot - s), 300)) for s in range(0, n_boot, block)])
    for i in sorted({0, n_boot // 2, n_boot - 1}):
        xi, yi = x[idx[i]], y[idx[i]]
        f = trimmed_line_fit(xi, yi)
        bs, bi, var = eq4_error(xi, yi, f, k)
        want = {"slope": f.slope, "intercept": f.intercept, "r2": f.r2, "error": bs + bi + var,
                "error_bias": bs + bi, "error_variance": var,
                "conforming_share": np.mean(np.abs(yi / xi - k) <= rtol * k)}
        for key, v in want.items():
            assert reps[key][i] == pytest.approx(v, rel=1e-9, abs=1e-12), (i, key)


def test_percentile_ci_drops_non_finite_and_reports_none_as_nan():
    assert percentile_ci([np.nan, 1.0, 2.0, 3.0, np.inf], 0.5) == pytest.approx((1.5, 2.5))
    lo, hi = percentile_ci([np.nan, np.inf])
    assert np.isnan(lo) and np.isnan(hi)


@pytest.mark.parametrize("call, word", [
    (lambda: trimmed_line_fit([1.0, 2.0, 3.0], [1.0, 2.0]), "same length"),
    (lambda: trimmed_line_fit([1.0, np.nan, 3.0], [1.0, 2.0, 3.0]), "finite"),
    (lambda: trimmed_line_fit([1.0, -2.0, 3.0], [1.0, 2.0, 3.0]), "x must be > 0"),
    (lambda: trimmed_line_fit([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0]), "distinct x"),
    (lambda: trimmed_line_fit([], []), "at least 3 points"),
    (lambda: trimmed_line_fit([1.0, 2.0], [1.0, 2.0]), "at least 3 points"),
    (lambda: trimmed_line_fit([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], (50, 10)), "trim must be"),
    (lambda: bootstrap_replicates([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], 1.0, n_boot=0), "n_boot"),
    (lambda: bootstrap_replicates([0.0, 2.0, 3.0], [1.0, 2.0, 3.0], 1.0), "x must be"),
    (lambda: bootstrap_replicates([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], -1.0), "k must be"),
    (lambda: percentile_ci([1.0], 1.0), "level must be"),
])
def test_bad_input_is_a_value_error(call, word):
    with pytest.raises(ValueError, match=word):
        call()
