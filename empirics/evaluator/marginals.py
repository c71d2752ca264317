"""Marginal fidelity of DDPM samples (Section 3), each number beside a null that could come out otherwise.

Section 3 judges a model by its rule (Fig. 4: R^2, Error eq. (4)); a sample set whose *marginals*
(background, colours, sizes) are off can fail that rule for reasons that have nothing to do with it.
This module measures the marginals of three image sets against the run's training set:

* ``samples``: the model's samples;
* ``training``: the training set itself (App. C renders, ``empirics.runs``);
* ``fresh``: exact renders never trained on (``empirics.evaluator.controls.fresh_renders``, the null): they
  are compared to the training set exactly as the samples are, so every distance has a reference
  that includes the finite-sample noise and the evaluator's own error.

Quantities (one function each):

* ``background_level``: per image, the median over pixels of the pixel's mean over R, G, B
  (0..255). The elements cover well under half of every image, so this is the paper's level
  (App. C draws on white, 255).
* ``element_hsv``: per image and element, the OpenCV HSV colour (H 0..180, S and V 0..255) of the
  element's most strongly inked pixels, found without App. C's boxes (so it can lie outside them):
  pixels at least ``INK_MIN`` (RGB distance) from the image's background colour are given to the
  task's colour family nearest in hue (Task A: saturation or value below ``DARK_SPLIT`` is the dark
  shadow),
  and the element's colour is the median RGB of its pixels with >= ``STRONG_INK`` of its largest
  distance (the anti-aliased rim, a mix with the background, is left out). With
  ``relative_to_background`` the pixels are first divided by the background colour, as the
  evaluator does (``empirics.evaluator.colour.whiten_background``): a reader sees whether a grey tint alone
  moves a colour out of its box.
* ``colour_box_share``: the share of images whose element colour lies in App. C's HSV box
  (``empirics.tasks``, widened by the 4 OpenCV units of uint8 rounding, as
  ``empirics.evaluator.memorization`` does). Beside it ``any_pixel_share``: the share of images in which
  ``empirics.evaluator.memorization.element_colours`` (App. D.2's colour vector) finds the element at all,
  i.e. some strongly inked pixel in the box; that is a weaker criterion.
* ``feature_distance``: Wasserstein-1 (``scipy.stats.wasserstein_distance``) and the two-sample KS
  statistic (``scipy.stats.ks_2samp``) of one feature's valid values against the training set's,
  with percentile-bootstrap 95 % CIs (both sets resampled, seeded). Both are >= 0 with a positive
  bias at finite n, so they are read against the fresh renders' values, not against 0.
* ``Support`` / ``inside_support``: a value is inside the training support of a feature if it lies in
  [min - widen |min|, max + widen |max|] of the training set's valid values (``widen`` = 2 % by
  default: for the positive lengths of the fine rule, [0.98 min, 1.02 max]).
* ``ratio_error_by_size``: the fine rule's relative ratio error y / (k x) - 1 (``fine_ratio``,
  ``TARGET_SLOPE``) in quantile bins of x, median |error| with a bootstrap CI per bin, so a reader
  sees whether the rule or the size is off.
* ``goal_measures``: the three marginal goals of a CPU model (issue 23) on one sample set, with CIs.
* ``run_marginals``: all of the above for one run folder, and the fine-rule fit (Fig. 4's trimmed fit,
  R^2, Error eq. (4), through ``Evaluation.summary``) on the samples inside the training support beside
  all samples.

Not in the paper: the paper reports no marginals and no nulls; these are ours (issue 22, items 2-3).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.stats import bootstrap, ks_2samp, wasserstein_distance

from empirics._checks import check_int, check_real, check_rgb_images
from empirics.data.tasks import DARK, ELEMENTS, RULE_FEATURES, SPECS, TARGET_SLOPE, HSVRange, Task
from empirics.evaluator.colour import strongest_colour
from empirics.evaluator.controls import FRESH_SEED, fresh_renders
from empirics.evaluator.memorization import element_colours
from empirics.evaluator.metrics import binomial_ci, fine_ratio
from empirics.evaluator.pipeline import Evaluation, evaluate
from empirics.runs import RunEvaluation

__all__ = ["SETS", "WHITE_LEVEL", "SUPPORT_WIDEN", "INK_MIN", "STRONG_INK", "DARK_SPLIT", "COLOUR_SLACK",
           "background_level", "background_summary", "element_hsv", "in_colour_box", "colour_box_share",
           "FeatureDistance", "feature_distance", "Support", "support_bounds", "inside_support",
           "support_share", "ratio_error_by_size", "RunMarginals", "run_marginals", "GOAL_WHITE_SHARE",
           "GOAL_OUTSIDE_SHARE", "GOAL_COLOUR_RATIO", "goal_measures"]

SETS = ("samples", "training", "fresh")
WHITE_LEVEL = 250.0          # a background level >= this counts as white (App. C draws on 255)
SUPPORT_WIDEN = 0.02         # the training support [min, max] widened by 2 % of each bound
INK_MIN = 30.0               # RGB distance (0..255 units) from the background: below it a pixel is background
STRONG_INK = 0.9             # an element's colour: pixels with >= 90 % of its largest distance from the background
DARK_SPLIT = 75.0            # Task A: saturation or value below this is the dark shadow (App. C: dark S <= 50,
#                              V >= 50; the chromatic families S >= 100, V >= 100)
COLOUR_SLACK = 4.0           # OpenCV units added to App. C's boxes (uint8 rounding of a drawn colour)
BACKGROUND_QUANTILES = (1, 5, 25, 50, 75, 95, 99)
MIN_BIN = 10                 # a ratio-error bin with fewer images gets no statistics


def _images(images) -> np.ndarray:
    return check_rgb_images(images)


def _level(level: float) -> float:
    return check_real("level", level, 0.5, 0.999)


def background_level(images) -> np.ndarray:
    """Per image: median over pixels of the mean over R, G, B (0..255); 255 for App. C's white paper."""
    imgs = _images(images)
    n = len(imgs)
    return np.median(imgs.astype(np.float64).mean(-1).reshape(n, -1), axis=1)


