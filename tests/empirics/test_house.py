"""The empirics house: one source of task metadata, Invalid reasons as data, no import circles."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from empirics.evaluate import Problem, Reason, evaluate
from empirics.tasks import ELEMENTS, RULE_FEATURES, SPECS, TARGET_SLOPE, Shape, Task, generate, render, sample_params

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ("theory", "empirics", "derivations")


def _imports(path: Path) -> set[str]:
    """Modules imported anywhere in a file (function-level imports included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def _module_graph(package: str) -> dict[str, set[str]]:
    files = {f"{package}.{p.stem}": p for p in (ROOT / package).glob("*.py") if p.stem != "__init__"}
    return {name: {m for m in _imports(p) if m in files and m != name} for name, p in files.items()}


@pytest.mark.parametrize("package", LIBRARY)
def test_library_never_imports_the_figure_layer(package):
    for path in (ROOT / package).rglob("*.py"):
        bad = {m for m in _imports(path) if m == "paper_figs" or m.startswith("paper_figs.")}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


@pytest.mark.parametrize("package", ("empirics", "paper_figs"))
def test_no_import_circle(package):
    graph = _module_graph(package)
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join([*stack, node, nxt]))
            if nxt not in state:
                visit(nxt, [*stack, node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])


def test_task_views_come_from_the_specs():
    for task, spec in SPECS.items():
        assert spec.task is task
        assert TARGET_SLOPE[task] == spec.slope and RULE_FEATURES[task] == spec.rule_features
        assert ELEMENTS[task] == tuple((e.name, e.family) for e in spec.elements)
        assert set(spec.rule_features) <= set(spec.features) and set(spec.positive) <= set(spec.features)
        assert all(isinstance(e.shape, Shape) for e in spec.elements)


@pytest.mark.parametrize("task", list(Task))
def test_evaluator_reports_the_spec_features(task):
    ev = evaluate(generate(task, 3, 32, seed=2).images, task)
    assert tuple(ev.features) == SPECS[task].features


def test_reason_messages_and_retry_verdicts():
    assert Reason(Problem.TOO_MANY, "suns", 2).message == "2 suns"
    assert Reason(Problem.MISSING, "blue-green square").message == "missing blue-green square"
    assert Reason(Problem.CUT_BY_BORDER, "pole").message == "pole cut by the image border"
    assert Reason(Problem.COLOUR_OUT_OF_RANGE, "pole", family="blue-green").message == \
        "pole colour outside the blue-green range"
    # Measurements stand; what a washed-out colour can cause is retried with relaxed tolerances.
    stand = {p for p in Problem if not p.retryable}
    assert stand == {Problem.BLANK, Problem.NON_FINITE, Problem.CUT_BY_BORDER, Problem.SUN_NOT_ABOVE_POLE,
                     Problem.TOO_THIN, Problem.WRONG_SHAPE}
    assert all(Reason(p).retryable == p.retryable for p in Problem)


def test_reasons_name_the_element_of_the_spec():
    params = sample_params("D", 2, 32, seed=3)
    top = SPECS[Task.D].elements[0]
    for channel in ("red", "green", "blue"):  # paint the top square white: it is missing
        params[f"{top.name}_{channel}"][1] = 255.0
    blank = np.full((1, 32, 32, 3), 255, np.uint8)
    ev = evaluate(np.concatenate([render("D", params, 32), blank]), "D")
    assert list(ev.valid) == [True, False, False]
    assert ev.reason[1] == Reason(Problem.MISSING, top.label).message == "missing yellowish square"
    assert ev.reason[2] == Problem.BLANK.template
