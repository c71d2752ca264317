"""Contrastive three-class data of App. G.1 (Fig. 15-16) for the guidance and filtering classifiers.

``contrastive_set(task, n_per_class=2000, size=32, seed=0, margins=None) -> ContrastiveSet`` draws,
with the generators of ``empirics.tasks`` (same sizes, colours and coarse rules), App. G.1's
2000 images per class:

* class 1 (``ContrastiveClass.RULE``) obeys the fine rule, y = k x exactly (fine factor 1);
* classes 0 and 2 (``LOW``, ``HIGH``) obey the coarse rule but break the fine rule on opposite sides:
  y / (k x) = f with f drawn uniformly per image from ``margins[0] = (lo0, hi0)`` (f < 1) or
  ``margins[1] = (lo2, hi2)`` (f > 1). The factor multiplies the dependent quantity
  (``tasks.sample_params``): A's shadow length, B's right bar height, C's large radius, D's bottom side.

Default margins (``default_margins``): class 0 = [a, 0.9] and class 2 = [1/0.9, 1/a], symmetric in
log f, so that both negative classes lie equally far from the rule. The inner edge 0.9 (10 % off the
rule) keeps the classes "nearly identical at a glance" (Fig. 15) while the evaluator, whose ratio error
on these images is at most 3.7 % in Task A (2 px shadows) and 1 % in B-D (300 images per class),
measures every valid image on its intended side of the rule. The outer edge ``a`` keeps a safety margin
inside the task's limits (``tasks.FINE_FACTOR_LIMITS``, beyond which the coarse rule would fail or an
element would vanish or leave the frame):

    task  a     class 0        class 2        why a (limit)
    A     0.75  [0.75, 0.9]    [1.11, 1.33]   a near sun's shadow (l2 = f l1, l1 >= 3 px) still sticks out of
                                              the 2 px pole by >= 1.25 px (limit 2/3); shadows of
                                              0.1-0.5 times the rule's length would hide behind it
    B     0.8   [0.8, 0.9]     [1.11, 1.25]   right bar >= 1.6 px at 32 px (limit 0.5); h2 / h1 <= 0.75 in
                                              class 2 (coarse rule h1 > h2, limit 5/3)
    C     0.8   [0.8, 0.9]     [1.11, 1.25]   radii differ by >= 11.6 %, twice the coarse tolerance
                                              COARSE_C_RTOL = 5 % (limit 0.744)
    D     0.75  [0.75, 0.9]    [1.11, 1.33]   bottom square >= 12.5 % larger than the top one, f * 1.5 > 1
                                              (limit 2/3); it fits its half up to f = 1.94

What else differs between classes (inherent in keeping every element in frame; tasks.py's module
docstring): A's class 2 draws the sun 1/f times as near the pole (its shadow keeps class 1's range); D's
class 2 lowers the top square's upper bound when f > 1.04. B's class 0 keeps class 1's positions and
only shortens the right bar, so the generator's 2 px floor becomes f * 2 px: 5 % of class 0 bars are
thinner than 2 px, and the evaluator rejects 1.0-1.4 % of class 0 images (2000 images, seeds 0 and 1:
an unblurred bar thinner than 2 px lying over two partial rows, whose thickness is not in its pixels).

Seeds: each class has its own seed, derived from (seed, class) with ``numpy.random.SeedSequence``, and
its factors their own stream, so the classes share no image and none reuses the streams of
``tasks.generate(task, n, size, seed)``; image i of a class does not depend on ``n_per_class``.
"""

from __future__ import annotations

import enum
import zlib
from dataclasses import dataclass, field

import numpy as np

from empirics._checks import check_int
from empirics.data.render import render
from empirics.data.tasks import FINE_FACTOR_LIMITS, TARGET_SLOPE, Task, sample_params

__all__ = ["ContrastiveClass", "ContrastiveSet", "contrastive_set", "default_margins", "N_PER_CLASS"]

N_PER_CLASS = 2000          # App. G.1: 2000 positive samples and 2000 per negative class
_INNER = 0.9                # class 0's upper edge; class 2's lower edge is 1 / _INNER
_OUTER = {Task.A: 0.75, Task.B: 0.8, Task.C: 0.8, Task.D: 0.75}   # class 0's lower edge (table above)
_SALT = zlib.crc32(b"contrastive")

Margins = tuple[tuple[float, float], tuple[float, float]]


class ContrastiveClass(enum.IntEnum):
    """The three classes of App. G.1 (Fig. 16), by the side of the fine rule their images lie on."""

    LOW = 0     # coarse rule only, y / (k x) < 1
    RULE = 1    # fine rule, y = k x
    HIGH = 2    # coarse rule only, y / (k x) > 1


