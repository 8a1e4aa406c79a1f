"""Every Python block of the README and of the concept and how-to pages runs as written (blocks marked
``<!-- not-run: reason -->`` only compile). Each page's blocks run in order in one
namespace that starts with what the pages assume: ``fanout`` imported, and ``app`` and
``client`` on the embedded (in-memory) broker and store. Pages with their own tests
(quickstart, testing, middleware, HTTP events, porting) are run there."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = ["concepts/events.md", "concepts/steps.md", "concepts/flow-control.md",
         "concepts/schedules.md", "concepts/execution-model.md", "concepts/versioning.md",
         "howto/observability.md", "howto/bulk-actions.md", "howto/deployment.md",
         "howto/django.md",
         "reference/versioning-policy.md", "../README.md"]
BLOCK = re.compile(r"(<!-- not-run:[^>]*-->\s*\n)?```python\n(.*?)```", re.S)


def blocks(page: str) -> list[tuple[bool, str]]:
    return [(not m.group(1), textwrap.dedent(m.group(2)))
            for m in BLOCK.finditer((DOCS / page).read_text())]


PRELUDE = """
import fanout
from fanout.testing import embedded_celery
app = embedded_celery("docs")
client = fanout.Fanout("docs", celery=app, redis_url="memory://docs")
"""


@pytest.mark.parametrize("page", PAGES)
def test_every_block_of_the_page_runs(page: str, tmp_path: Path) -> None:
    found = blocks(page)
    assert found, f"{page} has no Python block"
    script = [PRELUDE]
    for i, (runs, code) in enumerate(found):
        # Every block compiles; the runnable ones run, in order, in one process of
        # their own (a page may set process-wide state, such as a tracer provider).
        compile(code, f"{page} block {i + 1}", "exec",
                flags=0 if runs else ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        if runs:
            script.append(f"# --- {page} block {i + 1}\n{code}")
    path = tmp_path / "page.py"
    path.write_text("\n".join(script))
    res = subprocess.run([sys.executable, str(path)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(DOCS.parent)})
    assert res.returncode == 0, f"{page}:\n{res.stderr[-3000:]}"
