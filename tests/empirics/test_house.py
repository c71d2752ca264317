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


# Measures of the house (DESIGN.md, issue 26): every file of empirics/ (subpackages included) at most
# MAX_FILE_LINES lines, every class at most MAX_CLASS_LINES, every function at most MAX_FUNCTION_LINES.
MAX_FILE_LINES = 650
MAX_CLASS_LINES = 260
MAX_FUNCTION_LINES = 95


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _dotted(path: Path) -> str:
    """``empirics/evaluator/colour.py`` -> ``empirics.evaluator.colour``; a package's ``__init__.py`` -> the package."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_nodes(path: Path):
    return [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, (ast.Import, ast.ImportFrom))]


def _imports(path: Path) -> set[str]:
    """Modules imported anywhere in a file (function-level imports included); ``from pkg import mod`` counts
    as an import of ``pkg.mod`` too."""
    out = set()
    for node in _import_nodes(path):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def _module_graph(package: str) -> dict[str, set[str]]:
    """Import edges between the modules of ``package``, subpackages as dotted names. Importing a module also
    runs its packages' ``__init__``, which is an edge too (except to the importer's own packages, which are
    running already)."""
    files = {_dotted(p): p for p in _files(package)}
    graph = {}
    for name, p in files.items():
        edges = set()
        for m in _imports(p):
            parts = m.split(".")
            edges.update(".".join(parts[:k]) for k in range(1, len(parts) + 1))
        graph[name] = {m for m in edges if m in files and m != name and not name.startswith(m + ".")}
    return graph


def _find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack, node, nxt]
            if nxt not in state:
                found = visit(nxt, [*stack, node])
                if found:
                    return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [])
            if found:
                return found
    return None


@pytest.mark.parametrize("package", LIBRARY)
def test_library_never_imports_the_figure_layer(package):
    for path in (ROOT / package).rglob("*.py"):
        bad = {m for m in _imports(path) if m == "paper_figs" or m.startswith("paper_figs.")}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


@pytest.mark.parametrize("importer, imported", [("theory", "empirics"), ("empirics", "theory")])
def test_theory_and_empirics_stay_apart(importer, imported):
    """DESIGN: theory never imports empirics; empirics never imports theory either (empirics/_checks.py), so
    the evaluator loads without torch."""
    for path in (ROOT / importer).rglob("*.py"):
        bad = {m for m in _imports(path) if m == imported or m.startswith(imported + ".")}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


@pytest.mark.parametrize("package", ("empirics", "paper_figs"))
def test_no_import_circle(package):
    circle = _find_circle(_module_graph(package))
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_the_circle_finder_sees_circles_through_subpackages():
    graph = {"p.a": {"p.sub.b"}, "p.sub": set(), "p.sub.b": {"p.c"}, "p.c": {"p.a"}}
    assert _find_circle(graph) == ["p.a", "p.sub.b", "p.c", "p.a"]
    assert _find_circle({"p.a": {"p.sub.b"}, "p.sub": set(), "p.sub.b": set()}) is None


def test_module_graph_has_the_subpackages():
    graph = _module_graph("empirics")
    assert "empirics.evaluator.pipeline" in graph and "empirics.data.tasks" in graph
    assert "empirics.evaluator.colour" in graph["empirics.evaluator.pipeline"]
    assert "empirics.data" in graph["empirics.evaluator.pipeline"]     # the package's __init__ runs first


def _private_imports(path: Path) -> list[str]:
    """Private (leading underscore) names a file takes from another module of the project: ``from m import _x``
    and ``mod._x`` on a project module imported as ``mod``."""
    bad, modules = [], {}
    for node in _import_nodes(path):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PROJECT:
            for a in node.names:
                if a.name.startswith("_"):
                    bad.append(f"from {node.module} import {a.name}")
                elif (ROOT / node.module.replace(".", "/") / f"{a.name}.py").exists():
                    modules[a.asname or a.name] = f"{node.module}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in PROJECT and a.asname:
                    modules[a.asname] = a.name
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            bad.append(f"{modules[node.value.id]}.{node.attr}")
    return bad


PROJECT = ("theory", "empirics", "derivations", "paper_figs")


@pytest.mark.parametrize("path", _files("empirics"), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_name_imported_from_another_module(path):
    bad = _private_imports(path)
    assert not bad, f"{path.relative_to(ROOT)} takes private names from other modules: {bad}"


def test_the_private_import_check_sees_both_forms(tmp_path, monkeypatch):
    f = tmp_path / "m.py"
    f.write_text("from empirics.tasks import _x, Task\nfrom empirics import evaluate as ev\nev._y\nev.__doc__\n")
    assert _private_imports(f) == ["from empirics.tasks import _x", "empirics.evaluate._y"]


def _sizes(path: Path) -> list[str]:
    """What in a file exceeds the measures: the file, its classes and its functions (methods included)."""
    text = path.read_text()
    out = []
    if text.count("\n") > MAX_FILE_LINES:
        out.append(f"file: {text.count(chr(10))} lines > {MAX_FILE_LINES}")
    for node in ast.walk(ast.parse(text)):
        n = node.end_lineno - node.lineno + 1 if hasattr(node, "end_lineno") else 0
        if isinstance(node, ast.ClassDef) and n > MAX_CLASS_LINES:
            out.append(f"class {node.name}: {n} lines > {MAX_CLASS_LINES}")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and n > MAX_FUNCTION_LINES:
            out.append(f"function {node.name} (line {node.lineno}): {n} lines > {MAX_FUNCTION_LINES}")
    return out


@pytest.mark.parametrize("path", _files("empirics"), ids=lambda p: str(p.relative_to(ROOT)))
def test_file_class_and_function_sizes(path):
    too_big = _sizes(path)
    assert not too_big, f"{path.relative_to(ROOT)}: " + "; ".join(too_big)


def test_the_size_check_counts_lines(tmp_path):
    f = tmp_path / "m.py"
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    f.write_text(f"def g():\n{body}\n")
    assert _sizes(f) == [f"function g (line 1): {MAX_FUNCTION_LINES + 1} lines > {MAX_FUNCTION_LINES}"]
    f.write_text("def g():\n    pass\n")
    assert _sizes(f) == []


def test_the_evaluator_features_table_is_the_spec():
    from empirics.evaluator.features import FEATURES

    assert set(FEATURES) == set(Task)
    for task, (_, table) in FEATURES.items():
        assert tuple(table) == SPECS[task].features


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
