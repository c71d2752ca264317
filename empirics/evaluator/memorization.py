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

Beyond the paper: a replica share means something only beside a set that cannot be a copy. Fig. 5b's
curves (:func:`replica_curves`) therefore give, with one function for every set, the share of
conforming samples, of all valid samples, of fresh draws (``empirics.evaluator.controls.fresh_renders``, never
trained on) and of the training set itself (leave-one-out: each training image's nearest *other*
training image) whose nearest training image is closer than each threshold, in three spaces: the
lengths, lengths + colours, and pixels. In pixel space the distance is Euclidean between PCA-whitened
images (:class:`PixelWhitening`, fitted on the training set): each image, as a vector of 3 S^2 values in
[0, 1], is centred on the training mean and rotated onto the training set's principal axes, and each
axis is divided by sqrt(lambda + ridge * mean(lambda)). Pixels of one object move together, so raw L2
counts a shift of a large element many times over; whitening counts each independent direction of the
training set's variation once, in units of its own spread. The ridge (0.1 of the mean eigenvalue) stops
directions the training set never varies in (the white background) from being amplified without bound:
a grey tint, which the samples have and the training images never do, would otherwise swamp every
other difference. Raw L2 on [0, 1] pixels is kept beside it. The pixel threshold grid is read off the
data (quantiles of the fresh draws' distances), since pixel distances have their own scale.
:func:`novelty_test` says whether the samples are closer to the training set than fresh draws are.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import cv2
import numpy as np
from scipy.spatial import cKDTree

from empirics._checks import check_choice, check_int, check_real
from empirics.data.tasks import ELEMENTS, RULE_FEATURES, TARGET_SLOPE, Task
from empirics.evaluator.colour import strongest_colour
from empirics.evaluator.metrics import binomial_ci, conforming
from empirics.evaluator.pipeline import Evaluation

__all__ = ["element_colours", "feature_space", "nearest_neighbours", "replica_fraction", "Memorization",
           "memorization", "REPLICA_THRESHOLDS", "NeighbourMethod", "pixel_vectors", "PixelWhitening",
           "fit_whitening", "Space", "ReplicaSet", "MeasuredImages", "NeighbourDistances", "Novelty", "NoveltyTest",
           "novelty_test", "threshold_grid", "ReplicaCurves", "replica_curves"]

# Thresholds of Fig. 5b's sweep (the paper's largest, 0.3, makes every conforming sample a replica).
REPLICA_THRESHOLDS = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)


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
        out[name] = strongest_colour(imgs.astype(np.float64), family.contains(hsv), ink, 0.9) / 255.0
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


class NeighbourMethod(str, Enum):
    """How :func:`nearest_neighbours` searches: a k-d tree (low dimension) or exact chunked brute force."""

    AUTO = "auto"          # k-d tree up to KDTREE_MAX_DIM dimensions, chunked brute force above
    KDTREE = "kdtree"
    CHUNKED = "chunked"


KDTREE_MAX_DIM = 32
_EXTRA_CANDIDATES = 4  # brute force: candidates re-measured exactly beyond the k wanted


def _kdtree_neighbours(query, reference, k, leave_one_out):
    kk = k + 1 if leave_one_out else k
    dist, idx = cKDTree(reference).query(query, k=kk)
    dist, idx = dist.reshape(len(query), kk), idx.reshape(len(query), kk)
    if leave_one_out:
        own = idx == np.arange(len(query))[:, None]
        # each row's own index moves last (stable, so the order by distance is kept); if a duplicate at
        # distance 0 pushed it out of the k + 1 found, the last (farthest) one is dropped instead
        order = np.argsort(own, axis=1, kind="stable")[:, :k]
        dist, idx = np.take_along_axis(dist, order, 1), np.take_along_axis(idx, order, 1)
    return dist, idx


