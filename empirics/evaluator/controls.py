"""Controls for every Section 3 metric: images that were never trained on, measured like the samples.

A metric says something about a model only where its samples differ from a control that could have
come out otherwise. Each metric of Table 1 (Invalid %, coarse violations), Fig. 4 (slope, R^2, Error
eq. (4)) and Fig. 5a (share conforming within +-1 %) is therefore measured, with the same code and on
as many images as there are samples, on three control sets (``ControlKind``):

* ``FRESH``: exact renders of the task's own generator (App. C) drawn with ``FRESH_SEED``, a seed no
  training set, contrastive set or test of this package draws from (training sets use ``data_seed``
  0 by default), so every fresh render is a new image;
* ``DEGRADED``: the same renders through ``empirics.tasks.degrade`` at its defaults (Gaussian blur
  sigma 0.5 px, then JPEG quality 75);
* ``MATCHED``: the matched null, defined in one sentence a reviewer can check: *fresh render i is
  redrawn with sample i's element colours on sample i's background colour, blurred with the one
  Gaussian sigma at which the null's median blur measure equals the samples', and given white
  Gaussian pixel noise of sample i's background noise std, so that these measured statistics
  (``measure_style``) of the null equal the samples' (colours, background and noise image by image,
  blur in the median), while its geometry obeys the rule exactly.*

The statistics (``ImageStyle``, all measured by ``measure_style`` on samples and null alike):

* background: per-channel median RGB of the pixels within ``BACKGROUND_BAND`` grey levels of the
  image's median colour (the paper, without the elements);
* element colour: per element, the per-channel median RGB of the pixels of its colour family that
  carry at least half of the family's strongest ink in the image (the element's body, not its
  anti-aliased rim). The family is found on the background-divided image by hue, saturation and a
  wide value range (``_STYLE_RULES``), not by App. C's box (``empirics.evaluator.memorization.element_colours``):
  about half of the samples' yellowish elements are darker than the box allows, and the null must
  match them too;
* blur: ``sqrt(G(L * g_1) / G(L))``, with ``L`` the luma minus its median, ``g_1`` a Gaussian of
  sigma 1 px and ``G`` the summed squared Sobel gradient: a re-blur ratio, near 1 for a blurry image
  and smaller for a sharp one (for an isolated edge of width sigma_0 it is
  ``(sigma_0^2 / (sigma_0^2 + 1))^(1/4)``), independent of the edge's contrast;
* noise: the standard deviation of the background pixels about the background colour, pooled over
  the channels (pixels farther than ``BACKGROUND_BAND`` grey levels from it, and their 8 neighbours,
  excluded: that exclusion is what makes it robust; a median absolute deviation would be stuck at
  whole grey levels, since the samples' noise is about one level).

How the null is fitted: the blur sigma is interpolated on ``SIGMA_GRID`` (the pairs' noise included;
one sigma for the set, because a pair's blur measures also differ by its two geometries; sigmas up
to ~0.3 px barely change the measure of a box-filtered render, so blur below ~0.4 px is not resolved
on a few hundred images), then each
element colour is corrected once by the difference between the sample's
measured colour and the null's (blur lightens the core of a small element); a statistic that cannot
be measured on a sample (e.g. an element it lacks) takes the median over the samples that have it.
The noise is seeded (``numpy.random.Generator``), so the null is reproducible bit for bit.

Beyond the paper (which reports no controls): ``compare`` decides, per metric and control, whether
the samples differ from it: ``Verdict.DIFFERS`` when the two 95 % CIs (exact binomial for
percentages, percentile bootstrap for the fit) are disjoint. A metric counts as evidence about the
model only where the samples differ from every control (``"evidence"`` in its JSON).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import cv2
import numpy as np

from empirics._checks import check_int, check_trim
from empirics.data.render import TaskBatch, degrade, generate, render
from empirics.data.tasks import BLUE_GREEN, DARK, ELEMENTS, YELLOWISH, HSVRange, Task
from empirics.evaluator.colour import strongest_colour
from empirics.evaluator.metrics import binomial_ci
from empirics.evaluator.pipeline import Evaluation, evaluate

__all__ = ["FRESH_SEED", "fresh_renders", "ControlKind", "Metric", "TABLE1_METRICS", "FIGURE4_METRICS",
           "FIGURE5A_METRICS", "ImageStyle", "measure_style", "MatchedNull", "matched_null", "control_sets",
           "ControlEvaluations", "evaluate_controls", "Estimate", "metric_estimates", "Verdict", "verdict",
           "compare", "style_check", "SIGMA_GRID"]

FRESH_SEED = 20_251_204   # never used for a training set: the null's images are new to every model


def fresh_renders(task, n: int, size: int = 32, seed: int = FRESH_SEED) -> TaskBatch:
    """``n`` exact renders of ``task`` (App. C) from ``seed``: the "fresh, never trained on" control."""
    task = Task.parse(task)
    n = check_int("n", n, 1, 10**6)
    return generate(task, n, size=size, seed=seed)


class ControlKind(str, enum.Enum):
    """The three control sets of every Section 3 metric (module docstring)."""

    FRESH = "fresh"
    DEGRADED = "degraded"
    MATCHED = "matched"


class Metric(str, enum.Enum):
    """Section 3's image metrics: Table 1, Fig. 4 (eq. (4)) and Fig. 5a."""

    INVALID_PERCENT = "invalid_percent"                       # Table 1, % of all images
    COARSE_VIOLATION_PERCENT = "coarse_violation_percent"     # Table 1, % of the valid images
    SLOPE = "slope"                                           # Fig. 4, b1 of the trimmed fit
    R2 = "r2"                                                 # Fig. 4
    ERROR = "error"                                           # Fig. 4 / Table 2, eq. (4)
    CONFORMING_FRACTION = "conforming_fraction"               # Fig. 5a, |y/x - k| <= 1 % k, share of valid


