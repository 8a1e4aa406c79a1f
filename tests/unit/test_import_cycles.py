"""No import cycles in fanout, whatever kind of import ties the modules together: one
made when a module loads, one made for type checking only, or one made inside a
function.  The graph and the count are ``tests/import_cycles.py`` (which also runs on
any tree: ``python -m tests.import_cycles TREE``)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("grimp", reason="grimp comes with import-linter (the dev extra)")

from tests.import_cycles import KINDS, cycles, package_cycles  # noqa: E402


def test_fanout_has_no_import_cycles() -> None:
    assert package_cycles("fanout", KINDS) == []


def test_a_cycle_is_found_and_a_module_alone_is_none() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}, "e": set()}
    assert cycles(edges) == [["a", "b", "c"]]


def test_type_checking_and_in_function_imports_count(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "cycle_probe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\n"
                              "if TYPE_CHECKING:\n    from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from . import c\n")
    (pkg / "c.py").write_text("from . import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert package_cycles("cycle_probe", ("load",)) == []
    assert package_cycles("cycle_probe", ("load", "type-checking")) == []
    assert package_cycles("cycle_probe", KINDS) == [
        ["cycle_probe.a", "cycle_probe.b", "cycle_probe.c"]]


def test_the_engine_and_the_step_tools_do_not_import_each_other_back() -> None:
    import grimp

    graph = grimp.build_graph("fanout", cache_dir=None)  # not even inside a function
    for tools in ("step_tools", "group_tools", "context", "step_types"):
        assert graph.find_shortest_chain("fanout._core.engine", f"fanout._core.{tools}") is None