def _chunked_neighbours(query, reference, k, leave_one_out, chunk):
    n_ref = len(reference)
    n_cand = min(k + _EXTRA_CANDIDATES, n_ref - (1 if leave_one_out else 0))
    r2 = np.einsum("ij,ij->i", reference, reference)
    dist, idx = np.empty((len(query), k)), np.empty((len(query), k), int)
    for start in range(0, len(query), chunk):
        q = query[start:start + chunk]
        d2 = np.einsum("ij,ij->i", q, q)[:, None] + r2[None, :] - 2.0 * (q @ reference.T)
        if leave_one_out:
            d2[np.arange(len(q)), np.arange(start, start + len(q))] = np.inf
        cand = np.argpartition(d2, n_cand - 1, axis=1)[:, :n_cand]
        # the expansion |q|^2 + |r|^2 - 2 q.r loses digits; the candidates' distances are measured again
        # as the norm of the difference, so an identical copy is at exactly 0 whatever the chunk size
        exact = np.linalg.norm(q[:, None, :] - reference[cand], axis=2)
        order = np.lexsort((cand, exact), axis=1)[:, :k]
        dist[start:start + len(q)] = np.take_along_axis(exact, order, 1)
        idx[start:start + len(q)] = np.take_along_axis(cand, order, 1)
    return dist, idx