TABLE1_METRICS = (Metric.INVALID_PERCENT, Metric.COARSE_VIOLATION_PERCENT)
FIGURE4_METRICS = (Metric.SLOPE, Metric.R2, Metric.ERROR)
FIGURE5A_METRICS = (Metric.CONFORMING_FRACTION,)

# ----------------------------------------------------------------------------------------------
# Style statistics and the matched null

# Colour families found by hue and saturation only (OpenCV units), on the background-divided image.
# (hue centre, hue half-width, saturation range, value range); App. C's boxes widened, saturation
# split at 90 so that a pixel is never both blue-green and dark (a bluish shadow, a dark pole), and
# near-black pixels (value < 50: the samples' poles have a few in their core) left to no family.
_STYLE_RULES = {YELLOWISH.name: (15.0, 25.0, (90.0, 255.0), (50.0, 255.0)),
                BLUE_GREEN.name: (120.0, 40.0, (90.0, 255.0), (50.0, 255.0)),
                DARK.name: (0.0, 90.0, (0.0, 89.0), (0.0, 190.0))}
BACKGROUND_BAND = 24.0            # grey levels: farther from the background colour is ink, not paper
SIGMA_GRID = np.round(np.arange(0.0, 2.01, 0.1), 2)   # px: blur sigmas the matched null searches
_REBLUR_SIGMA = 1.0
_INK_SHARE = 0.5


@dataclass(frozen=True)
class ImageStyle:
    """Per-image style statistics of a set of N images (module docstring); NaN where not measurable.

    ``background``: (N, 3) median RGB, 0-255; ``colours``: {element: (N, 3) RGB, 0-255};
    ``blur``: (N,) re-blur ratio in (0, 1]; ``noise``: (N,) std of the background pixels, grey levels.
    """

    task: Task
    background: np.ndarray
    colours: dict[str, np.ndarray]
    blur: np.ndarray
    noise: np.ndarray

    def __len__(self) -> int:
        return len(self.background)

    def value(self) -> dict[str, np.ndarray]:
        """Per element, the HSV value (OpenCV 0-255) of its measured colour: (N,), NaN where absent."""
        out = {}
        for name, rgb in self.colours.items():
            ok = np.all(np.isfinite(rgb), axis=1)
            v = np.full(len(rgb), np.nan)
            v[ok] = rgb[ok].max(axis=1)     # HSV value = max(R, G, B)
            out[name] = v
        return out

    def summary(self) -> dict:
        """Medians over the images (JSON-ready): background grey level, element HSV values, blur, noise."""
        def med(a):
            a = np.asarray(a, np.float64)
            a = a[np.isfinite(a)]
            return float(np.median(a)) if a.size else None

        return {"n": len(self), "background_level": med(self.background.mean(axis=1)),
                "element_value": {k: med(v) for k, v in self.value().items()},
                "element_measured_fraction": {k: float(np.mean(np.isfinite(v))) for k, v in self.value().items()},
                "blur": med(self.blur), "noise": med(self.noise)}