def background_summary(levels, white: float = WHITE_LEVEL, level: float = 0.95) -> dict:
    """Distribution of background levels: median, quantiles, and the share >= ``white`` (Clopper-Pearson CI)."""
    lv = np.asarray(levels, np.float64).reshape(-1)
    if lv.size == 0 or not np.all(np.isfinite(lv)):
        raise ValueError(f"levels must be a non-empty array of finite values, got {lv.size} values")
    white = check_real("white", white, 0.0, 255.0)
    n_white = int(np.sum(lv >= white))
    lo, hi = binomial_ci(n_white, lv.size, _level(level))
    return {"n": int(lv.size), "median": float(np.median(lv)), "mean": float(lv.mean()),
            "quantiles": {str(q): float(v) for q, v in zip(BACKGROUND_QUANTILES,
                                                           np.percentile(lv, BACKGROUND_QUANTILES))},
            "white_level": white, "share_white": n_white / lv.size, "share_white_ci95": [lo, hi],
            "share_below_white": 1.0 - n_white / lv.size}


def _hsv(rgb01: np.ndarray) -> np.ndarray:
    """OpenCV HSV units (H 0..180, S and V 0..255) of float RGB in [0, 1], any leading shape."""
    shape = rgb01.shape
    hsv = cv2.cvtColor(np.ascontiguousarray(rgb01.reshape(-1, 1, 3), np.float32), cv2.COLOR_RGB2HSV)
    hsv = hsv.reshape(shape).astype(np.float64)
    return hsv * np.array([0.5, 255.0, 255.0])


def _hue_distance(h: np.ndarray, centre: float) -> np.ndarray:
    d = np.abs(h - centre) % 180.0
    return np.minimum(d, 180.0 - d)


def _family_labels(hsv: np.ndarray, families: list[HSVRange]) -> np.ndarray:
    """Index of each pixel's nearest family: dark by saturation, the chromatic ones by hue."""
    chroma = [i for i, f in enumerate(families) if f is not DARK]
    centres = np.array([0.5 * (families[i].hue[0] + families[i].hue[1]) for i in chroma])
    dist = np.stack([_hue_distance(hsv[..., 0], c) for c in centres], axis=-1)
    label = np.asarray(chroma)[np.argmin(dist, axis=-1)]
    if any(f is DARK for f in families):
        # At low value, hue and saturation say little: a near-black pixel (a sample's shadow, RGB 0, 33, 24)
        # is dark whatever its hue.
        dark = (hsv[..., 1] < DARK_SPLIT) | (hsv[..., 2] < DARK_SPLIT)
        label = np.where(dark, families.index(DARK), label)
    return label


