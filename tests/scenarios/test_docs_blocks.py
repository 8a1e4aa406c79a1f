"""Every Python block of the README and of the concept and how-to pages runs as written (blocks marked
``<!-- not-run: reason -->`` only compile). Each page's blocks run in order in one
namespace that starts with what the pages assume: ``fanout`` imported, and ``app`` and
``client`` on the embedded (in-memory) broker and store. Pages with their own tests
(quickstart, testing, middleware, HTTP events, porting) are run there."""

from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = ["concepts/events.md", "concepts/steps.md", "concepts/flow-control.md",
         "concepts/schedules.md", "concepts/execution-model.md", "concepts/versioning.md",
         "howto/observability.md", "howto/deployment.md", "howto/django.md", "../README.md"]
BLOCK = re.compile(r"(<!-- not-run:[^>]*-->\s*\n)?```python\n(.*?)```", re.S)


def blocks(page: str) -> list[tuple[bool, str]]:
    return [(not m.group(1), textwrap.dedent(m.group(2)))
            for m in BLOCK.finditer((DOCS / page).read_text())]


@pytest.mark.parametrize("page", PAGES)
def test_every_block_of_the_page_runs(page: str) -> None:
    import fanout
    from fanout.testing import embedded_celery

    app = embedded_celery(f"docs-{page}")
    ns: dict[str, Any] = {
        "__name__": f"docs_{Path(page).stem}", "fanout": fanout, "app": app,
        "client": fanout.Fanout("docs", celery=app, redis_url=f"memory://docs-{page}"),
    }
    found = blocks(page)
    assert found, f"{page} has no Python block"
    for i, (runs, code) in enumerate(found):
        compiled = compile(code, f"{page} block {i + 1}", "exec",
                           flags=0 if runs else ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        if runs:
            exec(compiled, ns)  # noqa: S102
