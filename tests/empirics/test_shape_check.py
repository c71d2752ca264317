"""The evaluator's shape check (``empirics.evaluate``, section "Shape check"; issue item 5).

Every element must have the shape its task names (A: a disc sun and a vertical pole, B: bars, C: discs,
D: squares). Renders of one task evaluated as another must be Invalid: the goal is <= 2 % valid for each
of the 12 pairs (measured 0 of 300 per pair, ``benchmarks/shape_check.py``); here n = 50 per pair, so the
bound allows one valid image. Our own renders must not lose a single image to the check.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from empirics.evaluate import EXPECTED_FORM, Form, Problem, Reason, evaluate, shape_statistics
from empirics.tasks import Task, degrade, generate

N_PAIR = 50
GOAL = 0.02
PAIRS = [(t, u) for t, u in itertools.permutations(Task, 2)]


@pytest.mark.parametrize(("truth", "task"), PAIRS, ids=[f"{t.value}_as_{u.value}" for t, u in PAIRS])
def test_wrong_task_is_invalid(truth, task):
    ev = evaluate(generate(truth, N_PAIR, 32, seed=31).images, task)
    assert ev.valid.mean() <= GOAL, (truth, task, ev.valid.mean(), ev.reason[ev.valid])


@pytest.mark.parametrize("task", list(Task))
def test_own_renders_keep_their_shapes(task):
    batch = generate(task, 60, 32, seed=32)
    exact = evaluate(batch.images, task)
    assert exact.valid.all(), exact.reason[~exact.valid]
    degraded = evaluate(degrade(batch.images, 0.5, 75), task)
    shape = [r for r in degraded.reason if "is expected" in r]
    assert not shape, shape


def test_wrong_shape_message_is_pinned():
    reason = Reason(Problem.WRONG_SHAPE, "small circle", found=Form.SQUARE.value, expected=Form.CIRCLE.value)
    assert reason.message == "small circle: square where a circle is expected"
    assert not reason.retryable
    ev = evaluate(generate(Task.D, 1, 32, seed=33).images, Task.C)
    assert ev.reason[0] == ("yellowish circle: square where a circle is expected; "
                            "blue-green circle: square where a circle is expected")


def test_statistics_sign_tells_discs_from_rectangles():
    """On exact renders a disc leaves less unexplained than a rectangle (L < 0) and vice versa."""
    for task in Task:
        table, ok = shape_statistics(generate(task, 40, 32, seed=34).images, task)
        assert ok.all()
        for name, stats in table.items():
            form = EXPECTED_FORM[task][name]
            if form is Form.CIRCLE:
                assert np.all(stats.separable_gain < 0), (task, name)
            elif form is not Form.VERTICAL_STRIP:
                assert np.all(stats.separable_gain > 0), (task, name)


def test_shape_check_at_64_px():
    """The statistics are read at 32 px scale, so a 64 px image is judged the same way."""
    own = evaluate(generate(Task.C, 20, 64, seed=35).images, Task.C)
    assert own.valid.all(), own.reason[~own.valid]
    wrong = evaluate(generate(Task.D, 20, 64, seed=35).images, Task.C)
    assert not wrong.valid.any()
