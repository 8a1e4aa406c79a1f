"""Import cycles in a package, by strongly connected components of its import graph.

Which imports count is a choice: an import made when the module loads, one made for
type checking only (under ``if TYPE_CHECKING:``), and one made inside a function (when
it is first called) all tie two modules together for a reader, so by default all of
them count.  ``tests/unit/test_import_cycles.py`` holds fanout to none at all.

From the command line, for any source tree (this one, or an older commit checked out
elsewhere)::

    .venv/bin/python -m tests.import_cycles [TREE] [--package fanout]

prints each cycle (a component of more than one module) three times: counting the
imports made at load time only, adding the type-checking ones, adding the in-function
ones.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import sys
from collections.abc import Iterable
from functools import cache
from pathlib import Path

import grimp

#: What an import is: made at load time, for type checking only, or inside a function.
KINDS = ("load", "type-checking", "in-function")


@cache
def _kinds(module: str) -> dict[int, str]:
    """The kind of each import statement of ``module``, by line."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    found: dict[int, str] = {}

    def walk(nodes: Iterable[ast.AST], kind: str) -> None:
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for line in range(node.lineno, (node.end_lineno or node.lineno) + 1):
                    found[line] = kind
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                walk(ast.iter_child_nodes(node), "in-function")
            elif isinstance(node, ast.If) and kind == "load" and _is_type_checking(node.test):
                walk(node.body, "type-checking")
                walk(node.orelse, kind)
            else:
                walk(ast.iter_child_nodes(node), kind)

    walk(tree.body, "load")
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def edges(graph: grimp.ImportGraph, counted: Iterable[str] = KINDS) -> dict[str, set[str]]:
    """importer -> the modules it imports by an import of a ``counted`` kind."""
    wanted = set(counted)
    out: dict[str, set[str]] = {m: set() for m in graph.modules}
    for importer in graph.modules:
        kinds = _kinds(importer)
        for imported in graph.find_modules_directly_imported_by(importer):
            details = graph.get_import_details(importer=importer, imported=imported)
            if any(kinds.get(d["line_number"], "load") in wanted for d in details):
                out[importer].add(imported)
    return out


def cycles(adjacent: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(adjacent.get(v, ())):
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

    for module in sorted(adjacent):
        if module not in index:
            visit(module)
    return sorted(found)


def package_cycles(package: str, counted: Iterable[str] = KINDS) -> list[list[str]]:
    graph = grimp.build_graph(package, exclude_type_checking_imports=False, cache_dir=None)
    return cycles(edges(graph, counted))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.import_cycles", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tree", nargs="?", default=".", help="the source tree holding the package")
    p.add_argument("--package", default="fanout")
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(args.tree).resolve()))
    for name in [m for m in sys.modules if m == args.package or m.startswith(args.package + ".")]:
        del sys.modules[name]
    for upto in range(1, len(KINDS) + 1):
        counted = KINDS[:upto]
        found = package_cycles(args.package, counted)
        modules = sum(len(c) for c in found)
        print(f"counting {' + '.join(counted)} imports: {len(found)} cycle(s), "
              f"{modules} module(s) in them")
        for comp in found:
            print(f"  {len(comp):3d}: {' '.join(comp)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
