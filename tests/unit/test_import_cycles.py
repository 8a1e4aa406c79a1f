"""No import cycles in fanout (imports for type checking only do not count)."""

from __future__ import annotations

import grimp


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
        for w in sorted(graph.find_modules_directly_imported_by(v)):
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
    graph = grimp.build_graph("fanout")
    assert graph.find_shortest_chain("fanout._core.engine", "fanout._core.steps") is None