def nearest_neighbours(query: np.ndarray, reference: np.ndarray, k: int = 3, *, leave_one_out: bool = False,
                       method="auto", chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distances (M, k) and indices (M, k) of each query row's k nearest reference rows.

    Reference rows with NaN (invalid images) are never returned. ``leave_one_out``: query and reference
    are one set (same shape, all finite) and row i never gets itself back (App. D.2's distances of the
    training set to itself; an identical duplicate elsewhere in the set still counts).
    ``method``: a k-d tree (scipy) or, for pixel vectors, exact brute force in blocks of ``chunk`` query
    rows (a ``chunk`` x len(reference) float64 block in memory at a time); "auto" picks by dimension.
    """
    query, reference = np.asarray(query, np.float64), np.asarray(reference, np.float64)
    if query.ndim != 2 or reference.ndim != 2 or query.shape[1] != reference.shape[1]:
        raise ValueError(f"query and reference must be 2-D with the same width, got {query.shape}, {reference.shape}")
    if not np.all(np.isfinite(query)):
        raise ValueError("query rows must be finite (pass valid images only)")
    method = check_choice("method", method, NeighbourMethod)
    chunk = check_int("chunk", chunk, 1)
    leave_one_out = bool(leave_one_out)
    if leave_one_out and (query.shape != reference.shape or not np.array_equal(query, reference)):
        raise ValueError(f"leave_one_out needs query and reference to be the same set, got {query.shape} and "
                         f"{reference.shape} (or different values)")
    ok = np.flatnonzero(np.all(np.isfinite(reference), axis=1))
    available = ok.size - (1 if leave_one_out else 0)
    if available < 1:
        raise ValueError(f"reference has {ok.size} finite rows; {'two are' if leave_one_out else 'one is'} needed")
    k = check_int("k", k, 1, available)
    if len(query) == 0:
        return np.zeros((0, k)), np.zeros((0, k), int)
    if method is NeighbourMethod.AUTO:
        method = NeighbourMethod.KDTREE if query.shape[1] <= KDTREE_MAX_DIM else NeighbourMethod.CHUNKED
    search = _kdtree_neighbours if method is NeighbourMethod.KDTREE else _chunked_neighbours
    args = (query, reference[ok], k, leave_one_out) + ((chunk,) if method is NeighbourMethod.CHUNKED else ())
    dist, idx = search(*args)
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
    conf = np.flatnonzero(_conforming(sample_ev, rtol))
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


def _conforming(ev: Evaluation, rtol: float) -> np.ndarray:
    """Valid images whose fine ratio is within ``rtol`` of the rule's slope (Fig. 5a)."""
    return np.asarray(ev.valid, bool) & conforming(ev.x, ev.y, TARGET_SLOPE[ev.task], rtol)


def pixel_vectors(images) -> np.ndarray:
    """uint8 RGB images [N, S, S, 3] as float64 rows (N, 3 S^2) in [0, 1]."""
    imgs = np.asarray(images)
    if imgs.ndim != 4 or imgs.shape[3] != 3 or imgs.dtype != np.uint8 or imgs.shape[1] != imgs.shape[2]:
        raise ValueError(f"images must be uint8 [N, S, S, 3] RGB, got {imgs.dtype} {imgs.shape}")
    return imgs.reshape(len(imgs), -1).astype(np.float64) / 255.0


@dataclass(frozen=True)
class PixelWhitening:
    """PCA whitening fitted on a training set (module docstring): z = (x - mean) @ axes * scale."""

    mean: np.ndarray        # (D,) training mean of the [0, 1] pixel vectors
    axes: np.ndarray        # (D, D) principal axes (columns), eigenvectors of the training covariance
    eigenvalues: np.ndarray  # (D,) training variance along each axis
    ridge: float            # added to every eigenvalue, as a multiple of their mean
    image_shape: tuple[int, int, int]

    @property
    def scale(self) -> np.ndarray:
        """1 / sqrt(lambda + ridge * mean(lambda)) per axis."""
        return 1.0 / np.sqrt(self.eigenvalues + self.ridge * self.eigenvalues.mean())

    def transform(self, images) -> np.ndarray:
        """Whitened rows (N, D) of uint8 images shaped like the training images."""
        imgs = np.asarray(images)
        if imgs.shape[1:] != self.image_shape:
            raise ValueError(f"images must have shape [N, {', '.join(map(str, self.image_shape))}] like the "
                             f"training images, got {imgs.shape}")
        return ((pixel_vectors(imgs) - self.mean) @ self.axes) * self.scale


def fit_whitening(train_images, ridge: float = 0.1) -> PixelWhitening:
    """PCA whitening of ``train_images`` (eigendecomposition of their covariance, scipy/LAPACK)."""
    from scipy.linalg import eigh

    X = pixel_vectors(train_images)
    if len(X) < 2:
        raise ValueError(f"whitening needs at least 2 training images, got {len(X)}")
    ridge = check_real("ridge", ridge, 1e-6, 1e6)
    mean = X.mean(0)
    Xc = X - mean
    lam, axes = eigh(Xc.T @ Xc / (len(X) - 1))
    lam = np.clip(lam, 0.0, None)  # round-off makes the null directions' eigenvalues slightly negative
    if lam.sum() <= 0:
        raise ValueError("training images are all identical: no variation to whiten by")
    return PixelWhitening(mean, axes, lam, ridge, tuple(np.asarray(train_images).shape[1:]))


class Space(str, Enum):
    """Where nearest training images are looked for (Fig. 5b; module docstring)."""

    LENGTHS = "lengths"                  # App. D.2's 4-D space (2-D for C and D)
    LENGTHS_COLOURS = "lengths_colours"  # App. D.2's 13-D space (10-D for B, 8-D for C and D)
    PIXELS = "pixels_whitened"           # PCA-whitened pixels (3 S^2 dimensions)
    PIXELS_RAW = "pixels_raw"            # plain L2 on [0, 1] pixels


class ReplicaSet(str, Enum):
    """The image sets whose nearest training images Fig. 5b compares."""

    CONFORMING = "conforming"  # valid samples within rtol of the rule (the paper's set)
    VALID = "valid"            # every valid sample
    FRESH = "fresh"            # valid fresh renders, never trained on: the null
    TRAIN_LOO = "train_loo"    # valid training images against the rest of the training set
    MATCHED = "matched"        # optional: valid matched-null images (empirics.evaluator.controls.matched_null)


@dataclass(frozen=True)
class MeasuredImages:
    """Images of one set with their evaluation (``empirics.evaluate.evaluate``)."""

    images: np.ndarray
    evaluation: Evaluation

    def __post_init__(self):
        if not isinstance(self.evaluation, Evaluation):
            raise ValueError(f"evaluation must be an Evaluation, got {type(self.evaluation).__name__}")
        pixel_vectors(self.images[:1])
        if len(self.images) != len(self.evaluation):
            raise ValueError(f"images ({len(self.images)}) and evaluation ({len(self.evaluation)}) differ in length")


@dataclass(frozen=True)
class NeighbourDistances:
    """Nearest training images of the members of one set in one space."""

    members: np.ndarray   # (M,) indices into the set's images that have a vector in this space
    distance: np.ndarray  # (M, k) ascending
    index: np.ndarray     # (M, k) training-set indices


class Novelty(str, Enum):
    """Verdict of :func:`novelty_test` (one-sided Mann-Whitney U tests at level alpha)."""

    CLOSER = "closer to the training set than fresh draws"
    SAME = "no closer and no farther than fresh draws"
    FARTHER = "farther from the training set than fresh draws"


@dataclass(frozen=True)
class NoveltyTest:
    """Samples' nearest-training-image distances against fresh draws' (:func:`novelty_test`)."""

    n_samples: int
    n_fresh: int
    median_samples: float
    median_fresh: float
    p_closer: float        # one-sided Mann-Whitney U: samples' distances stochastically smaller
    p_farther: float       # the other side
    quantile: float        # of the fresh distances, e.g. 0.01
    threshold: float       # that quantile's distance
    n_below: int           # samples closer than the threshold
    share_below_ci95: tuple[float, float]  # Clopper-Pearson
    verdict: Novelty

    def as_dict(self) -> dict:
        return {"n_samples": self.n_samples, "n_fresh": self.n_fresh, "median_samples": self.median_samples,
                "median_fresh": self.median_fresh, "p_closer": self.p_closer, "p_farther": self.p_farther,
                "fresh_quantile": self.quantile, "fresh_quantile_distance": self.threshold,
                "n_below": self.n_below, "share_below": self.n_below / self.n_samples if self.n_samples else None,
                "share_below_ci95": list(self.share_below_ci95), "verdict": self.verdict.value}


def novelty_test(sample_distance, fresh_distance, quantile: float = 0.01, alpha: float = 0.05) -> NoveltyTest:
    """Are the samples closer to the training set than fresh draws are?

    One-sided Mann-Whitney U tests (scipy) of the samples' nearest-training-image distances against the
    fresh draws' in both directions, and the share of samples closer than the fresh draws' ``quantile``
    (expected ``quantile`` if samples were drawn like fresh images; far above it if many are near-copies).
    """
    from scipy.stats import mannwhitneyu

    s, f = (np.asarray(a, np.float64).reshape(-1) for a in (sample_distance, fresh_distance))
    if s.size == 0 or f.size == 0:
        raise ValueError(f"need at least one sample and one fresh distance, got {s.size} and {f.size}")
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(f)) and s.min() >= 0 and f.min() >= 0):
        raise ValueError("distances must be finite and >= 0")
    quantile = check_real("quantile", quantile, 0.0, 1.0)
    alpha = check_real("alpha", alpha, 1e-6, 0.5)
    p_closer = float(mannwhitneyu(s, f, alternative="less").pvalue)
    p_farther = float(mannwhitneyu(s, f, alternative="greater").pvalue)
    threshold = float(np.quantile(f, quantile))
    n_below = int(np.sum(s < threshold))
    verdict = Novelty.CLOSER if p_closer < alpha else Novelty.FARTHER if p_farther < alpha else Novelty.SAME
    return NoveltyTest(int(s.size), int(f.size), float(np.median(s)), float(np.median(f)), p_closer, p_farther,
                       quantile, threshold, n_below, binomial_ci(n_below, int(s.size)), verdict)


