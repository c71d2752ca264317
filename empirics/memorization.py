"""Memorization of rule-conforming samples (Fig. 5b, App. D.2, Fig. 11).

App. D.2 represents each Task A image by a 4-D vector of the fine-rule lengths (l1, l2, h1, h2)
and by a 13-D vector that adds the RGB colours of the sun, the pole and the shadow, and calls a
generated sample a replica when its Euclidean distance to the nearest training image is below a
threshold. We use the same two spaces for every task: the fine-rule lengths of
``empirics.tasks.RULE_FEATURES`` (divided by the image size, as every feature) and those plus the
RGB colour (in [0, 1]) of each element of ``empirics.tasks.ELEMENTS``:

    task  "structure" space                  "structure + colour" space
    A     l1, h1, h2, l2         (4-D)       + sun, pole, shadow RGB          (13-D, as App. D.2)
    B     l1, h1, l2, h2         (4-D)       + left, right rectangle RGB      (10-D)
    C     r_small, r_large       (2-D)       + small, large circle RGB        (8-D)
    D     side_top, side_bottom  (2-D)       + top, bottom square RGB         (8-D)

Lengths come from the rule evaluator and colours from each element's own pixels
(:func:`element_colours`), for samples and training images alike, so both sides are measured the
same way. The paper does not say how it measured colours; ours is the median RGB of the pixels
that fall inside the element's App. C colour box and carry at least half of the strongest ink of
that box in the image at 90 % or more (the anti-aliased rim, a mix with white, is left out).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial import cKDTree

from empirics._checks import check_int
from empirics.evaluate import Evaluation
from empirics.tasks import ELEMENTS, RULE_FEATURES, TARGET_SLOPE, HSVRange, Task

__all__ = ["element_colours", "feature_space", "nearest_neighbours", "replica_fraction", "Memorization",
           "memorization", "REPLICA_THRESHOLDS"]

# Thresholds of Fig. 5b's sweep (the paper's largest, 0.3, makes every conforming sample a replica).
REPLICA_THRESHOLDS = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)


def _in_box(hsv: np.ndarray, family: HSVRange, slack: float = 4.0) -> np.ndarray:
    """Inside the App. C box widened by ``slack`` OpenCV units (uint8 rounding of the drawn colour)."""
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    (h0, h1), (s0, s1), (v0, v1) = family.hue, family.sat, family.val
    return ((h >= h0 - slack / 2) & (h <= h1 + slack / 2) & (s >= s0 - slack) & (s <= s1 + slack)
            & (v >= v0 - slack) & (v <= v1 + slack))


def element_colours(images: np.ndarray, task) -> dict[str, np.ndarray]:
    """RGB colour in [0, 1] of each element of ``task`` per image, {element: (N, 3)}; NaN when absent."""
    task = Task.parse(task)
    imgs = np.asarray(images)
    if imgs.ndim != 4 or imgs.shape[3] != 3 or imgs.dtype != np.uint8:
        raise ValueError(f"images must be uint8 [N, S, S, 3] RGB, got {imgs.dtype} {imgs.shape}")
    n, S = imgs.shape[:2]
    hsv = cv2.cvtColor(imgs.reshape(n * S, S, 3), cv2.COLOR_RGB2HSV).reshape(n, S, S, 3).astype(np.float64)
    ink = (255.0 - imgs.astype(np.float64)).sum(-1)
    out = {}
    for name, family in ELEMENTS[task]:
        box = _in_box(hsv, family)
        strongest = np.where(box, ink, 0.0).reshape(n, -1).max(1)
        col = np.full((n, 3), np.nan)
        for i in np.flatnonzero(strongest > 0):
            sel = box[i] & (ink[i] >= 0.9 * strongest[i])
            col[i] = np.median(imgs[i][sel].astype(np.float64), axis=0) / 255.0
        out[name] = col
    return out


def feature_space(ev: Evaluation, images: np.ndarray, colours: bool) -> np.ndarray:
    """(N, D) vectors of App. D.2: fine-rule lengths, plus element RGB when ``colours``; NaN rows if invalid."""
    if not isinstance(ev, Evaluation):
        raise ValueError(f"ev must be an Evaluation, got {type(ev).__name__}")
    if len(images) != len(ev):
        raise ValueError(f"images ({len(images)}) and evaluation ({len(ev)}) differ in length")
    parts = [np.asarray(ev.features[k], np.float64)[:, None] for k in RULE_FEATURES[ev.task]]
    if colours:
        parts += list(element_colours(images, ev.task).values())
    X = np.concatenate(parts, axis=1)
    X[~np.asarray(ev.valid, bool)] = np.nan
    return X


def nearest_neighbours(query: np.ndarray, reference: np.ndarray, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distances (M, k) and indices (M, k) of each query row's k nearest reference rows.

    Reference rows with NaN (invalid images) are never returned.
    """
    query, reference = np.asarray(query, np.float64), np.asarray(reference, np.float64)
    if query.ndim != 2 or reference.ndim != 2 or query.shape[1] != reference.shape[1]:
        raise ValueError(f"query and reference must be 2-D with the same width, got {query.shape}, {reference.shape}")
    if not np.all(np.isfinite(query)):
        raise ValueError("query rows must be finite (pass valid images only)")
    ok = np.flatnonzero(np.all(np.isfinite(reference), axis=1))
    k = check_int("k", k, 1, max(1, ok.size))
    if ok.size == 0:
        raise ValueError("reference has no finite rows")
    dist, idx = cKDTree(reference[ok]).query(query, k=k)
    dist, idx = dist.reshape(len(query), k), idx.reshape(len(query), k)
    return dist, ok[idx]