def element_hsv(images, task, relative_to_background: bool = False) -> dict[str, np.ndarray]:
    """{element: (N, 3) OpenCV HSV} of each element of ``task`` per image; NaN rows where it has no pixels.

    Module docstring: pixels far (>= ``INK_MIN``) from the background go to the nearest colour family;
    an element's colour is the median RGB of its pixels with >= ``STRONG_INK`` of its largest distance.
    """
    task = Task.parse(task)
    imgs = _images(images).astype(np.float64)
    n = len(imgs)
    bg = np.median(imgs.reshape(n, -1, 3), axis=1)
    dist = np.linalg.norm(imgs - bg[:, None, None, :], axis=-1)
    if relative_to_background:
        eff = np.clip(imgs / np.maximum(bg, 1.0)[:, None, None, :], 0.0, 1.0)
    else:
        eff = imgs / 255.0
    families = [f for _, f in ELEMENTS[task]]
    label = _family_labels(_hsv(eff), families)
    cand = dist >= INK_MIN
    out = {}
    for j, (name, _) in enumerate(ELEMENTS[task]):
        col = strongest_colour(eff, cand & (label == j), dist, STRONG_INK)
        hsv = np.full((n, 3), np.nan)
        ok = np.isfinite(col[:, 0])
        if ok.any():
            hsv[ok] = _hsv(col[ok])
        out[name] = hsv
    return out


def in_colour_box(hsv, family: HSVRange, slack: float = COLOUR_SLACK) -> np.ndarray:
    """Whether each HSV colour (OpenCV units, [..., 3]) lies in App. C's box of ``family`` widened by ``slack``."""
    if not isinstance(family, HSVRange):
        raise ValueError(f"family must be an HSVRange of empirics.tasks, got {type(family).__name__}")
    hsv = np.asarray(hsv, np.float64)
    if hsv.shape[-1:] != (3,):
        raise ValueError(f"hsv must have a last axis of 3 (H, S, V), got shape {hsv.shape}")
    slack = check_real("slack", slack, 0.0, 50.0)
    with np.errstate(invalid="ignore"):
        return family.contains(hsv, slack) & np.all(np.isfinite(hsv), axis=-1)


def colour_box_share(images, task, level: float = 0.95) -> dict:
    """Per element: the share of images whose colour (``element_hsv``, raw and relative to the background)
    lies in App. C's box, with Clopper-Pearson CIs, the median HSV, and ``any_pixel_share`` (module docstring)."""
    task = Task.parse(task)
    imgs = _images(images)
    level = _level(level)
    raw, rel = element_hsv(imgs, task), element_hsv(imgs, task, relative_to_background=True)
    any_pixel = element_colours(imgs, task)
    out = {}
    for name, family in ELEMENTS[task]:
        found = np.isfinite(raw[name][:, 0])
        n_found = int(found.sum())
        rec = {"family": family.name, "n_images": len(imgs), "n_found": n_found}
        for key, hsv in (("raw", raw[name]), ("relative_to_background", rel[name])):
            inside = int(np.sum(in_colour_box(hsv[found], family)))
            lo, hi = binomial_ci(inside, n_found, level)
            med = np.median(hsv[found], axis=0) if n_found else np.full(3, np.nan)
            rec[key] = {"share_in_box": inside / n_found if n_found else None, "share_in_box_ci95": [lo, hi],
                        "median_hsv": [float(v) if np.isfinite(v) else None for v in med]}
        k = int(np.sum(np.isfinite(any_pixel[name][:, 0])))
        lo, hi = binomial_ci(k, len(imgs), level)
        rec["any_pixel_share"], rec["any_pixel_share_ci95"] = k / len(imgs), [lo, hi]
        out[name] = rec
    return out