def threshold_grid(fresh_distance, *others, n: int = 41, fixed=()) -> np.ndarray:
    """Data-driven thresholds: 0, ``n`` quantiles of the fresh draws' distances and ``n`` of all sets pooled
    (so every curve reaches 1), plus the ``fixed`` ones (e.g. the paper's); sorted, unique."""
    f = np.asarray(fresh_distance, np.float64).reshape(-1)
    n = check_int("n", n, 2, 10_001)
    if f.size == 0 or not np.all(np.isfinite(f)):
        raise ValueError(f"fresh_distance must be a non-empty array of finite distances, got {f.size} values")
    pooled = np.concatenate([f] + [np.asarray(o, np.float64).reshape(-1) for o in others])
    pooled = pooled[np.isfinite(pooled)]
    levels = np.linspace(0.0, 1.0, n)
    grid = np.concatenate([[0.0], np.quantile(f, levels), np.quantile(pooled, levels),
                           np.asarray(fixed, np.float64).reshape(-1)])
    # a threshold exactly at the largest distance would leave that image out ("closer than"): nudge the top
    grid = np.append(grid, np.nextafter(pooled.max(), np.inf))
    return np.unique(grid)


_SAMPLE_SETS = (ReplicaSet.CONFORMING, ReplicaSet.VALID)


