"""The package's import graph: no cycle, and the layers DESIGN.md draws.

The graph is read from the source with :mod:`ast`, so it counts every import that can run:
at module level and inside functions, absolute (``import metalearn.x``, ``from metalearn
import x``) and relative. Imports under ``if TYPE_CHECKING:`` never run and are left out.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import metalearn

PACKAGE_DIR = Path(metalearn.__file__).parent

Graph = Mapping[str, set[str]]


@dataclass
class ImportGraph:
    """Package modules, the package modules each imports, and the outside packages it imports."""

    edges: dict[str, set[str]] = field(default_factory=dict)
    outside: dict[str, set[str]] = field(default_factory=dict)

    def reachable(self, start: str) -> set[str]:
        """The modules ``start`` imports, directly or through others (not ``start`` itself)."""
        seen: set[str] = set()
        todo = list(self.edges.get(start, ()))
        while todo:
            module = todo.pop()
            if module not in seen:
                seen.add(module)
                todo.extend(self.edges.get(module, ()))
        return seen - {start}


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Every module under ``root`` by dotted name (a package by its own name)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _run_time_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node that can run: all of them but the bodies of ``if TYPE_CHECKING:``."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def _base(module: str, is_package: bool, level: int) -> str:
    """The package a relative import of ``level`` dots starts from."""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    return ".".join(parts[: len(parts) - level + 1])


def _imported(
    node: ast.Import | ast.ImportFrom, module: str, is_package: bool
) -> Iterator[tuple[str, str | None]]:
    """What an import statement names: ``(x.y, None)`` for ``import x.y``, and for ``from x
    import z`` ``(x.z, x)``: the module x.z if there is one, else the name z of module x."""
    if isinstance(node, ast.Import):
        yield from ((alias.name, None) for alias in node.names)
        return
    base = node.module or ""
    if node.level:
        base = ".".join(p for p in (_base(module, is_package, node.level), base) if p)
    yield from ((f"{base}.{alias.name}", base) for alias in node.names)


def _resolve(name: str, modules: set[str]) -> str | None:
    """The package module ``name`` runs: itself, or its longest prefix that is one."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in modules:
            return ".".join(parts[:end])
    return None


def build_graph(sources: Mapping[str, tuple[str, bool]], package: str) -> ImportGraph:
    """The import graph of ``sources``: module name -> (its source, whether a package)."""
    graph = ImportGraph()
    modules = set(sources)
    for module, (source, is_package) in sources.items():
        edges: set[str] = set()
        outside: set[str] = set()
        graph.edges[module], graph.outside[module] = edges, outside
        for node in _run_time_nodes(ast.parse(source)):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for name, of_module in _imported(node, module, is_package):
                top = name.split(".")[0]
                if top != package:
                    outside.add(top)
                    continue
                target = name if name in modules else _resolve(of_module or name, modules)
                if target is not None and target != module:
                    edges.add(target)
    return graph


def package_graph() -> ImportGraph:
    names = module_names(PACKAGE_DIR, "metalearn")
    sources = {
        name: (path.read_text(encoding="utf-8"), path.name == "__init__.py")
        for name, path in names.items()
    }
    return build_graph(sources, "metalearn")


def find_cycle(graph: Graph) -> list[str] | None:
    """A cycle of ``graph`` as a path that ends where it starts, or None."""
    state: dict[str, str] = {}  # "open" while on the current path, then "done"
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


# -- the finder and the parser on made-up input ---------------------------------------


@pytest.mark.parametrize(
    ("graph", "cycle"),
    [
        pytest.param({"a": {"b"}, "b": {"c"}, "c": set()}, None, id="chain"),
        pytest.param({"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set()}, None, id="diamond"),
        pytest.param({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"], id="three"),
        pytest.param({"a": {"a"}}, ["a", "a"], id="self"),
        pytest.param({"x": {"a"}, "a": {"b"}, "b": {"a"}}, ["a", "b", "a"], id="behind-a-chain"),
    ],
)
def test_find_cycle(graph: Graph, cycle: list[str] | None) -> None:
    assert find_cycle(graph) == cycle


def test_parser_counts_lazy_and_relative_imports_but_not_type_checking_ones() -> None:
    results = """
from __future__ import annotations
from typing import TYPE_CHECKING
import duckdb
from . import _errors
from ._queries import Window
if TYPE_CHECKING:
    from metalearn.plots import plot_patterns
else:
    import metalearn._csv

class Report:
    def plot(self):
        from metalearn import plots
        return plots
"""
    sources = {
        "pkg": ("from pkg._results import Report\n", True),
        "pkg._results": (results.replace("metalearn", "pkg"), False),
        "pkg._errors": ("", False),
        "pkg._queries": ("Window = 1\n", False),
        "pkg._csv": ("", False),
        "pkg.plots": ("from pkg._results import Report\n", False),
    }
    graph = build_graph(sources, "pkg")
    assert graph.edges["pkg._results"] == {"pkg._errors", "pkg._queries", "pkg._csv", "pkg.plots"}
    assert graph.outside["pkg._results"] == {"__future__", "typing", "duckdb"}
    assert find_cycle(graph.edges) == ["pkg._results", "pkg.plots", "pkg._results"]
    assert graph.reachable("pkg") == set(sources) - {"pkg"}


# -- the package ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> ImportGraph:
    return package_graph()


def test_every_module_is_in_the_graph(graph: ImportGraph) -> None:
    assert {"metalearn", "metalearn._results", "metalearn.plots", "metalearn.importers"} <= set(
        graph.edges
    )
    assert "metalearn._drawing" in graph.edges["metalearn._results"]  # the lazy one counts


def test_the_package_has_no_import_cycle(graph: ImportGraph) -> None:
    cycle = find_cycle(graph.edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("module", ["metalearn._queue", "metalearn._execution"])
def test_scheduling_does_not_import_the_warehouse(graph: ImportGraph, module: str) -> None:
    assert "metalearn._warehouse" not in graph.edges[module]


def test_the_queue_reaches_no_module_that_imports_duckdb(graph: ImportGraph) -> None:
    reached = graph.reachable("metalearn._queue") | {"metalearn._queue"}
    assert not [m for m in sorted(reached) if "duckdb" in graph.outside[m]]


@pytest.mark.parametrize("module", ["metalearn.plots", "metalearn.export"])
def test_plots_and_export_never_reach_a_database(graph: ImportGraph, module: str) -> None:
    reached = graph.reachable(module) | {module}
    databases = {"duckdb", "sqlalchemy", "adbc_driver_manager", "adbc_driver_sqlite"}
    assert {m: graph.outside[m] & databases for m in reached if graph.outside[m] & databases} == {}


@pytest.mark.parametrize("module", ["metalearn._analysis", "metalearn._patterns"])
def test_computations_import_no_scheduling_plots_or_export(graph: ImportGraph, module: str) -> None:
    above = {"metalearn._queue", "metalearn._execution", "metalearn.plots", "metalearn.export"}
    assert graph.edges[module] & above == set()
