"""Controls for every Section 3 metric: images that were never trained on, measured like the samples.

A metric says something about a model only where its samples differ from a control that could have
come out otherwise. The controls are drawn from the task's own generator (App. C) with
``FRESH_SEED``, a seed no training set, contrastive set or test of this package draws from
(training sets use ``data_seed`` 0 by default), so every fresh render is a new image.
"""

from __future__ import annotations

from empirics._checks import check_int
from empirics.tasks import Task, TaskBatch, generate

__all__ = ["FRESH_SEED", "fresh_renders"]

FRESH_SEED = 20_251_204   # never used for a training set: the null's images are new to every model


def fresh_renders(task, n: int, size: int = 32, seed: int = FRESH_SEED) -> TaskBatch:
    """``n`` exact renders of ``task`` (App. C) from ``seed``: the "fresh, never trained on" control."""
    task = Task.parse(task)
    n = check_int("n", n, 1, 10**6)
    return generate(task, n, size=size, seed=seed)
