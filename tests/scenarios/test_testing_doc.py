"""docs/howto/testing.md: every code block runs, and the tests it defines pass."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parents[2] / "docs" / "howto" / "testing.md"
BLOCK = re.compile(r"^```python([^\n]*)\n(.*?)^```", re.S | re.M)


def blocks() -> list[tuple[str, str]]:
    return [(m.group(1).strip(), m.group(2)) for m in BLOCK.finditer(DOC.read_text())]


def test_the_doc_has_runnable_blocks_and_one_marked_sketch() -> None:
    found = blocks()
    assert len([b for info, b in found if "no-run" not in info]) >= 4
    assert [info for info, _ in found if info] == ["no-run"]


def test_every_block_runs_and_its_tests_pass() -> None:
    ns: dict[str, Any] = {"__name__": "testing_doc"}
    ran: list[str] = []
    for info, code in blocks():
        if "no-run" in info:
            compile(code, str(DOC), "exec")  # the sketch still parses
            continue
        ns = dict(ns)  # each block sees the names of the ones before it
        exec(compile(code, str(DOC), "exec"), ns)  # noqa: S102
        for name, value in list(ns.items()):
            if name.startswith("test_") and callable(value) and name not in ran:
                value()
                ran.append(name)
    assert "test_an_approved_order_ships" in ran and "test_welcome" in ran
    defined = sum(len(re.findall(r"^def test_", code, re.M)) for info, code in blocks() if not info)
    assert len(ran) == defined == 9
