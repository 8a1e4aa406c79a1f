"""docs/howto/middleware.md: every code block not marked not-run runs as written."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from tests.userpath.conftest import code_blocks

DOC = Path(__file__).resolve().parents[2] / "docs" / "howto" / "middleware.md"


def test_the_doc_has_its_examples() -> None:
    assert len(code_blocks(DOC)) == 4


@pytest.mark.parametrize("index", range(4))
def test_block_runs(index: int) -> None:
    ns: dict[str, Any] = {"__name__": f"middleware_doc_{index}"}
    try:
        exec(compile(code_blocks(DOC)[index], str(DOC), "exec"), ns)  # noqa: S102
    finally:
        logging.getLogger("billing").handlers.clear()
