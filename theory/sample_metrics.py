"""Section 3's rule metrics on samples of the multi-patch model (beyond the paper).

With a = <x^(1)-hat, u> and b = <x^(2)-hat, v>, samples are read as Section 3 reads images: x = a, y = 1 - b,
ground-truth line y = k x with k = 1 (the rule a + b = 1 of Def 4.1).

* ``trimmed_line_fit``, ``eq4_error`` (from ``theory.line_fit``; Table 1's copy in ``empirics`` is proven
  equal by a test): OLS y = b1 x + b0 on the points whose ratio y/x lies within the ``trim`` percentiles (Fig. 3/4 keep
  [2.5 %, 97.5 %]; inclusive, numpy's linear interpolation), R^2 = 1 - SS_res / SS_tot, and Error eq. (4) =
  |b1 - k| + |b0| (bias) + sqrt(Var(y_hat - y)) (variance term, ddof = 1);
* ``sample_metrics``: the above with percentile-bootstrap CIs, the +-1 % conforming share |y/x - k| <= 0.01 k,
  corr(a, 1 - b) with its SE sqrt((1 - r^2)/(n - 2)), the orthogonal residual r = (a + b - 1)/sqrt(2) (the
  distance to the rule line; its RMS and sd), KS and W1 of a against D_zeta (two-sample, against ``n_ref``
  fresh draws of zeta) and, given training points, the share of samples within ``delta`` of one.

Samples with x = a <= 0 have no ratio; like invalid images they are left out of the fit and counted
(``n_nonpositive_x``); every other metric uses all samples. When no fit is possible (fewer than 3 samples with
x > 0, or all with one x) the fit's fields are None and ``fit_note`` says why.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ._checks import check_int, check_real
from .line_fit import (
    BOOT_KEYS,
    LineFit,
    bootstrap_replicates,
    check_trim,
    check_xy,
    eq4_error,
    percentile_ci,
    trimmed_line_fit,
)
from .zeta import ZetaDistribution, check_zeta


@dataclass(frozen=True)
class SampleMetrics:
    """Section 3's reading of samples (x = a, y = 1 - b, k = 1) and the distances of a to D_zeta."""

    n: int
    n_fit: int
    n_nonpositive_x: int
    slope: float | None
    intercept: float | None
    r2: float | None
    error: float | None
    error_bias: float | None
    error_variance: float | None
    ci: dict
    conforming_share: float
    corr: float
    corr_se: float
    residual_mean: float
    residual_sd: float
    residual_rms: float
    ks: float
    ks_pvalue: float
    w1: float
    within_delta_share: float | None = None
    delta: float | None = None
    median_nearest_distance: float | None = None
    fit_note: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def nearest_distances(a, b, train_a, train_b) -> np.ndarray:
    """Distance of each (a, b) to the nearest training (a_i, b_i), in the plane of u, v (chunked)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ta, tb = np.asarray(train_a, np.float64), np.asarray(train_b, np.float64)
    out = np.empty(a.size)
    step = max(1, 4_000_000 // max(ta.size, 1))
    for i in range(0, a.size, step):
        d2 = (a[i:i + step, None] - ta[None]) ** 2 + (b[i:i + step, None] - tb[None]) ** 2
        out[i:i + step] = np.sqrt(d2.min(1))
    return out


def sample_metrics(a, b, zeta: ZetaDistribution, *, k: float = 1.0, trim=(2.5, 97.5), n_boot: int = 200,
                   seed: int = 0, rtol: float = 0.01, level: float = 0.95, n_ref: int = 100_000,
                   train_ab=None, delta: float = 0.01) -> SampleMetrics:
    """All metrics of the module docstring for samples with rule coordinates (a, b); ``train_ab`` = (a_i, b_i)
    of training points (the empirical source) adds the share within ``delta`` of one and the median distance."""
    from scipy import stats

    a, b = check_xy(a, b)
    zeta = check_zeta(zeta)
    k = check_real("k", k, positive=True)
    n_boot = check_int("n_boot", n_boot, minimum=0)
    seed = check_int("seed", seed, minimum=0)
    rtol = check_real("rtol", rtol, nonneg=True)
    level = check_real("level", level, positive=True)
    if not 0.5 <= level < 1:
        raise ValueError(f"level must be in [0.5, 1), got {level}")
    n_ref = check_int("n_ref", n_ref, minimum=2)
    if a.size < 4:
        raise ValueError(f"need at least 4 samples, got {a.size}")
    x, y = a, 1.0 - b
    pos = x > 0
    try:
        fit = trimmed_line_fit(x[pos], y[pos], trim)
    except ValueError as exc:
        fit, note = None, str(exc)
    if fit is not None:
        bias_slope, bias_intercept, var_term = eq4_error(x[pos], y[pos], fit, k)
        reps = bootstrap_replicates(x[pos], y[pos], k, trim, n_boot, seed, rtol) if n_boot else {}
        ci = {key: percentile_ci(v, level) for key, v in reps.items()}
        fitted = {"n_fit": fit.n_fit, "slope": fit.slope, "intercept": fit.intercept, "r2": fit.r2,
                  "error": bias_slope + bias_intercept + var_term, "error_bias": bias_slope + bias_intercept,
                  "error_variance": var_term, "ci": ci}
    else:
        check_trim(trim)
        fitted = {"n_fit": 0, "ci": {}, "fit_note": note,
                  **dict.fromkeys(("slope", "intercept", "r2", "error", "error_bias", "error_variance"))}
    with np.errstate(divide="ignore", invalid="ignore"):
        conf = float(np.mean(pos & (np.abs(y / np.where(pos, x, 1.0) - k) <= rtol * k)))
    r = float(np.corrcoef(x, y)[0, 1])
    resid = (a + b - 1.0) / math.sqrt(2.0)
    ref = zeta.sample(n_ref, np.random.default_rng(seed + 1))
    ks = stats.ks_2samp(a, ref)
    extra = {}
    if train_ab is not None:
        delta = check_real("delta", delta, positive=True)
        dist = nearest_distances(a, b, *train_ab)
        extra = {"within_delta_share": float(np.mean(dist <= delta)), "delta": delta,
                 "median_nearest_distance": float(np.median(dist))}
    return SampleMetrics(
        n=int(a.size), n_nonpositive_x=int((~pos).sum()), **fitted, conforming_share=conf,
        corr=r, corr_se=math.sqrt(max(1.0 - r * r, 0.0) / (a.size - 2)), residual_mean=float(resid.mean()),
        residual_sd=float(resid.std(ddof=1)), residual_rms=float(np.sqrt(np.mean(resid**2))),
        ks=float(ks.statistic), ks_pvalue=float(ks.pvalue), w1=float(stats.wasserstein_distance(a, ref)), **extra)


__all__ = ["LineFit", "trimmed_line_fit", "eq4_error", "SampleMetrics", "sample_metrics", "nearest_distances",
           "BOOT_KEYS"]