def _check_images(images, name: str = "images") -> np.ndarray:
    imgs = np.asarray(images)
    if imgs.ndim != 4 or imgs.shape[3] != 3 or imgs.shape[1] != imgs.shape[2] or imgs.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 RGB [N, S, S, 3], got {imgs.dtype} {imgs.shape}")
    if len(imgs) == 0:
        raise ValueError(f"{name} must hold at least one image")
    if imgs.shape[1] < 16:
        raise ValueError(f"{name} must be at least 16 x 16 px (the evaluator's minimum), got {imgs.shape[1]}")
    return imgs


def _family_mask(hsv: np.ndarray, family: HSVRange) -> np.ndarray:
    centre, half, (s_lo, s_hi), (v_lo, v_hi) = _STYLE_RULES[family.name]
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    dh = np.abs((h - centre + 90.0) % 180.0 - 90.0)          # circular hue distance, OpenCV units
    return (dh <= half) & (s >= s_lo) & (s <= s_hi) & (v >= v_lo) & (v <= v_hi)


def _blur_measure(img: np.ndarray) -> float:
    luma = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float64)
    luma -= np.median(luma)

    def energy(a):
        gx = cv2.Sobel(a, cv2.CV_64F, 1, 0, ksize=3)
        gy = cv2.Sobel(a, cv2.CV_64F, 0, 1, ksize=3)
        return float(np.sum(gx * gx + gy * gy))

    e0 = energy(luma)
    if e0 <= 0:
        return float("nan")
    return float(np.sqrt(energy(cv2.GaussianBlur(luma, (0, 0), _REBLUR_SIGMA)) / e0))


def measure_style(images, task) -> ImageStyle:
    """Background colour, element colours, blur and noise of each image (module docstring)."""
    task = Task.parse(task)
    imgs = _check_images(images)
    n, S = imgs.shape[:2]
    f = imgs.astype(np.float64)
    # Background: the median of the pixels within BACKGROUND_BAND of the first median (the elements
    # themselves would pull a plain median off the paper by up to a grey level on Task D's large squares).
    flat = f.reshape(n, -1, 3)
    first = np.median(flat, axis=1)
    bg = np.empty((n, 3))
    for i in range(n):
        near = np.abs(flat[i] - first[i]).max(axis=1) <= BACKGROUND_BAND
        bg[i] = np.median(flat[i][near], axis=0) if near.any() else first[i]
    white = np.minimum(255.0 * f / np.maximum(bg, 1.0)[:, None, None, :], 255.0)
    hsv = cv2.cvtColor(white.astype(np.uint8).reshape(n * S, S, 3), cv2.COLOR_RGB2HSV).reshape(n, S, S, 3)
    hsv = hsv.astype(np.float64)
    ink = (255.0 - white).sum(-1)
    colours = {}
    for name, family in ELEMENTS[task]:
        colours[name] = strongest_colour(f, _family_mask(hsv, family) & (ink > BACKGROUND_BAND), ink, _INK_SHARE)
    resid = f - bg[:, None, None, :]
    far = (np.abs(resid).max(-1) > BACKGROUND_BAND).astype(np.uint8)
    noise = np.full(n, np.nan)
    blur = np.empty(n)
    kernel = np.ones((3, 3), np.uint8)
    for i in range(n):
        paper = cv2.dilate(far[i], kernel) == 0
        r = resid[i][paper]
        if r.size > 1:
            noise[i] = float(np.sqrt(np.mean(r * r)))
        blur[i] = _blur_measure(imgs[i])
    return ImageStyle(task, bg, colours, blur, noise)


