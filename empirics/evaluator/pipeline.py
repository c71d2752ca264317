"""Rule evaluator: the feature-extraction pipeline of Fig. 2 (Section 3.2), made sub-pixel and robust.

``evaluate(images, task) -> Evaluation`` measures every image at its own resolution:

1. Colour-family masks (Fig. 2 step 1). Each pixel gets a soft membership in each of the task's
   App. C HSV families (OpenCV units): a product of logistic ramps on hue (circular), saturation and
   value, with the boxes widened by tolerances (``FAMILY_TOLERANCE``) to absorb the small colour
   shifts of generated samples. Pixels whose best membership is >= 0.5 are labelled.
2. Element count (step 2): 8-connected components per family, specks below ``2 (S/32)^2`` pixels
   ignored (as a last resort, after the retries below, a missing element takes a speck that touches
   another element of its group: a shadow showing one pixel beside its pole's foot); a component
   that is only the anti-aliased rim of another element (its colour is that element's colour mixed
   with white and it touches it, e.g. the edge of a dark pole read as "shadow") is merged into it.
   Any other count than one per element makes the image Invalid with a reason ("missing sun",
   "2 poles", ...); so do a blank image, non-finite pixels, an unexpected coloured object, an
   element cut by the border whose extent is needed, or impossible geometry.
3. Keypoints and features (step 3), sub-pixel. Each element's ink (white - colour) has the
   direction of the ink summed over its neighbourhood (blur and JPEG chroma subsampling move chroma
   to neighbouring pixels but keep such sums) and the level of its interior (fully covered) pixels.
   Its coverage (0..1 per pixel, soft) is, where the pixels are exact mixes of the element colours
   and white (rendered or only blurred images), the least-squares unmixing of the pixel's ink into
   the colours of its group (touching elements jointly); otherwise (JPEG, colour noise) the pixel's
   luma ink over the element's luma level (JPEG keeps luma at full resolution), shared between
   touching elements by their colours (or by the nearest colour mask when the two inks are nearly
   parallel). Coverage is linear in the pixel values, so areas, centroids and row/column sums are
   unchanged by blur, and scale errors cancel in ratios. Rectangles: the extent across the long
   axis is the plateau of the coverage profile along it, the other extent is area / that (a Task B
   bar thinner than ``THIN_BAR``: from the shape of its blurred profile, ``empirics.evaluator.box_profile``; an
   unblurred one over two partial rows, whose thickness is not in its pixels, is Invalid); circles:
   centre = centroid, radius = sqrt(area / pi) (Task C, blurred edges: with the level refined by a
   fit of amp * Phi((r - rho) / s)); a circle cut by the image border (a far sun) is fitted from its
   visible part (Levenberg-Marquardt on centre, radius and edge width), so it is measured
   correctly. Features are divided by the image size (Section 3.2).

Generated samples are blurrier than the training images: images that fail for a reason a washed-out
colour can cause (a missing element, an extra component, an unrecognised colour) are measured again
with wider tolerances on colours whose direction is summed over a 3 x 3 window
(``RELAXED_TOLERANCE``), and, for Task A, by shape (``task_a_by_shape``: the pole is what rises
above the shadow band; each part's colour, from ink sums over the part, must still be in its family).
Geometric verdicts (an element cut by the border, a sun below the pole top) are not retried.

Differences from the paper: Fig. 2 thresholds hard HSV masks and reads keypoints from contours at
integer pixels; App. D.2 upsamples 32 px images to 128 px for that reason. We measure at native
resolution with the sub-pixel estimators above instead, which is more accurate (median feature error
< 0.01 px on rendered images, benchmarks/evaluator.py) and does not depend on an interpolation.

Features are geometric statements, measured from each object's own pixels, so that they mean the
same whichever program drew the image (lengths divided by the image size):

* A: l1 = horizontal distance from the sun's centre to the pole's axis; h1 = height of the sun's
  centre above the pole's top; h2 = height of the pole above the point where it meets the ground
  (its foot, read on the pole's half on the sun's side, which no shadow strip covers, whether the
  strip lies beside the pole on the ground, under the ground line or across it, over or under the
  pole); l2 = horizontal distance from the pole's axis to the shadow's far end.
* B: l = distance of a rectangle's left edge from the image's left edge, h = its height; left and
  right are the rectangles with the smaller and the larger centre x.
* C: r_small / r_large = radius of the yellowish / blue-green circle (colour, not size, names them);
  a circle cut by the border is fitted to its visible arc.
* D: side_top / side_bottom = side of the square with the smaller / larger centre y; a square that
  reaches the border is measured by its extent along the border (uncut), and only one cut at a
  corner, whose size is lost, is Invalid.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields

import numpy as np

from empirics._checks import check_int
from empirics.data.images import as_float_rgb
from empirics.data.tasks import SPECS, Task, fine_xy
from empirics.evaluator.colour import FAMILY_TOLERANCE, LUMA, RELAXED_TOLERANCE, RESTORE_WINDOW, whiten_background
from empirics.evaluator.coverage import assign, cover
from empirics.evaluator.features import task_features
from empirics.evaluator.geometry import measure_element
from empirics.evaluator.masks import Chunk, label_elements
from empirics.evaluator.metrics import coarse_rule, feature_errors, fine_ratio, summarize
from empirics.evaluator.reasons import LAST_RESORT, Problem, Reason
from empirics.evaluator.shape_checks import ShapeStats, shape_reasons, shape_table
from empirics.evaluator.task_a_shape import task_a_by_shape


@dataclass
class Evaluation:
    """Per-image measurements of a batch (``evaluate``); features are divided by the image size."""

    task: Task
    size: np.ndarray
    valid: np.ndarray
    reason: np.ndarray
    features: dict[str, np.ndarray]
    x: np.ndarray
    y: np.ndarray
    coarse_ok: np.ndarray

    def __len__(self) -> int:
        return len(self.valid)

    @property
    def ratio(self) -> np.ndarray:
        """Fine ratio y / x (NaN where invalid)."""
        return np.where(self.valid, fine_ratio(self.x, self.y), np.nan)

    def summary(self, trim=(2.5, 97.5), n_boot: int = 1000, seed: int = 0,
                conform_rtol: float = 0.01) -> dict:
        """Coarse violations, trimmed fit, R^2, Error (eq. (4)), conforming fraction, bootstrap CIs."""
        return summarize(self.task, self.x, self.y, self.valid, self.coarse_ok, self.reason, trim=trim,
                         n_boot=n_boot, seed=seed, conform_rtol=conform_rtol)

    def ground_truth_errors(self, truth: dict[str, np.ndarray]) -> dict:
        """Pixel errors of the rule's features (``TaskSpec.rule_features``) against a generator's
        ground truth (``TaskBatch.params``), over the valid images (``metrics.feature_errors``)."""
        return feature_errors(self.features, truth, SPECS[self.task].rule_features, self.size, self.valid)

    def rows(self) -> list[dict]:
        """One dict per image: valid, reason, features (normalised), ratio, coarse_ok."""
        ratio = self.ratio
        out = []
        for i in range(len(self)):
            feats = {k: (float(v[i]) if np.isfinite(v[i]) else None) for k, v in self.features.items()}
            out.append({"valid": bool(self.valid[i]), "reason": str(self.reason[i]), "features": feats,
                        "x": float(self.x[i]) if self.valid[i] else None,
                        "y": float(self.y[i]) if self.valid[i] else None,
                        "ratio": float(ratio[i]) if self.valid[i] and np.isfinite(ratio[i]) else None,
                        "coarse_ok": bool(self.coarse_ok[i]) if self.valid[i] else None,
                        "size": int(self.size[i])})
        return out

    @staticmethod
    def concatenate(parts: list[Evaluation]) -> Evaluation:
        if not parts:
            raise ValueError("parts must contain at least one Evaluation")
        task = parts[0].task
        if any(p.task is not task for p in parts):
            raise ValueError("all parts must be of the same task")
        cat = np.concatenate
        return Evaluation(task, cat([p.size for p in parts]), cat([p.valid for p in parts]),
                          cat([p.reason for p in parts]),
                          {k: cat([p.features[k] for p in parts]) for k in parts[0].features},
                          cat([p.x for p in parts]), cat([p.y for p in parts]),
                          cat([p.coarse_ok for p in parts]))

    def take(self, index) -> Evaluation:
        return Evaluation(self.task, self.size[index], self.valid[index], self.reason[index],
                          {k: v[index] for k, v in self.features.items()}, self.x[index], self.y[index],
                          self.coarse_ok[index])


def measure_chunk(chunk: Chunk) -> dict[str, np.ndarray]:
    """Step 3c: each element's geometry, then the task's features; geometric verdicts for images
    that have no other reason."""
    spec = chunk.spec
    elems = [measure_element(chunk.coverage[f], e.shape, chunk.regions[chunk.groups.index(e.group)], chunk.radius,
                      spec.task is Task.C)
             for f, e in enumerate(spec.elements)]
    exact = [chunk.exact[chunk.groups.index(e.group)] for e in spec.elements]
    chunk.elements = elems
    feats, geo_bad = task_features(spec, elems, chunk.S, chunk.ink @ LUMA, exact)
    # The shape check judges images that pass every other check, so that a geometric verdict a
    # washed-out colour can cause still sends an image to the relaxed second pass.
    todo = np.array([not rs and not g for rs, g in zip(chunk.reasons, geo_bad)], bool)
    shape_bad = shape_reasons(spec, elems, feats, todo)
    for i in range(chunk.n):
        if not chunk.reasons[i]:
            chunk.reasons[i].extend(geo_bad[i] or shape_bad[i])
    return feats


def evaluate_chunk(rgb: np.ndarray, task: Task, tol: dict, restore: int = 0,
                    adopt: bool = False) -> tuple[dict, list[list[Reason]]]:
    """Features (normalised) and Invalid reasons of a chunk of images: label, cover, assign, measure."""
    chunk = Chunk(rgb, SPECS[task], [[] for _ in range(rgb.shape[0])])
    label_elements(chunk, tol, restore, adopt)
    cover(chunk)
    assign(chunk)
    return measure_chunk(chunk), chunk.reasons


def worth_retrying(reasons: list[Reason]) -> bool:
    """True for an Invalid image whose every reason a washed-out colour can cause (``Problem``)."""
    return bool(reasons) and all(r.retryable for r in reasons)


def retry(part, task, again, feats, reasons, tol: dict, restore: int, adopt: bool = False) -> None:
    """Measure the images ``again`` once more with colour tolerance ``tol``, chroma restored over
    ``restore`` px and, with ``adopt``, specks and pale blobs adopted (``label_elements``); keep the successes.
    With ``adopt``, an image that now has all its elements but fails a geometric verdict (an element
    too thin to measure, cut by the border) takes that verdict: it says more than "missing". So does,
    in every pass, an image whose only fault is now the shape of its elements (``Problem.WRONG_SHAPE``)."""
    feats2, reasons2 = evaluate_chunk(part[again], task, tol, restore, adopt)
    for j, i in enumerate(np.flatnonzero(again)):
        if not reasons2[j]:
            reasons[i] = []
            for k, v in feats.items():
                v[i] = feats2[k][j]
        elif adopt and not any(r.retryable for r in reasons2[j]):
            reasons[i] = reasons2[j]
        elif all(r.problem is Problem.WRONG_SHAPE for r in reasons2[j]):
            reasons[i] = reasons2[j]


def task_a_shape_pass(part, again, feats, reasons) -> None:
    """Task A: measure the retried images that are still Invalid by shape (``task_a_by_shape``), except
    those whose elements were all found and only their shapes are wrong (``Problem.WRONG_SHAPE``)."""
    still = [bool(rs) and not all(r.problem is Problem.WRONG_SHAPE for r in rs) for rs in reasons]
    for i in np.flatnonzero(again & np.array(still, bool)):
        shape_feats, _ = task_a_by_shape(part[i])
        if shape_feats is not None:
            reasons[i] = []
            for k, v in feats.items():
                v[i] = shape_feats[k] / part.shape[1]


def evaluate(images, task, *, value_range=None, workers: int = 1,
             chunk_size: int | None = None) -> Evaluation:
    """Measure every image of ``task`` (Fig. 2 pipeline, module docstring): features, rules, validity.

    ``images``: uint8 RGB [N, S, S, 3] of any square size >= 16, float in [0, 1] or [-1, 1] (see
    ``as_float_rgb``), NCHW accepted. Malformed arrays raise ValueError; a bad *image* (NaN, blank,
    wrong elements) is Invalid with a reason. ``workers`` threads process chunks in parallel.
    """
    task = Task.parse(task)
    workers = check_int("workers", workers, 1, 64)
    rgb, nonfinite = as_float_rgb(images, value_range)
    rgb = whiten_background(rgb)
    n, S = rgb.shape[:2]
    chunk = check_int("chunk_size", chunk_size, 1) if chunk_size is not None else max(32, 2**20 // (S * S))
    starts = list(range(0, n, chunk))

    def work(start):
        part = rgb[start:start + chunk]
        feats, reasons = evaluate_chunk(part, task, FAMILY_TOLERANCE)
        again = np.array([worth_retrying(rs) for rs in reasons], bool)
        if again.any():
            retry(part, task, again, feats, reasons, RELAXED_TOLERANCE, RESTORE_WINDOW)
        if task is Task.A:
            task_a_shape_pass(part, again, feats, reasons)
        # Last: an element found only as a speck touching its group (a shadow showing one pixel beside
        # its pole's foot). Not earlier: a speck of the pole's rim must not stand in for a faint strip
        # that the passes above find.
        missing = np.array([any(r.problem is Problem.MISSING for r in rs)
                            and all(r.problem in LAST_RESORT for r in rs) for rs in reasons], bool)
        if missing.any():
            retry(part, task, missing, feats, reasons, FAMILY_TOLERANCE, 0, adopt=True)
        return feats, reasons

    if workers > 1 and len(starts) > 1:
        with ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(work, starts))
    else:
        parts = [work(s0) for s0 in starts]
    features = {k: np.concatenate([p[0][k] for p in parts]) for k in SPECS[task].features}
    reasons = [r for p in parts for r in p[1]]
    for i in np.flatnonzero(nonfinite):
        reasons[i] = [Reason(Problem.NON_FINITE)]
    valid = np.array([not r for r in reasons], bool)
    reason = np.array(["; ".join(r.message for r in rs) for rs in reasons], dtype=object)
    x, y = fine_xy(task, features)
    x = np.where(valid, x, np.nan)
    y = np.where(valid, y, np.nan)
    coarse = coarse_rule(task, features) & valid
    return Evaluation(task, np.full(n, S), valid, reason, features, x, y, coarse)


def shape_statistics(images, task, *, value_range=None) -> tuple[dict[str, ShapeStats], np.ndarray]:
    """The shape check's statistics (``ShapeStats`` per judged element, ``EXPECTED_FORM``) of every image,
    read in the evaluator's first pass (App. C colour families with ``FAMILY_TOLERANCE``), and bool[N]:
    whether that pass finds the image valid apart from its shapes (the statistics mean something there).

    This is how the thresholds of the section "Shape check" were measured (``benchmarks/shape_check.py``).
    Images that only the relaxed passes of ``evaluate`` rescue are not in the second array.
    """
    task = Task.parse(task)
    rgb, nonfinite = as_float_rgb(images, value_range)
    rgb = whiten_background(rgb)
    n, S = rgb.shape[:2]
    spec = SPECS[task]
    chunk_size = max(32, 2**20 // (S * S))
    tables, ok = [], np.zeros(n, bool)
    for start in range(0, n, chunk_size):
        part = rgb[start:start + chunk_size]
        chunk = Chunk(part, spec, [[] for _ in range(part.shape[0])])
        label_elements(chunk, FAMILY_TOLERANCE)
        cover(chunk)
        assign(chunk)
        feats = measure_chunk(chunk)
        tables.append(shape_table(spec, chunk.elements, feats, np.arange(chunk.n)))
        ok[start:start + chunk.n] = [not any(r.problem is not Problem.WRONG_SHAPE for r in rs) for rs in chunk.reasons]
    ok &= ~nonfinite
    table = {k: ShapeStats(*(np.concatenate([getattr(t[k], f.name) for t in tables]) for f in fields(ShapeStats)))
             for k in tables[0]}
    return table, ok
