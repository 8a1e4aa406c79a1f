"""No import cycles in fanout.

Imports made for type checking only, and imports inside a function (made when it
is first called), do not count: a cycle here is one that module loading follows.
"""

from __future__ import annotations

import ast
import importlib.util
from functools import cache

import pytest

grimp = pytest.importorskip("grimp", reason="grimp comes with import-linter (the dev extra)")


@cache
def _top_level_lines(module: str) -> frozenset[int]:
    """The lines of a module's imports that run when it is loaded (not in a function)."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    tree = ast.parse(open(spec.origin, encoding="utf-8").read())
    lines: set[int] = set()

    def walk(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                lines.add(node.lineno)
            elif isinstance(node, (ast.If, ast.Try)):
                walk(node.body)
                walk(node.orelse)
                for handler in getattr(node, "handlers", []):
                    walk(handler.body)
                walk(getattr(node, "finalbody", []))

    walk(tree.body)
    return frozenset(lines)


def _loaded(graph: grimp.ImportGraph, importer: str) -> list[str]:
    """What loading ``importer`` imports."""
    lines = _top_level_lines(importer)
    return sorted(
        imported for imported in graph.find_modules_directly_imported_by(importer)
        if any(d["line_number"] in lines
               for d in graph.get_import_details(importer=importer, imported=imported))
    )


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in _loaded(graph, v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_fanout_has_no_import_cycles() -> None:
    graph = grimp.build_graph("fanout", exclude_type_checking_imports=True)
    assert _cycles(graph) == []


def test_the_engine_and_the_step_tools_do_not_import_each_other_back() -> None:
    graph = grimp.build_graph("fanout")  # not even inside a function
    for tools in ("step_tools", "group_tools", "context", "step_types"):
        assert graph.find_shortest_chain("fanout._core.engine", f"fanout._core.{tools}") is None