@dataclass(frozen=True)
class FeatureDistance:
    """W1 and KS of one feature's values against a reference set, with percentile-bootstrap CIs."""

    w1: float
    w1_ci95: tuple[float, float]
    ks: float
    ks_ci95: tuple[float, float]
    ks_pvalue: float
    n: int
    n_reference: int
    median: float
    median_reference: float

    def as_dict(self) -> dict:
        return {"w1": self.w1, "w1_ci95": list(self.w1_ci95), "ks": self.ks, "ks_ci95": list(self.ks_ci95),
                "ks_pvalue": self.ks_pvalue, "n": self.n, "n_reference": self.n_reference,
                "median": self.median, "median_reference": self.median_reference}


def _values(name: str, v) -> np.ndarray:
    v = np.asarray(v, np.float64).reshape(-1)
    if v.size < 2 or not np.all(np.isfinite(v)):
        raise ValueError(f"{name} must hold at least 2 finite values (valid images only), got {v.size} "
                         f"({int(np.sum(~np.isfinite(v)))} non-finite)")
    return v


def feature_distance(values, reference, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> FeatureDistance:
    """Wasserstein-1 and KS statistic of ``values`` against ``reference`` (both 1-D, finite), bootstrap CIs.

    Each of ``n_boot`` replicates resamples both sets with replacement (seeded by ``seed``); the CI is the
    basic bootstrap interval floored at 0 (see the comment below); ``n_boot`` = 0 gives no CI (NaN bounds).
    """
    a, b = _values("values", values), _values("reference", reference)
    n_boot = check_int("n_boot", n_boot, 0)
    seed = check_int("seed", seed, 0)
    level = _level(level)
    ks = ks_2samp(a, b)
    w1 = float(wasserstein_distance(a, b))
    ci_w1 = ci_ks = (float("nan"), float("nan"))
    if n_boot:
        rng = np.random.default_rng(seed)
        reps = np.empty((n_boot, 2))
        for r in range(n_boot):
            ra, rb = a[rng.integers(0, a.size, a.size)], b[rng.integers(0, b.size, b.size)]
            reps[r] = wasserstein_distance(ra, rb), ks_2samp(ra, rb, method="asymp").statistic
        # Basic (reverse-percentile) interval [2 t - q_hi, 2 t - q_lo], floored at 0: both statistics are
        # biased upward at finite n and a replicate's bias adds to it, so the percentile interval would
        # lie above the estimate itself (e.g. W1 0.089 with a percentile interval [0.092, 0.155]).
        q = np.percentile(reps, (100 * (1 - level) / 2, 100 * (1 + level) / 2), axis=0)
        t = np.array([w1, ks.statistic])
        lo, hi = np.maximum(2 * t - q[1], 0.0), np.maximum(2 * t - q[0], 0.0)
        ci_w1, ci_ks = (float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1]))
    return FeatureDistance(w1, ci_w1, float(ks.statistic), ci_ks, float(ks.pvalue), int(a.size), int(b.size),
                           float(np.median(a)), float(np.median(b)))


@dataclass(frozen=True)
class Support:
    """Which features define "inside the training support", and how far [min, max] is widened."""

    features: tuple[str, ...]
    widen: float = SUPPORT_WIDEN

    def __post_init__(self):
        if not self.features or not all(isinstance(f, str) for f in self.features):
            raise ValueError(f"features must be a non-empty tuple of feature names, got {self.features!r}")
        check_real("widen", self.widen, 0.0, 0.99)

    @property
    def name(self) -> str:
        what = "x" if self.features == ("x",) else "+".join(self.features)
        return f"{what} (widen {self.widen:g})"


def _feature(ev: Evaluation, key: str) -> np.ndarray:
    if key in ("x", "y"):
        return np.asarray(getattr(ev, key), np.float64)
    if key not in ev.features:
        raise ValueError(f"task {ev.task.value} has no feature {key!r}; it has x, y, {', '.join(ev.features)}")
    return np.asarray(ev.features[key], np.float64)


