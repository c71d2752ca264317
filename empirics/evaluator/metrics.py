"""Rule metrics of Sections 3.2-3.3 and 5.1: coarse rules, fine ratio, trimmed fit, R^2, Error (eq. (4)).

* ``coarse_rule(task, features)`` and ``fine_xy`` (both defined in ``empirics.tasks``, the one source
  of each task's rules, and re-exported here): the coarse-grained rule of each task (Section 3.1.2);
  ``fine_xy`` gives (x, y) of the fine rule y = k x; the ratio is y / x.
* ``trimmed_fit``: OLS y = b1 x + b0 on the images whose ratio lies within the ``trim``
  percentiles (Fig. 3/4 keep [2.5 %, 97.5 %]); R^2 = 1 - SS_res / SS_tot of that fit.
* ``error_eq4``: eq. (4), Error = |b1 - k| + |b0| (bias) + sqrt(Var(y_hat - y)) (variance term),
  on the same trimmed points; Var uses ddof = 1.
* ``conforming`` / ``conforming_fraction``: which / what share of valid images have |y/x - k| <= rtol * k
  (Fig. 5a uses 0.01).
* ``summarize``: everything above plus invalid reasons, coarse violations and bootstrap 95 % CIs
  (percentile bootstrap over images, the trimming redone in each replicate).

Deliberate choices not in the paper: Task C's coarse rule "r1 != r2" is checked with a relative
tolerance (``COARSE_C_RTOL`` = 5 %), because measured radii are never exactly equal; the trimming
is inclusive at both percentiles (numpy's linear interpolation).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from empirics._checks import check_int, check_real, check_trim
from empirics.data.tasks import COARSE_C_RTOL, TARGET_SLOPE, Task, coarse_rule, feature_values, fine_xy

__all__ = ["COARSE_C_RTOL", "coarse_rule", "fine_xy", "fine_ratio", "LinearFit", "trimmed_fit", "Eq4Error",
           "error_eq4", "conforming", "conforming_fraction", "bootstrap_ci", "binomial_ci", "summarize",
           "feature_errors"]


def _xy(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"x and y must be 1-D arrays of the same length, got shapes {x.shape} and {y.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("x and y must be finite (pass only valid images)")
    return x, y


def fine_ratio(x, y) -> np.ndarray:
    """y / x, NaN where x <= 0 or either is not finite."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = y / x
    return np.where((x > 0) & np.isfinite(r), r, np.nan)


@dataclass(frozen=True)
class LinearFit:
    """OLS line on the trimmed points: y_hat = beta1 x + beta0."""

    beta1: float
    beta0: float
    r2: float
    n_fit: int
    trim: tuple[float, float]
    kept: np.ndarray


def trimmed_fit(x, y, trim=(2.5, 97.5)) -> LinearFit:
    """Fit y = b1 x + b0 to the points whose ratio y/x is within the ``trim`` percentiles (Fig. 3)."""
    x, y = _xy(x, y)
    trim = check_trim(trim)
    if np.any(x <= 0):
        raise ValueError("x must be > 0 for the ratio y/x")
    ratio = y / x
    lo, hi = np.percentile(ratio, trim)
    kept = (ratio >= lo) & (ratio <= hi)
    xs, ys = x[kept], y[kept]
    if xs.size < 3 or np.ptp(xs) == 0:
        raise ValueError(f"need at least 3 kept points with distinct x for a fit, got {xs.size}")
    mx, my = xs.mean(), ys.mean()
    sxx = np.sum((xs - mx) ** 2)
    b1 = np.sum((xs - mx) * (ys - my)) / sxx
    b0 = my - b1 * mx
    ss_res = np.sum((ys - b1 * xs - b0) ** 2)
    ss_tot = np.sum((ys - my) ** 2)
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
    return LinearFit(float(b1), float(b0), float(r2), int(xs.size), trim, kept)


@dataclass(frozen=True)
class Eq4Error:
    """Eq. (4): Error = |b1 - k| + |b0| + sqrt(Var(y_hat - y))."""

    bias_slope: float
    bias_intercept: float
    variance_term: float

    @property
    def bias(self) -> float:
        return self.bias_slope + self.bias_intercept

    @property
    def total(self) -> float:
        return self.bias + self.variance_term


