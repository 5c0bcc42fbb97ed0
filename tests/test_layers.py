"""The package's layers, read from the import statements (every one, a function's lazy imports included).

- Each paper lives in ``facebench/papers/<paper>/`` with ``model.py``, ``loss.py`` and ``task.py``.
- The shared core (data formats, Parquet, transforms, metrics, trainer, tracking, report, config) imports no
  paper: it reaches a paper's task only by the name ``config.TASK_CLASSES`` gives it.
- No cycle between units. A unit is a folder (``data``, ``train``, ``report``, each paper's folder ...);
  each module at the package's top (``config.py``, ``cli.py``, ...) is a unit of its own.
- The entry points at the top (cli, stages, bench, submit) may import anything: they compose the papers.
"""

from __future__ import annotations

import ast
import importlib
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "facebench"
PAPERS = ("wing", "awing", "cosface", "mtcnn")
ENTRY_POINTS = {"facebench.cli", "facebench.stages", "facebench.bench", "facebench.submit"}
PAPER_EDGES = {("papers.awing", "papers.wing")}  # the heatmap task is the landmark task with heatmap targets


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """facebench modules (or packages) a file imports, anywhere in it; ``from a import b`` counts a.b."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "facebench")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "facebench":
            assert node.level == 0, f"{path}: relative import (the layers test reads absolute ones)"
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def module_graph() -> dict[str, set[str]]:
    """Every facebench module -> the facebench modules it imports (names that are not modules dropped)."""
    files = {module_name(p): p for p in PACKAGE_DIR.rglob("*.py")}
    return {m: {t for t in imports_of(p) if t in files and t != m} for m, p in files.items()}


def unit(module: str) -> str:
    """facebench.data.formats.aflw -> data; facebench.papers.wing.task -> papers.wing; facebench.config -> config."""
    parts = module.split(".")[1:]
    if not parts:
        return "facebench"
    return ".".join(parts[:2]) if parts[0] == "papers" else parts[0]


def is_paper(module: str) -> bool:
    return unit(module).startswith("papers.")


def shared_to_paper_edges(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Edges from a shared module (not a paper's, not an entry point, not the papers' index) to a paper's."""
    return sorted((m, t) for m, targets in graph.items() for t in targets
                  if not is_paper(m) and m not in ENTRY_POINTS and m != "facebench.papers" and is_paper(t))


def unit_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one unit (Tarjan), each sorted."""
    edges: dict[str, set[str]] = defaultdict(set)
    for m, targets in graph.items():
        for t in targets:
            if unit(m) != unit(t):
                edges[unit(m)].add(unit(t))
    nodes = sorted({unit(m) for m in graph} | {unit(t) for ts in graph.values() for t in ts})
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in nodes:
        if v not in index:
            visit(v)
    return groups


def test_metrics_take_arrays():
    """metrics/ computes numbers from arrays: it reads no file format (data/ reads and calls it)."""
    graph = module_graph()
    assert {t for m, ts in graph.items() if unit(m) == "metrics" for t in ts if unit(t) != "metrics"} == set()


def test_shared_code_imports_no_paper():
    assert shared_to_paper_edges(module_graph()) == []


def test_no_cycle_between_units():
    assert unit_cycles(module_graph()) == []


def test_papers_import_each_other_only_where_said():
    graph = module_graph()
    between = {(unit(m), unit(t)) for m, ts in graph.items() for t in ts
               if is_paper(m) and is_paper(t) and unit(m) != unit(t)}
    assert between == PAPER_EDGES


def test_the_checks_find_a_planted_edge_and_cycle():
    graph = module_graph()
    planted = {**graph, "facebench.train.ray_trainer": graph["facebench.train.ray_trainer"] | {
        "facebench.papers.wing.loss"}}
    assert shared_to_paper_edges(planted) == [("facebench.train.ray_trainer", "facebench.papers.wing.loss")]
    assert "facebench.metrics.verification" in graph["facebench.data.pair_sets"]  # data -> metrics, so:
    cycle = {**graph, "facebench.metrics.landmarks": graph["facebench.metrics.landmarks"] | {"facebench.data.parquet"}}
    assert unit_cycles(cycle) == [["data", "metrics"]]


@pytest.mark.parametrize("paper", PAPERS)
def test_each_paper_has_its_model_loss_and_task(paper):
    for name in ("model.py", "loss.py", "task.py"):
        assert (PACKAGE_DIR / "papers" / paper / name).is_file(), f"papers/{paper}/{name}"


def test_each_task_class_is_in_its_papers_task_module():
    from facebench.config import TASK_CLASSES

    assert set(TASK_CLASSES) == {"landmarks", "heatmaps", "recognition", "detection"}
    papers = set()
    for path in TASK_CLASSES.values():
        module, name = path.rsplit(".", 1)
        assert module.startswith("facebench.papers.") and module.endswith(".task"), path
        assert isinstance(getattr(importlib.import_module(module), name), type), path
        papers.add(module.split(".")[2])
    assert papers == set(PAPERS)