@dataclass(frozen=True)
class ReplicaCurves:
    """Fig. 5b with its null: nearest-training-image distances of every set in every space."""

    task: Task
    rtol: float
    dims: dict            # {Space: dimension}
    neighbours: dict      # {(Space, ReplicaSet): NeighbourDistances}
    whitening_ridge: float

    @property
    def groups(self) -> tuple[ReplicaSet, ...]:
        """The sets measured (MATCHED only when given)."""
        return tuple(g for g in ReplicaSet if (Space.LENGTHS, g) in self.neighbours)

    def distance(self, space, group) -> np.ndarray:
        """Distance of each member of ``group`` to its nearest training image in ``space``."""
        space, group = check_choice("space", space, Space), check_choice("group", group, ReplicaSet)
        if (space, group) not in self.neighbours:
            raise ValueError(f"set {group.value!r} was not measured (give it to replica_curves)")
        return self.neighbours[(space, group)].distance[:, 0]

    def thresholds(self, space) -> np.ndarray:
        """The space's threshold grid: the paper's thresholds in the feature spaces, data-driven everywhere."""
        space = check_choice("space", space, Space)
        fixed = REPLICA_THRESHOLDS if space in (Space.LENGTHS, Space.LENGTHS_COLOURS) else ()
        return threshold_grid(self.distance(space, ReplicaSet.FRESH),
                              *(self.distance(space, g) for g in self.groups), fixed=fixed)

    def curve(self, space, group, thresholds=None) -> np.ndarray:
        """Replica share of ``group`` at each threshold (:func:`replica_fraction`, the same for every set)."""
        t = self.thresholds(space) if thresholds is None else np.asarray(thresholds, np.float64).reshape(-1)
        shares = replica_fraction(self.distance(space, group), t)
        return np.array([shares[float(x)] for x in t])

    def novelty(self, space, group=ReplicaSet.VALID, quantile: float = 0.01,
                null=ReplicaSet.FRESH) -> NoveltyTest:
        """:func:`novelty_test` of ``group`` (conforming or valid samples) against a null set (fresh draws,
        or the matched null)."""
        group, null = check_choice("group", group, ReplicaSet), check_choice("null", null, ReplicaSet)
        if null not in (ReplicaSet.FRESH, ReplicaSet.MATCHED):
            raise ValueError(f"null must be 'fresh' or 'matched', got {null.value!r}")
        if group not in _SAMPLE_SETS:
            raise ValueError(f"group must be one of the sample sets {[g.value for g in _SAMPLE_SETS]}, got {group}")
        return novelty_test(self.distance(space, group), self.distance(space, null), quantile)

    def summary(self, quantile: float = 0.01) -> dict:
        """JSON record: every curve, distance quantiles and the novelty tests, per space."""
        out = {"task": self.task.value, "rtol": self.rtol, "whitening_ridge": self.whitening_ridge, "spaces": {}}
        for space in Space:
            t = self.thresholds(space)
            rec = {"dim": self.dims[space], "thresholds": t.tolist(), "sets": {}}
            for g in self.groups:
                d = self.distance(space, g)
                rec["sets"][g.value] = {
                    "n": int(d.size), "curve": self.curve(space, g, t).tolist(),
                    "distance_quantiles": ({str(q): float(np.quantile(d, q)) for q in (0.0, 0.01, 0.5, 0.99, 1.0)}
                                           if d.size else None)}
            for null in (n for n in (ReplicaSet.FRESH, ReplicaSet.MATCHED) if n in self.groups):
                key = "novelty" if null is ReplicaSet.FRESH else "novelty_vs_matched"
                rec[key] = {g.value: (self.novelty(space, g, quantile, null).as_dict()
                                      if self.distance(space, g).size else None) for g in _SAMPLE_SETS}
            out["spaces"][space.value] = rec
        return out


