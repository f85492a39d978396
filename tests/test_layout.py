"""The package's rooms: no import circle, one owner per outside library, no hand-written plumbing."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bench"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str) -> set[str]:
    """Every module (bench's or not) that ``name`` imports, at any depth of its code."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found |= {f"{target}.{alias.name}" for alias in node.names}
    return found


def bench_graph() -> dict[str, set[str]]:
    """bench module -> the bench modules it imports (a package's __init__ stands for the package)."""
    graph = {}
    for name in MODULES:
        targets = set()
        for imported in imports_of(name):
            while imported and imported not in MODULES:
                imported = imported.rpartition(".")[0]
            if imported and imported != name and not name.startswith(imported + "."):
                targets.add(imported)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def reach(graph: dict[str, set[str]], start: str) -> dict[str, list[str]]:
    """Every module ``start`` imports at any depth, each with one import chain that gets there."""
    chains = {start: [start]}
    todo = [start]
    while todo:
        node = todo.pop(0)  # breadth first: each chain is a shortest one
        for nxt in sorted(graph.get(node, ())):
            if nxt not in chains:
                chains[nxt] = chains[node] + [nxt]
                todo.append(nxt)
    del chains[start]
    return chains


def test_reach_follows_imports_through_intermediate_modules():
    graph = {"train": {"config", "data"}, "config": {"models"}, "models": {"tracking"}, "data": set(),
             "tracking": set(), "search": {"train"}}
    assert reach(graph, "train") == {"config": ["train", "config"], "data": ["train", "data"],
                                     "models": ["train", "config", "models"],
                                     "tracking": ["train", "config", "models", "tracking"]}
    assert reach(graph, "tracking") == {}


def test_the_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle_among_benchs_modules():
    cycle = find_cycle(bench_graph())
    assert cycle is None, " -> ".join(cycle)


def owners(library: str) -> set[str]:
    return {name for name in MODULES if any(i == library or i.startswith(library + ".") for i in imports_of(name))}


@pytest.mark.parametrize("library, rooms", [
    ("mlflow", ("bench.tracking",)),
    ("optuna", ("bench.workqueue", "bench.search")),
    ("matplotlib", ("bench.report.charts",)),
    ("seaborn", ("bench.report.charts",)),
    ("jinja2", ("bench.report.pages",)),
])
def test_each_outside_library_has_one_room(library, rooms):
    strays = {name for name in owners(library) if not name.startswith(rooms)}
    assert not strays, f"{library} is imported outside {rooms}: {sorted(strays)}"


def test_the_trainer_knows_neither_tracking_nor_search():
    # Through any module it imports, too: bench.train -> X -> bench.tracking is the same coupling.
    chains = reach(bench_graph(), "bench.train")
    strays = [" -> ".join(chain) for module, chain in sorted(chains.items())
              if module.startswith(("bench.tracking", "bench.search", "bench.workqueue", "bench.suites"))]
    assert not strays, strays
    assert "bench.models" in chains and "bench.config" in chains  # what it does import is seen


def test_no_hand_written_plumbing_left():
    # Optuna's private heartbeat module, a hand-rolled fcntl lock, HTML assembled with html.escape.
    pattern = re.compile(r"storages\._heartbeat|\bfcntl\b|html\.escape")
    hits = [f"{path.relative_to(PACKAGE.parent)}:{i}" for path in MODULES.values()
            for i, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, hits


def test_report_templates_ship_with_the_package_and_escape():
    from bench.report import pages

    assert {p.name for p in (PACKAGE / "report" / "templates").glob("*.j2")} >= {"suite.html.j2", "study.html.j2"}
    assert pages._TEMPLATES.autoescape is True
    assert "bench.report" in (PACKAGE.parent / "pyproject.toml").read_text().split("[tool.setuptools.package-data]")[1]