def _filled(a: np.ndarray) -> np.ndarray:
    """Rows with a NaN take the median of the rows without one (a statistic a sample lacks)."""
    a = np.array(a, np.float64)
    bad = ~np.all(np.isfinite(a.reshape(len(a), -1)), axis=1)
    if bad.all():
        raise ValueError("no image of the samples has this statistic measurable; cannot match it")
    if bad.any():
        a[bad] = np.median(a[~bad], axis=0)
    return a


@dataclass(frozen=True)
class MatchedNull:
    """The matched null of a sample set (module docstring): images and what was fitted to make them.

    ``target``: the samples' measured style; ``sigma``: (N,) blur sigma (px, one value for the set); ``drawn``:
    {element: (N, 3)} the RGB colours the fresh renders were drawn with; ``style``: the null's own
    measured style (compare it with ``target`` via ``style_check``).
    """

    task: Task
    images: np.ndarray
    target: ImageStyle
    sigma: np.ndarray
    drawn: dict[str, np.ndarray]
    style: ImageStyle


def _compose(task: Task, params: dict, colours: dict[str, np.ndarray], background: np.ndarray, size: int):
    """Fresh geometry drawn with ``colours`` on ``background`` (N, 3), as float images (N, S, S, 3)."""
    p = dict(params)
    for name, _ in ELEMENTS[task]:
        for j, c in enumerate(("red", "green", "blue")):
            p[f"{name}_{c}"] = colours[name][:, j]
    on_white = render(task, p, size).astype(np.float64)
    for name, _ in ELEMENTS[task]:
        for c in ("red", "green", "blue"):
            p[f"{name}_{c}"] = np.zeros(len(background))
    paper = render(task, p, size).astype(np.float64) / 255.0     # 1 - coverage of all elements
    # on_white = 255 (1 - A) + sum cov_e rgb_e; the same on a background b: b (1 - A) + sum cov_e rgb_e.
    return on_white - (255.0 - background[:, None, None, :]) * paper


def _finish(composed: np.ndarray, sigma: np.ndarray, noise: np.ndarray) -> np.ndarray:
    out = np.empty(composed.shape, np.uint8)
    for i, img in enumerate(composed):
        if sigma[i] > 0:
            img = cv2.GaussianBlur(img, (0, 0), float(sigma[i]))
        out[i] = np.clip(np.rint(img + noise[i]), 0, 255).astype(np.uint8)
    return out


def matched_null(task, sample_images, seed: int = FRESH_SEED) -> MatchedNull:
    """The matched null (``ControlKind.MATCHED``) of ``sample_images``: fresh render i (``fresh_renders``
    with ``seed``) given sample i's background, element colours, blur and noise (module docstring)."""
    task = Task.parse(task)
    imgs = _check_images(sample_images, "sample_images")
    seed = check_int("seed", seed, 0)
    n, S = imgs.shape[:2]
    target = measure_style(imgs, task)
    bg = _filled(target.background)
    colours = {k: _filled(v) for k, v in target.colours.items()}
    # The samples' measured noise already holds uint8 rounding (variance 1/12); the null is rounded too.
    noise_std = np.sqrt(np.maximum(_filled(target.noise) ** 2 - 1.0 / 12.0, 0.0))
    fresh = fresh_renders(task, n, S, seed)
    noise = np.random.default_rng([seed, ord(task.value), 1]).standard_normal(imgs.shape) * noise_std[:, None, None,
                                                                                                     None]
    composed = _compose(task, fresh.params, colours, bg, S)
    # Blur: the one sigma at which the null's median blur measure equals the samples' (linear between grid
    # points; the measure rises with sigma). One sigma for the set, not one per pair: a pair's measures
    # also differ by its two geometries, which a per-pair fit would turn into blur.
    want = target.blur[np.isfinite(target.blur)]
    sigma = 0.0
    if want.size:
        medians = np.array([np.nanmedian([_blur_measure(im) for im in _finish(composed, np.full(n, s), noise)])
                            for s in SIGMA_GRID])
        sigma = float(np.interp(np.median(want), medians, SIGMA_GRID)) if np.all(np.diff(medians) > 0) else \
            float(SIGMA_GRID[np.argmin(np.abs(medians - np.median(want)))])
    sigma = np.full(n, sigma)
    # Colours: one correction by the measured difference (blur lightens a small element's core).
    first = measure_style(_finish(composed, sigma, noise), task)
    drawn = {}
    for k, c in colours.items():
        got = first.colours[k]
        ok = np.all(np.isfinite(got), axis=1)
        d = c.copy()
        d[ok] = np.clip(c[ok] + (c[ok] - got[ok]), 0.0, 255.0)
        drawn[k] = d
    images = _finish(_compose(task, fresh.params, drawn, bg, S), sigma, noise)
    return MatchedNull(task, images, target, sigma, drawn, measure_style(images, task))


