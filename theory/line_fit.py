"""Section 3's reading of a fine rule y = k x from points (x_i, y_i), for the theory package.

* :func:`trimmed_line_fit`: OLS line y_hat = slope x + intercept on the points whose ratio y/x lies
  within the ``trim`` percentiles (Fig. 3, App. D.2: the 2.5 % tails of y/x are dropped).
* :func:`eq4_error`: the three terms of eq. (4), Error = |b1 - k| + |b0| + sqrt(Var(y_hat - y)), on the
  kept points.
* :func:`bootstrap_replicates`: percentile-bootstrap replicates of both, each replicate resampling the
  points with replacement and redoing the trimming and the fit; :func:`percentile_ci` reads a CI off them.

``theory.sample_metrics`` reads samples of the multi-patch model through these functions (x = a,
y = 1 - b). Table 1's image metrics (``empirics.evaluator.metrics``) keep their own copy on purpose:
``empirics`` never imports ``theory``, so that the evaluator loads without torch (0.14 s against 1.2 s
here). ``tests/theory/test_sampling.py::test_metrics_agree_with_section3_implementation`` proves the two
give the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._checks import check_int, check_real

__all__ = ["BOOT_KEYS", "LineFit", "check_trim", "check_xy", "trimmed_line_fit", "eq4_error", "bootstrap_replicates",
           "percentile_ci"]

# the statistics a bootstrap replicate yields, in this order
BOOT_KEYS = ("slope", "intercept", "r2", "error", "error_bias", "error_variance", "conforming_share")


def check_trim(trim) -> tuple[float, float]:
    """Two percentiles (lo, hi) with 0 <= lo < hi <= 100."""
    try:
        lo, hi = trim
    except (TypeError, ValueError) as exc:
        raise ValueError(f"trim must be two percentiles (lo, hi) with 0 <= lo < hi <= 100, got {trim!r}") from exc
    lo, hi = check_real("trim[0]", lo), check_real("trim[1]", hi)
    if not 0 <= lo < hi <= 100:
        raise ValueError(f"trim must be two percentiles (lo, hi) with 0 <= lo < hi <= 100, got {trim!r}")
    return lo, hi


def check_xy(x, y) -> tuple[np.ndarray, np.ndarray]:
    """Two finite 1-D float64 arrays of one length."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"x and y must be 1-D arrays of the same length, got shapes {x.shape} and {y.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("x and y must be finite")
    return x, y


@dataclass(frozen=True)
class LineFit:
    """OLS line y_hat = slope x + intercept on the kept (trimmed) points; ``kept`` marks them."""

    slope: float
    intercept: float
    r2: float
    n_fit: int
    trim: tuple[float, float]
    kept: np.ndarray = field(repr=False)


def trimmed_line_fit(x, y, trim=(2.5, 97.5)) -> LineFit:
    """Fit y = b1 x + b0 to the points (all x > 0) whose ratio y/x lies within the ``trim`` percentiles."""
    x, y = check_xy(x, y)
    trim = check_trim(trim)
    if np.any(x <= 0):
        raise ValueError("x must be > 0 for the ratio y/x")
    if x.size < 3:
        raise ValueError(f"need at least 3 points for a fit, got {x.size}")
    ratio = y / x
    lo, hi = np.percentile(ratio, trim)
    kept = (ratio >= lo) & (ratio <= hi)
    xs, ys = x[kept], y[kept]
    if xs.size < 3 or np.ptp(xs) == 0:
        raise ValueError(f"need at least 3 kept points with distinct x for a fit, got {xs.size}")
    mx, my = xs.mean(), ys.mean()
    b1 = np.sum((xs - mx) * (ys - my)) / np.sum((xs - mx) ** 2)
    b0 = my - b1 * mx
    ss_res, ss_tot = np.sum((ys - b1 * xs - b0) ** 2), np.sum((ys - my) ** 2)
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
    return LineFit(float(b1), float(b0), float(r2), int(xs.size), trim, kept)


def eq4_error(x, y, fit: LineFit, k: float = 1.0) -> tuple[float, float, float]:
    """eq. (4) of ``fit`` on its kept points against y = k x: (|b1 - k|, |b0|, sqrt(Var(y_hat - y)))."""
    x, y = check_xy(x, y)
    k = check_real("k", k, nonneg=True)
    if fit.kept.shape != x.shape:
        raise ValueError("fit was made on data of a different length")
    resid = fit.slope * x[fit.kept] + fit.intercept - y[fit.kept]
    return abs(fit.slope - k), abs(fit.intercept), float(np.sqrt(np.var(resid, ddof=1)))


def bootstrap_replicates(x, y, k: float, trim=(2.5, 97.5), n_boot: int = 1000, seed: int = 0,
                         rtol: float = 0.01) -> dict[str, np.ndarray]:
    """``n_boot`` bootstrap replicates of each statistic in :data:`BOOT_KEYS` (float[n_boot] each).

    A replicate resamples the points with replacement (``numpy.random.default_rng(seed)``), trims by
    y/x and refits; ``conforming_share`` is the share with |y/x - k| <= rtol k. A degenerate replicate
    (no spread in x) gives NaN/inf, which :func:`percentile_ci` drops. Vectorised in blocks of about
    2e6 resampled points.
    """
    x, y = check_xy(x, y)
    if x.size == 0 or np.any(x <= 0):
        raise ValueError("x must be non-empty and > 0 for the ratio y/x")
    k = check_real("k", k, nonneg=True)
    trim = check_trim(trim)
    n_boot = check_int("n_boot", n_boot, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    rtol = check_real("rtol", rtol, nonneg=True)
    rng = np.random.default_rng(seed)
    m = x.size
    stats: dict[str, list[np.ndarray]] = {key: [] for key in BOOT_KEYS}
    block = max(1, 2_000_000 // m)
    for start in range(0, n_boot, block):
        idx = rng.integers(0, m, (min(block, n_boot - start), m))
        X, Y = x[idx], y[idx]
        R = Y / X
        lo, hi = np.percentile(R, trim, axis=1)
        w = ((R >= lo[:, None]) & (R <= hi[:, None])).astype(np.float64)
        nk = w.sum(1)
        mx, my = (w * X).sum(1) / nk, (w * Y).sum(1) / nk
        dx, dy = X - mx[:, None], Y - my[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            b1 = (w * dx * dy).sum(1) / (w * dx * dx).sum(1)
            b0 = my - b1 * mx
            res = Y - b1[:, None] * X - b0[:, None]
            ss_res = (w * res * res).sum(1)
            r2 = 1.0 - ss_res / (w * dy * dy).sum(1)
            var_term = np.sqrt(ss_res / (nk - 1))  # eq. (4)'s sqrt(Var), ddof = 1
        bias = np.abs(b1 - k) + np.abs(b0)
        for key, val in zip(BOOT_KEYS, (b1, b0, r2, bias + var_term, bias, var_term,
                                        np.mean(np.abs(R - k) <= rtol * k, axis=1))):
            stats[key].append(val)
    return {key: np.concatenate(vals) for key, vals in stats.items()}


def percentile_ci(values, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of the finite ``values`` ((nan, nan) when none is finite)."""
    level = check_real("level", level, positive=True)
    if not 0.5 <= level < 1:
        raise ValueError(f"level must be in [0.5, 1), got {level}")
    v = np.asarray(values, np.float64).ravel()
    v = v[np.isfinite(v)]
    if not v.size:
        return (float("nan"), float("nan"))
    q = (100 * (1 - level) / 2, 100 * (1 + level) / 2)
    return tuple(float(t) for t in np.percentile(v, q))