@dataclass(frozen=True, eq=False)
class ContrastiveSet:
    """App. G.1's three-class data of one task: classes 0, 1, 2 in consecutive blocks of ``n_per_class``.

    ``images`` uint8 [3n, S, S, 3] RGB; ``labels`` int64 [3n]; ``factors`` float64 [3n], y / (k x) of each
    image (1 in class 1); ``params`` the generator's ground truth (keys of ``tasks.sample_params``);
    ``margins`` ((lo0, hi0), (lo2, hi2)); ``meta`` json-able provenance.
    """

    task: Task
    images: np.ndarray
    labels: np.ndarray
    factors: np.ndarray
    params: dict[str, np.ndarray]
    margins: Margins
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.images)
        if self.images.ndim != 4 or self.images.shape[3] != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 [N, S, S, 3], got {self.images.dtype} {self.images.shape}")
        for name, v in (("labels", self.labels), ("factors", self.factors), *self.params.items()):
            if np.shape(v) != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {np.shape(v)}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def n_per_class(self) -> int:
        return len(self) // len(ContrastiveClass)


def default_margins(task) -> Margins:
    """App. G.1 class margins of ``task``: ((a, 0.9), (1/0.9, 1/a)), a from the module docstring's table."""
    a = _OUTER[Task.parse(task)]
    return (a, _INNER), (1.0 / _INNER, 1.0 / a)


def _check_margins(task: Task, margins) -> Margins:
    """((lo0, hi0), (lo2, hi2)) with lim.lo < lo0 <= hi0 < 1 < lo2 <= hi2 < lim.hi, ``tasks.FINE_FACTOR_LIMITS``."""
    lim = FINE_FACTOR_LIMITS[task]
    allowed = (f"margins must be ((lo0, hi0), (lo2, hi2)) with {lim.lo:.4g} < lo0 <= hi0 < 1 < lo2 <= hi2 "
               f"< {lim.hi:.4g} for task {task.value}")
    try:
        m = np.asarray(margins, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{allowed}, got {margins!r}") from exc
    if m.shape != (2, 2):
        raise ValueError(f"{allowed}, got shape {m.shape}: {margins!r}")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{allowed}, got non-finite values {margins!r}")
    (lo0, hi0), (lo2, hi2) = m.tolist()
    for bad, why in ((lo0 > hi0, "class 0's interval is reversed (lo0 > hi0)"),
                     (lo2 > hi2, "class 2's interval is reversed (lo2 > hi2)"),
                     (not 0 < lo0 <= hi0 < 1, "class 0 must lie below the fine rule (0 < lo0, hi0 < 1)"),
                     (not 1 < lo2 <= hi2, "class 2 must lie above the fine rule (lo2 > 1)"),
                     (lo0 <= lim.lo, f"at lo0 <= {lim.lo:.4g} {lim.below}"),
                     (hi2 >= lim.hi, f"at hi2 >= {lim.hi:.4g} {lim.above}")):
        if bad:
            raise ValueError(f"{allowed}, got {margins!r}: {why}")
    return (lo0, hi0), (lo2, hi2)


def _class_seed(seed: int, label: ContrastiveClass) -> int:
    """Seed of one class's images, independent of the other classes' and of ``seed`` itself."""
    return int(np.random.SeedSequence([seed, _SALT, int(label)]).generate_state(1, np.uint64)[0])


def _factors(seed: int, task: Task, label: ContrastiveClass, n: int, margins: Margins) -> np.ndarray:
    """Per-image y / (k x) of one class: 1 for class 1, uniform on the class's margin otherwise."""
    if label is ContrastiveClass.RULE:
        return np.ones(n)
    lo, hi = margins[0] if label is ContrastiveClass.LOW else margins[1]
    rng = np.random.default_rng(np.random.SeedSequence([seed, _SALT, int(label), ord(task.value)]))
    return lo + (hi - lo) * rng.random(n)


def contrastive_set(task, n_per_class: int = N_PER_CLASS, size: int = 32, seed: int = 0,
                    margins=None) -> ContrastiveSet:
    """App. G.1 (Fig. 16): ``n_per_class`` images per class of ``task`` at ``size`` px, reproducible.

    ``margins`` ((lo0, hi0), (lo2, hi2)) bound the fine factors of classes 0 and 2 (default:
    ``default_margins(task)``).
    """
    task = Task.parse(task)
    n = check_int("n_per_class", n_per_class, 1)
    size = check_int("size", size, 16, 512)
    seed = check_int("seed", seed, 0)
    margins = default_margins(task) if margins is None else _check_margins(task, margins)
    seeds, factors, blocks = [], [], []
    for label in ContrastiveClass:
        seeds.append(_class_seed(seed, label))
        factors.append(_factors(seed, task, label, n, margins))
        blocks.append(sample_params(task, n, size, seeds[-1], fine_factor=factors[-1]))
    params = {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}
    meta = {"task": task.value, "n_per_class": n, "size": size, "seed": seed,
            "margins": [list(m) for m in margins], "class_seeds": seeds,
            "classes": {c.name.lower(): int(c) for c in ContrastiveClass},
            "k": TARGET_SLOPE[task], "source": "App. G.1 (Fig. 15-16)"}
    labels = np.repeat(np.array([int(c) for c in ContrastiveClass], np.int64), n)
    return ContrastiveSet(task, render(task, params, size), labels, np.concatenate(factors), params, margins, meta)