def control_sets(task, sample_images, seed: int = FRESH_SEED) -> dict[ControlKind, np.ndarray]:
    """The three control image sets of ``sample_images`` (as many images, same size), by ``ControlKind``."""
    task = Task.parse(task)
    imgs = _check_images(sample_images, "sample_images")
    seed = check_int("seed", seed, 0)
    fresh = fresh_renders(task, len(imgs), imgs.shape[1], seed).images
    return {ControlKind.FRESH: fresh, ControlKind.DEGRADED: degrade(fresh),
            ControlKind.MATCHED: matched_null(task, imgs, seed).images}


def style_check(sample_images, null_images, task) -> dict:
    """The samples' and a control's style medians side by side (does the null reproduce what it matches?)."""
    task = Task.parse(task)
    return {"samples": measure_style(sample_images, task).summary(),
            "control": measure_style(null_images, task).summary()}


@dataclass(frozen=True)
class ControlEvaluations:
    """The control sets of one sample set, evaluated by the rule evaluator (Fig. 2 pipeline).

    ``images`` and ``evaluations`` are keyed by ``ControlKind``; ``style`` holds the measured style
    medians of the samples and of each control (``ImageStyle.summary``), to check the matched null.
    """

    task: Task
    seed: int
    images: dict[ControlKind, np.ndarray]
    evaluations: dict[ControlKind, Evaluation]
    style: dict

    def __len__(self) -> int:
        return len(self.evaluations[ControlKind.FRESH])


def evaluate_controls(task, sample_images, seed: int = FRESH_SEED, workers: int = 2) -> ControlEvaluations:
    """Make the control sets of ``sample_images`` (``control_sets``) and evaluate each like the samples."""
    task = Task.parse(task)
    imgs = _check_images(sample_images, "sample_images")
    workers = check_int("workers", workers, 1, 64)
    sets = control_sets(task, imgs, seed)
    evs = {kind: evaluate(im, task, workers=workers) for kind, im in sets.items()}
    style = {"samples": measure_style(imgs, task).summary()}
    style.update({kind.value: measure_style(im, task).summary() for kind, im in sets.items()})
    return ControlEvaluations(task, int(seed), sets, evs, style)


# ----------------------------------------------------------------------------------------------
# Metrics with CIs, and whether the samples differ from the controls


@dataclass(frozen=True)
class Estimate:
    """A metric's value and 95 % CI (None where it cannot be computed, e.g. too few valid images)."""

    value: float | None
    lo: float | None
    hi: float | None

    def to_json(self) -> dict:
        return {"value": self.value, "ci95": [self.lo, self.hi]}


def metric_estimates(ev: Evaluation, metrics=tuple(Metric), *, trim=(2.5, 97.5), n_boot: int = 1000,
                     seed: int = 0) -> dict[Metric, Estimate]:
    """Each of ``metrics`` on an evaluated set, with its 95 % CI: Invalid % and coarse violations (% of
    valid) with exact binomial CIs (Table 1); slope, R^2, Error eq. (4) and the share conforming within
    1 % with percentile-bootstrap CIs (``Evaluation.summary``, Fig. 4 / 5a)."""
    if not isinstance(ev, Evaluation):
        raise ValueError(f"ev must be an Evaluation, got {type(ev).__name__}")
    metrics = _metrics(metrics)
    trim = check_trim(trim)
    n_boot = check_int("n_boot", n_boot, 1)
    seed = check_int("seed", seed, 0)
    n, n_valid = len(ev), int(ev.valid.sum())
    out = {}
    if Metric.INVALID_PERCENT in metrics:
        lo, hi = binomial_ci(n - n_valid, n)
        out[Metric.INVALID_PERCENT] = Estimate(100 * (n - n_valid) / n, 100 * lo, 100 * hi)
    if Metric.COARSE_VIOLATION_PERCENT in metrics:
        v = int(np.sum(~ev.coarse_ok[ev.valid]))
        lo, hi = binomial_ci(v, n_valid)
        out[Metric.COARSE_VIOLATION_PERCENT] = Estimate(100 * v / n_valid if n_valid else None,
                                                        100 * lo if n_valid else None, 100 * hi if n_valid else None)
    fit = [m for m in metrics if m in (Metric.SLOPE, Metric.R2, Metric.ERROR, Metric.CONFORMING_FRACTION)]
    if fit:
        s = ev.summary(trim=trim, n_boot=n_boot, seed=seed)
        ci = s["ci95"] or {}
        for m in fit:
            key = "beta1" if m is Metric.SLOPE else m.value
            lo, hi = ci.get(key, (None, None))
            out[m] = Estimate(s[key], lo, hi)
    return {m: out[m] for m in metrics}


