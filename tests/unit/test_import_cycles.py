"""No import cycles in fanout, whatever kind of import ties the modules together: one
made when a module loads, one made for type checking only, or one made inside a
function.  The graph and the count are ``tests/import_cycles.py`` (which also runs on
any tree: ``python -m tests.import_cycles TREE``)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("grimp", reason="grimp comes with import-linter (the dev extra)")

from tests.import_cycles import KINDS, cycles, package_cycles  # noqa: E402

#: The step tools and their typed views import each other for type checking; they are
#: being split up by the typed step API (issue 27, item 4), which removes the cycle.
#: The test fails once it is gone, so that this line goes with it.
PENDING = [["fanout._core.step_types", "fanout._core.steps"]]


def test_fanout_has_no_import_cycles() -> None:
    found = package_cycles("fanout", KINDS)
    assert [c for c in found if c not in PENDING] == []
    assert all(c in found for c in PENDING), "the cycle is gone: empty PENDING"


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
    assert graph.find_shortest_chain("fanout._core.engine", "fanout._core.steps") is None