def support_bounds(train_ev: Evaluation, support: Support) -> dict[str, tuple[float, float]]:
    """{feature: (lo, hi)}: [min - widen |min|, max + widen |max|] over the training set's valid images."""
    if not isinstance(train_ev, Evaluation) or not isinstance(support, Support):
        raise ValueError("train_ev must be an Evaluation and support a Support")
    valid = np.asarray(train_ev.valid, bool)
    out = {}
    for key in support.features:
        v = _feature(train_ev, key)[valid]
        v = v[np.isfinite(v)]
        if v.size == 0:
            raise ValueError(f"the training set has no valid value of {key!r}")
        lo, hi = float(v.min()), float(v.max())
        out[key] = (lo - support.widen * abs(lo), hi + support.widen * abs(hi))
    return out


def inside_support(ev: Evaluation, bounds: dict[str, tuple[float, float]]) -> np.ndarray:
    """Per image: valid and every feature of ``bounds`` within its (lo, hi) (``support_bounds``)."""
    if not isinstance(ev, Evaluation):
        raise ValueError(f"ev must be an Evaluation, got {type(ev).__name__}")
    inside = np.asarray(ev.valid, bool).copy()
    with np.errstate(invalid="ignore"):
        for key, (lo, hi) in bounds.items():
            v = _feature(ev, key)
            inside &= (v >= lo) & (v <= hi)
    return inside


def support_share(ev: Evaluation, train_ev: Evaluation, widen: float = SUPPORT_WIDEN, level: float = 0.95) -> dict:
    """Share of ``ev``'s valid images outside the training support: per rule length (``RULE_FEATURES``), x, y,
    and "any rule length" (some rule length outside), each with a Clopper-Pearson CI."""
    if ev.task is not train_ev.task:
        raise ValueError(f"images are of task {ev.task.value}, the training set of {train_ev.task.value}")
    level = _level(level)
    valid = np.asarray(ev.valid, bool)
    n_valid = int(valid.sum())
    rule = tuple(RULE_FEATURES[ev.task])
    out = {"n_valid": n_valid, "widen": widen, "rule_lengths": list(rule), "outside": {}}
    for name, feats in [(f, (f,)) for f in rule + ("x", "y")] + [("any_rule_length", rule)]:
        support = Support(feats, widen)
        bounds = support_bounds(train_ev, support)
        k = n_valid - int(inside_support(ev, bounds).sum())
        lo, hi = binomial_ci(k, n_valid, level)
        out["outside"][name] = {"n_outside": k, "share": k / n_valid if n_valid else None, "share_ci95": [lo, hi],
                                "bounds": {f: list(b) for f, b in bounds.items()}}
    return out