def _metrics(metrics) -> tuple[Metric, ...]:
    try:
        ms = tuple(Metric(m) if not isinstance(m, Metric) else m for m in metrics)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metrics must be Metric members or their values "
                         f"({', '.join(m.value for m in Metric)}), got {metrics!r}") from exc
    if not ms:
        raise ValueError("metrics must name at least one Metric")
    return ms


class Verdict(str, enum.Enum):
    """Do the samples differ from a control on a metric? (Their 95 % CIs are disjoint, or not.)"""

    DIFFERS = "differs"
    OVERLAPS = "overlaps"
    UNDEFINED = "undefined"      # one side has no value or no CI


def verdict(sample: Estimate, control: Estimate) -> Verdict:
    """``DIFFERS`` when the 95 % CIs of the samples and of the control are disjoint."""
    if not (isinstance(sample, Estimate) and isinstance(control, Estimate)):
        raise ValueError("sample and control must be Estimates")
    ends = (sample.lo, sample.hi, control.lo, control.hi)
    if any(e is None or not np.isfinite(e) for e in ends):
        return Verdict.UNDEFINED
    return Verdict.DIFFERS if sample.hi < control.lo or control.hi < sample.lo else Verdict.OVERLAPS


def compare(sample_ev: Evaluation, controls: ControlEvaluations, metrics=tuple(Metric), *, trim=(2.5, 97.5),
            n_boot: int = 1000, seed: int = 0) -> dict:
    """Each metric on the samples beside the same metric on every control, with the verdicts (JSON-ready).

    Returns {"n_samples", "n_per_control", "control_seed", "metrics": {metric: {"samples": est,
    "controls": {kind: est}, "verdicts": {kind: verdict}, "differs_from_controls": [kinds],
    "evidence": bool}}, "style": ...}. ``evidence`` is True only when the samples differ from every
    control: only then does the metric say something about the model rather than about image style.
    """
    if not isinstance(sample_ev, Evaluation):
        raise ValueError(f"sample_ev must be an Evaluation, got {type(sample_ev).__name__}")
    if not isinstance(controls, ControlEvaluations):
        raise ValueError(f"controls must be a ControlEvaluations (evaluate_controls), got {type(controls).__name__}")
    if controls.task is not sample_ev.task:
        raise ValueError(f"controls are of task {controls.task.value}, the samples of task {sample_ev.task.value}")
    metrics = _metrics(metrics)
    kw = {"trim": trim, "n_boot": n_boot, "seed": seed}
    ours = metric_estimates(sample_ev, metrics, **kw)
    theirs = {kind: metric_estimates(ev, metrics, **kw) for kind, ev in controls.evaluations.items()}
    rows = {}
    for m in metrics:
        verdicts = {kind: verdict(ours[m], theirs[kind][m]) for kind in theirs}
        differs = [kind.value for kind, v in verdicts.items() if v is Verdict.DIFFERS]
        rows[m.value] = {"samples": ours[m].to_json(),
                         "controls": {kind.value: theirs[kind][m].to_json() for kind in theirs},
                         "verdicts": {kind.value: v.value for kind, v in verdicts.items()},
                         "differs_from_controls": differs, "evidence": len(differs) == len(theirs)}
    return {"n_samples": len(sample_ev), "n_per_control": len(controls), "control_seed": controls.seed,
            "metrics": rows, "style": controls.style}