def error_eq4(x, y, fit: LinearFit, k: float) -> Eq4Error:
    """Eq. (4) of the fit on its kept points against the ground-truth line y = k x."""
    x, y = _xy(x, y)
    k = check_real("k", k, 0.0)
    if fit.kept.shape != x.shape:
        raise ValueError("fit was made on data of a different length")
    xs, ys = x[fit.kept], y[fit.kept]
    resid = fit.beta1 * xs + fit.beta0 - ys
    return Eq4Error(abs(fit.beta1 - k), abs(fit.beta0), float(np.sqrt(np.var(resid, ddof=1))))


def conforming(x, y, k: float, rtol: float = 0.01) -> np.ndarray:
    """Per image: |y/x - k| <= rtol * k (inclusive); False where the ratio is undefined (x <= 0, NaN)."""
    k = check_real("k", k, 0.0)
    rtol = check_real("rtol", rtol, 0.0)
    with np.errstate(invalid="ignore"):
        return np.abs(fine_ratio(x, y) - k) <= rtol * k


def conforming_fraction(x, y, k: float, rtol: float = 0.01) -> float:
    """Share of images with |y/x - k| <= rtol * k (Fig. 5a: rtol = 0.01)."""
    x, y = _xy(x, y)
    k = check_real("k", k, 0.0)
    rtol = check_real("rtol", rtol, 0.0)
    if x.size == 0:
        return float("nan")
    return float(np.mean(conforming(x, y, k, rtol)))