def replica_fraction(nn_distance: np.ndarray, thresholds=REPLICA_THRESHOLDS) -> dict[float, float]:
    """Share of samples whose nearest-neighbour distance is below each threshold (Fig. 5b)."""
    d = np.asarray(nn_distance, np.float64).reshape(-1)
    return {float(t): (float(np.mean(d < t)) if d.size else float("nan")) for t in thresholds}


@dataclass(frozen=True)
class Memorization:
    """Nearest training neighbours of the rule-conforming samples, in both App. D.2 spaces."""

    task: Task
    conforming: np.ndarray          # indices of the conforming samples
    distance_structure: np.ndarray  # (M, k)
    index_structure: np.ndarray     # (M, k) training-set indices
    distance_colour: np.ndarray     # (M, k); NaN rows: the sample's colours could not be measured
    index_colour: np.ndarray        # (M, k); -1 on those rows
    rtol: float

    @property
    def has_colour(self) -> np.ndarray:
        """Conforming samples with a 13-D (lengths + colours) vector."""
        return self.index_colour[:, 0] >= 0

    def summary(self, thresholds=REPLICA_THRESHOLDS) -> dict:
        d4, d13 = self.distance_structure[:, 0], self.distance_colour[self.has_colour, 0]

        def stats(d):
            return ({"min": float(d.min()), "median": float(np.median(d)), "max": float(d.max())}
                    if d.size else None)

        return {"task": self.task.value, "rtol": self.rtol, "n_conforming": int(self.conforming.size),
                "n_conforming_with_colours": int(self.has_colour.sum()),
                "dims": {"structure": int(len(RULE_FEATURES[self.task])),
                         "structure_colour": int(len(RULE_FEATURES[self.task]) + 3 * len(ELEMENTS[self.task]))},
                "nn_distance_structure": stats(d4), "nn_distance_colour": stats(d13),
                "replica_fraction_structure": {str(t): v for t, v in replica_fraction(d4, thresholds).items()},
                "replica_fraction_colour": {str(t): v for t, v in replica_fraction(d13, thresholds).items()}}


def memorization(sample_ev: Evaluation, sample_images, train_ev: Evaluation, train_images, *, rtol: float = 0.01,
                 k: int = 3) -> Memorization:
    """Fig. 5b / App. D.2: the k nearest training images of each conforming sample (|y/x - k| <= rtol k)."""
    if sample_ev.task is not train_ev.task:
        raise ValueError(f"samples are of task {sample_ev.task.value}, training images of {train_ev.task.value}")
    task = sample_ev.task
    conf = np.flatnonzero(np.asarray(sample_ev.valid, bool)
                          & (np.abs(sample_ev.ratio - TARGET_SLOPE[task]) <= rtol * TARGET_SLOPE[task]))
    q4, q13 = (feature_space(sample_ev, sample_images, c)[conf] for c in (False, True))
    # A sample whose element colours fall outside App. C's boxes has no 13-D vector: it keeps its 4-D
    # neighbours, and its 13-D row is NaN (distance) / -1 (index); summaries count it apart.
    has_colour = np.all(np.isfinite(q13), axis=1)
    r4, r13 = (feature_space(train_ev, train_images, c) for c in (False, True))
    d13, i13 = np.full((conf.size, k), np.nan), np.full((conf.size, k), -1, int)
    if conf.size == 0:
        return Memorization(task, conf, np.zeros((0, k)), np.zeros((0, k), int), d13, i13, rtol)
    d4, i4 = nearest_neighbours(q4, r4, k)
    if has_colour.any():
        d13[has_colour], i13[has_colour] = nearest_neighbours(q13[has_colour], r13, k)
    return Memorization(task, conf, d4, i4, d13, i13, rtol)