def ratio_error_by_size(x, y, k: float, edges, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> list[dict]:
    """The fine rule's relative error y / (k x) - 1 in bins of x (``edges``, increasing, both ends included):
    per bin n, median |error| with a percentile-bootstrap CI, and the median signed error.
    Bins with fewer than ``MIN_BIN`` images have None statistics."""
    x, y = np.asarray(x, np.float64).reshape(-1), np.asarray(y, np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.size} and {y.size}")
    k = check_real("k", k, 1e-12)
    edges = np.asarray(edges, np.float64).reshape(-1)
    if edges.size < 2 or not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
        raise ValueError(f"edges must be >= 2 finite, strictly increasing values, got {edges.tolist()}")
    n_boot = check_int("n_boot", n_boot, 0)
    seed = check_int("seed", seed, 0)
    level = _level(level)
    rel = fine_ratio(x, y) / k - 1.0
    ok = np.isfinite(rel) & np.isfinite(x)
    out = []
    for b in range(edges.size - 1):
        lo, hi = edges[b], edges[b + 1]
        sel = ok & (x >= lo) & ((x < hi) if b < edges.size - 2 else (x <= hi))
        e = rel[sel]
        rec = {"x_lo": float(lo), "x_hi": float(hi), "n": int(e.size), "median_abs_error": None,
               "median_abs_error_ci95": None, "median_error": None, "median_x": None}
        if e.size >= MIN_BIN:
            rec.update(median_abs_error=float(np.median(np.abs(e))), median_error=float(np.median(e)),
                       median_x=float(np.median(x[sel])))
            if n_boot:
                ci = bootstrap((np.abs(e),), np.median, n_resamples=n_boot, method="percentile",
                               confidence_level=level, rng=np.random.default_rng([seed, b])).confidence_interval
                rec["median_abs_error_ci95"] = [float(ci.low), float(ci.high)]
        out.append(rec)
    return out


@dataclass(frozen=True)
class RunMarginals:
    """One run's three image sets measured (``SETS``) and every number of the module as ``summary``."""

    task: Task
    evaluations: dict[str, Evaluation]
    background: dict[str, np.ndarray]
    support: dict[str, np.ndarray]      # per set: valid and inside the support on every rule length
    summary: dict


def _percent_edges(x: np.ndarray, n_bins: int) -> np.ndarray:
    edges = np.unique(np.percentile(x, np.linspace(0, 100, n_bins + 1)))
    if edges.size < 2:
        raise ValueError("x has a single value; no size bins can be formed")
    return edges


def run_marginals(rev: RunEvaluation, *, n_fresh: int | None = None, widen: float = SUPPORT_WIDEN,
                  n_boot: int = 1000, seed: int = 0, n_bins: int = 6, fresh_seed: int = FRESH_SEED,
                  workers: int = 2) -> RunMarginals:
    """Marginal fidelity of a run's samples (module docstring), and the rule inside the training support.

    ``n_fresh`` fresh renders (default: as many as samples) at the training size are evaluated here.
    Fits (Fig. 4's trimmed fit, R^2, Error eq. (4), ``Evaluation.summary``) are given on all valid
    samples, on those inside the support on x (the fine rule's abscissa) and on every rule length,
    each at ``widen`` and at 0 (the bare [min, max]); the fresh renders' fit is the null.
    """
    if not isinstance(rev, RunEvaluation):
        raise ValueError(f"rev must be a RunEvaluation (empirics.runs.evaluate_run), got {type(rev).__name__}")
    widen = check_real("widen", widen, 0.0, 0.99)
    n_boot = check_int("n_boot", n_boot, 0)
    seed = check_int("seed", seed, 0)
    n_bins = check_int("n_bins", n_bins, 1, 50)
    task = rev.task
    images = {"samples": rev.samples.images, "training": rev.train.images}
    n_fresh = len(images["samples"]) if n_fresh is None else check_int("n_fresh", n_fresh, 2)
    size = images["training"].shape[1]
    images["fresh"] = fresh_renders(task, n_fresh, size, seed=fresh_seed).images
    evs = {"samples": rev.sample_eval, "training": rev.train_eval,
           "fresh": evaluate(images["fresh"], task, workers=workers)}
    k = TARGET_SLOPE[task]
    train = evs["training"]
    background = {s: background_level(images[s]) for s in SETS}
    rule = tuple(RULE_FEATURES[task])
    rule_bounds = support_bounds(train, Support(rule, widen))
    inside = {s: inside_support(evs[s], rule_bounds) for s in SETS}

    lengths = set(rule) | set(SPECS[task].positive)
    distances: dict[str, dict] = {s: {} for s in ("samples", "fresh")}
    for s in distances:
        for j, key in enumerate(SPECS[task].features):
            a = _feature(evs[s], key)[evs[s].valid]
            b = _feature(train, key)[train.valid]
            fd = feature_distance(a[np.isfinite(a)], b[np.isfinite(b)], n_boot, seed + j)
            rec = {**fd.as_dict(), "w1_px": fd.w1 * size, "w1_px_ci95": [v * size for v in fd.w1_ci95]}
            if key in lengths:  # sizes: how much larger at the median (positions have no meaningful ratio)
                rec["median_ratio"] = fd.median / fd.median_reference
            distances[s][key] = rec

    def fit(ev: Evaluation, mask=None) -> dict:
        sub = ev if mask is None else ev.take(np.flatnonzero(mask))
        if len(sub) < 3:
            return {"n_images": len(sub), "beta1": None, "r2": None, "error": None}
        s = sub.summary(n_boot=n_boot, seed=seed)
        keys = ("n_images", "n_valid", "n_fit", "beta1", "beta0", "slope_rel_error", "r2", "error", "error_bias",
                "error_variance", "conforming_fraction", "ci95")
        return {key: s[key] for key in keys}

    fits = {"samples_all": fit(evs["samples"]), "fresh_all": fit(evs["fresh"])}
    for w in sorted({widen, 0.0}):
        for label, feats in (("x", ("x",)), ("rule_lengths", rule)):
            sup = Support(feats, w)
            mask = inside_support(evs["samples"], support_bounds(train, sup))
            fits[f"samples_inside_{label}_widen{w:g}"] = {"support": sup.name, **fit(evs["samples"], mask)}

    xs = evs["samples"].x[evs["samples"].valid]
    edges = _percent_edges(xs, n_bins)
    by_size = {s: ratio_error_by_size(evs[s].x[evs[s].valid], evs[s].y[evs[s].valid], k, edges, n_boot, seed)
               for s in ("samples", "fresh")}

    summary = {
        "task": task.value, "k": k, "size": int(size), "n": {s: len(evs[s]) for s in SETS},
        "n_valid": {s: int(evs[s].valid.sum()) for s in SETS}, "fresh_seed": fresh_seed,
        "n_boot": n_boot, "seed": seed,
        "background": {s: background_summary(background[s]) for s in SETS},
        "colour_box": {s: colour_box_share(images[s], task) for s in SETS},
        "feature_distance": {f"{s}_vs_training": distances[s] for s in distances},
        "support": {s: support_share(evs[s], train, widen) for s in ("samples", "fresh")},
        "fit": fits,
        "ratio_error_by_size": {"edges": edges.tolist(), "binned_on": "quantiles of the valid samples' x",
                                **by_size},
    }
    return RunMarginals(task, evs, background, inside, summary)


# Issue 23's goals for a CPU model's marginals (beyond the paper, which reports no marginals).
GOAL_WHITE_SHARE = 0.90      # background >= WHITE_LEVEL in at least this share of samples
GOAL_OUTSIDE_SHARE = 0.05    # at most this share of valid samples with a rule length outside the training range
GOAL_COLOUR_RATIO = 0.90     # each element in its colour box in at least this share of the training set's share


def goal_measures(rev: RunEvaluation, training_colours: dict | None = None) -> dict:
    """The marginal measures of one sample set against its goals, in percent with Clopper-Pearson 95 % CIs:
    white backgrounds (``background_level`` >= ``WHITE_LEVEL``), valid samples with a rule length outside
    the training range widened by ``SUPPORT_WIDEN`` (``support_share``), and per element the share in
    App. C's colour box (``colour_box_share``, raw) beside the training set's share and their ratio.

    ``training_colours``: ``colour_box_share`` of the training images, when already computed (it depends
    on the training set only, so a caller measuring many sample sets of one run passes it once).
    """
    if not isinstance(rev, RunEvaluation):
        raise ValueError(f"rev must be a RunEvaluation (empirics.runs.evaluate_run), got {type(rev).__name__}")
    bg = background_summary(background_level(rev.samples.images))
    out = {"background_white_percent": 100 * bg["share_white"],
           "background_white_percent_ci95": [100 * v for v in bg["share_white_ci95"]],
           "background_median": bg["median"]}
    outside = support_share(rev.sample_eval, rev.train_eval)["outside"]["any_rule_length"]
    out["outside_rule_range_percent"] = None if outside["share"] is None else 100 * outside["share"]
    out["outside_rule_range_percent_ci95"] = [100 * v for v in outside["share_ci95"]]
    train = colour_box_share(rev.train.images, rev.task) if training_colours is None else training_colours
    ratios = []
    for element, rec in colour_box_share(rev.samples.images, rev.task).items():
        share, ref = rec["raw"]["share_in_box"], train[element]["raw"]["share_in_box"]
        out[f"colour_{element}_in_box_percent"] = None if share is None else 100 * share
        out[f"colour_{element}_in_box_percent_ci95"] = [100 * v for v in rec["raw"]["share_in_box_ci95"]]
        out[f"colour_{element}_training_percent"] = None if ref is None else 100 * ref
        ratio = None if share is None or not ref else share / ref
        out[f"colour_{element}_of_training"] = ratio
        ratios.append(ratio)
    out["goals"] = {
        "background_white": bg["share_white"] >= GOAL_WHITE_SHARE,
        "outside_rule_range": outside["share"] is not None and outside["share"] <= GOAL_OUTSIDE_SHARE,
        "colours": all(r is not None and r >= GOAL_COLOUR_RATIO for r in ratios)}
    return out