def binomial_ci(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson (exact) confidence interval of a proportion, e.g. Table 1's Invalid %."""
    from scipy.stats import binomtest

    trials = check_int("trials", trials, 0)
    successes = check_int("successes", successes, 0, trials)
    level = check_real("level", level, 0.5, 0.999)
    if trials == 0:
        return (0.0, 1.0)
    ci = binomtest(successes, trials).proportion_ci(confidence_level=level, method="exact")
    return (float(ci.low), float(ci.high))


def bootstrap_ci(x, y, k: float, trim=(2.5, 97.5), n_boot: int = 1000, seed: int = 0, rtol: float = 0.01,
                 level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile-bootstrap CIs of b1, b0, R^2, Error (and its terms) and the conforming fraction.

    Each replicate resamples the images with replacement and redoes the trimming and the fit.
    """
    x, y = _xy(x, y)
    trim = check_trim(trim)
    n_boot = check_int("n_boot", n_boot, 1)
    seed = check_int("seed", seed, 0)
    level = check_real("level", level, 0.5, 0.999)
    rng = np.random.default_rng(seed)
    m = x.size
    stats: dict[str, list[np.ndarray]] = {k_: [] for k_ in ("beta1", "beta0", "r2", "error", "error_bias",
                                                             "error_variance", "conforming_fraction")}
    block = max(1, 2_000_000 // max(m, 1))
    for start in range(0, n_boot, block):
        b = min(block, n_boot - start)
        idx = rng.integers(0, m, (b, m))
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
            var_term = np.sqrt(ss_res / (nk - 1))
        bias = np.abs(b1 - k) + np.abs(b0)
        stats["beta1"].append(b1)
        stats["beta0"].append(b0)
        stats["r2"].append(r2)
        stats["error"].append(bias + var_term)
        stats["error_bias"].append(bias)
        stats["error_variance"].append(var_term)
        stats["conforming_fraction"].append(np.mean(np.abs(R - k) <= rtol * k, axis=1))
    q = (100 * (1 - level) / 2, 100 * (1 + level) / 2)
    out = {}
    for key, vals in stats.items():
        v = np.concatenate(vals)
        v = v[np.isfinite(v)]
        out[key] = tuple(float(t) for t in np.percentile(v, q)) if v.size else (float("nan"), float("nan"))
    out["slope_rel_error"] = tuple(float(t) for t in np.percentile(
        np.abs(np.concatenate(stats["beta1"]) - k) / k, q))
    return out


def _num(v):
    """JSON-friendly float (None for NaN/inf)."""
    v = float(v)
    return v if np.isfinite(v) else None


def summarize(task, x, y, valid, coarse_ok, reason, *, trim=(2.5, 97.5), n_boot: int = 1000, seed: int = 0,
              conform_rtol: float = 0.01) -> dict:
    """All rule metrics of a batch as a JSON-ready dict (see the module docstring)."""
    task = Task.parse(task)
    k = TARGET_SLOPE[task]
    valid = np.asarray(valid, bool)
    n = valid.size
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    coarse_ok = np.asarray(coarse_ok, bool)
    reason = np.asarray(reason, dtype=object)
    if not (x.shape == y.shape == coarse_ok.shape == reason.shape == (n,)):
        raise ValueError("x, y, valid, coarse_ok and reason must all have shape (N,)")
    trim = check_trim(trim)
    n_boot = check_int("n_boot", n_boot, 0)
    xv, yv = x[valid], y[valid]
    n_valid = int(valid.sum())
    out = {
        "task": task.value, "k": k, "n_images": n, "n_valid": n_valid,
        "valid_fraction": _num(n_valid / n) if n else None,
        "invalid_reasons": dict(Counter(str(r) for r in reason[~valid]).most_common()),
        "coarse_violations": int(np.sum(~coarse_ok[valid])),
        "coarse_violation_fraction": _num(np.mean(~coarse_ok[valid])) if n_valid else None,
        "trim": list(trim), "conform_rtol": conform_rtol,
    }
    fit_keys = ("n_fit", "beta1", "beta0", "slope_rel_error", "r2", "error", "error_bias", "error_variance")
    out.update(dict.fromkeys(fit_keys))
    out["conforming_fraction"] = conforming_fraction(xv, yv, k, conform_rtol) if n_valid else None
    ratio = fine_ratio(xv, yv)
    ratio = ratio[np.isfinite(ratio)]
    out["ratio"] = ({"mean": _num(ratio.mean()), "median": _num(np.median(ratio)), "std": _num(ratio.std()),
                     "p2.5": _num(np.percentile(ratio, 2.5)), "p97.5": _num(np.percentile(ratio, 97.5))}
                    if ratio.size else None)
    fit_ok = n_valid >= 3 and np.all(xv > 0)
    if fit_ok:
        try:
            fit = trimmed_fit(xv, yv, trim)
        except ValueError:
            fit_ok = False
    if fit_ok:
        err = error_eq4(xv, yv, fit, k)
        out.update({"n_fit": fit.n_fit, "beta1": fit.beta1, "beta0": fit.beta0,
                    "slope_rel_error": abs(fit.beta1 - k) / k, "r2": _num(fit.r2), "error": err.total,
                    "error_bias": err.bias, "error_variance": err.variance_term})
    out["n_boot"], out["seed"] = n_boot, seed
    if n_boot and fit_ok:
        ci = bootstrap_ci(xv, yv, k, trim, n_boot, seed, conform_rtol)
        rng = np.random.default_rng([seed, 1])
        vf = valid[rng.integers(0, n, (n_boot, n))].mean(1) if n <= 20_000 else None
        if vf is not None:
            ci["valid_fraction"] = tuple(float(t) for t in np.percentile(vf, (2.5, 97.5)))
        out["ci95"] = {key: [_num(a), _num(b)] for key, (a, b) in ci.items()}
    else:
        out["ci95"] = None
    return out


def feature_errors(measured: dict[str, np.ndarray], truth: dict[str, np.ndarray], keys, size,
                   valid=None) -> dict:
    """Absolute error in pixels of each measured feature vs the ground truth (normalised features x size).

    Returns {key: {"median_px", "p95_px", "max_px"}} and "all" pooling every key, over ``valid`` images.
    """
    size = np.asarray(size, np.float64)
    out = {}
    pooled = []
    for key in keys:
        m, t = feature_values(measured, key), feature_values(truth, key)
        sel = np.isfinite(m) & np.isfinite(t) if valid is None else np.asarray(valid, bool) & np.isfinite(m)
        err = (np.abs(m - t) * size)[sel] if size.ndim == 0 else (np.abs(m - t) * size)[sel]
        pooled.append(err)
        out[key] = _err_stats(err)
    out["all"] = _err_stats(np.concatenate(pooled) if pooled else np.zeros(0))
    return out


def _err_stats(err: np.ndarray) -> dict:
    if err.size == 0:
        return {"n": 0, "median_px": None, "p95_px": None, "max_px": None}
    return {"n": int(err.size), "median_px": float(np.median(err)), "p95_px": float(np.percentile(err, 95)),
            "max_px": float(err.max())}