def replica_curves(samples: MeasuredImages, train: MeasuredImages, fresh: MeasuredImages,
                   matched: MeasuredImages | None = None, *, rtol: float = 0.01, k: int = 3, ridge: float = 0.1,
                   chunk: int = 256) -> ReplicaCurves:
    """Fig. 5b with controls (module docstring): the k nearest training images of the conforming samples,
    all valid samples, the valid fresh draws and (leave-one-out) the valid training images, in the lengths
    space, the lengths + colours space (App. D.2), whitened pixels and raw pixels; with ``matched``, also
    the valid images of the matched null (fresh renders restyled like the samples).

    Feature spaces search the valid training images; pixel spaces every training image. A set member
    without a vector in a space (invalid, or colours outside App. C's boxes) is left out of that space.
    """
    given = {"samples": samples, "train": train, "fresh": fresh} | ({} if matched is None else {"matched": matched})
    for name, m in given.items():
        if not isinstance(m, MeasuredImages):
            raise ValueError(f"{name} must be MeasuredImages, got {type(m).__name__}")
    tasks = {m.evaluation.task for m in given.values()}
    if len(tasks) != 1:
        raise ValueError(f"samples, training and fresh images must be of one task, "
                         f"got {sorted(t.value for t in tasks)}")
    shapes = {m.images.shape[1:] for m in given.values()}
    if len(shapes) != 1:
        raise ValueError(f"samples, training and fresh images must have one size, got {sorted(shapes)}")
    rtol = check_real("rtol", rtol, 0.0, 1.0)
    task = train.evaluation.task
    whitening = fit_whitening(train.images, ridge)
    members = {ReplicaSet.CONFORMING: np.flatnonzero(_conforming(samples.evaluation, rtol)),
               ReplicaSet.VALID: np.flatnonzero(samples.evaluation.valid),
               ReplicaSet.FRESH: np.flatnonzero(fresh.evaluation.valid),
               ReplicaSet.TRAIN_LOO: np.flatnonzero(train.evaluation.valid)}
    source = {ReplicaSet.CONFORMING: samples, ReplicaSet.VALID: samples, ReplicaSet.FRESH: fresh,
              ReplicaSet.TRAIN_LOO: train}
    if matched is not None:
        members[ReplicaSet.MATCHED] = np.flatnonzero(matched.evaluation.valid)
        source[ReplicaSet.MATCHED] = matched

    def vectors(m: MeasuredImages, space: Space) -> np.ndarray:
        if space is Space.PIXELS:
            return whitening.transform(m.images)
        if space is Space.PIXELS_RAW:
            return pixel_vectors(m.images)
        return feature_space(m.evaluation, m.images, space is Space.LENGTHS_COLOURS)

    dims, neighbours = {}, {}
    for space in Space:
        ref_all = vectors(train, space)
        dims[space] = int(ref_all.shape[1])
        cache = {}
        for g in source:
            m = source[g]
            if id(m) not in cache:
                cache[id(m)] = ref_all if m is train else vectors(m, space)
            keep = members[g][np.all(np.isfinite(cache[id(m)][members[g]]), axis=1)]
            X = cache[id(m)][keep]
            if g is ReplicaSet.TRAIN_LOO:
                # leave-one-out over the training images that have a vector (valid, colours measurable)
                d, i = nearest_neighbours(X, X, k, leave_one_out=True, chunk=chunk)
                i = keep[i]
            else:
                d, i = nearest_neighbours(X, ref_all, k, chunk=chunk)  # invalid training rows are NaN in features
            neighbours[(space, g)] = NeighbourDistances(keep, d, i)
    return ReplicaCurves(task, rtol, dims, neighbours, ridge)
