"""docs/howto/porting-from-inngest.md: every code block not marked ``not-run`` runs,
in order, in one namespace (the ported function, then its test), and the blocks
marked ``not-run`` still parse."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.support import url_for

DOC = Path(__file__).resolve().parents[2] / "docs" / "howto" / "porting-from-inngest.md"
BLOCK = re.compile(r"(<!-- not-run:[^>]*-->\s*\n)?```python\n(.*?)^```", re.S | re.M)


def blocks() -> list[tuple[bool, str]]:
    return [(m.group(1) is None, m.group(2)) for m in BLOCK.finditer(DOC.read_text())]


def test_the_porting_doc_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FANOUT_REDIS_URL", url_for(__name__))
    monkeypatch.setenv("CELERY_BROKER_URL", url_for(__name__))
    found = blocks()
    assert [run for run, _ in found] == [False, True, True]
    ns: dict[str, Any] = {"__name__": "porting_doc"}
    for run, code in found:
        compiled = compile(code, str(DOC), "exec")
        if run:
            exec(compiled, ns)  # noqa: S102
    assert ns["run"].output == {"reminded": True} and ns["paid"].output == {"reminded": False}
