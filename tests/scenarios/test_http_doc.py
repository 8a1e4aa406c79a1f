"""docs/howto/http-events.md: its Python blocks run, in order, against a real Redis."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
import redis

import fanout.celeryconfig
from tests.support import url_for
from tests.userpath.conftest import code_blocks

DOC = Path(__file__).resolve().parents[2] / "docs" / "howto" / "http-events.md"


def test_the_how_to_runs(clean_db: redis.Redis, monkeypatch: pytest.MonkeyPatch,
                         request: pytest.FixtureRequest) -> None:
    monkeypatch.setenv("FANOUT_REDIS_URL", url_for(__name__))
    monkeypatch.setenv("CELERY_BROKER_URL", url_for(__name__))
    # fanout.celeryconfig reads the environment when imported: read it again (and
    # again after the test, for whatever runs next).
    importlib.reload(fanout.celeryconfig)
    request.addfinalizer(lambda: importlib.reload(fanout.celeryconfig))
    blocks = code_blocks(DOC)
    assert len(blocks) == 7
    ns: dict[str, Any] = {"__name__": "http_events_doc"}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), ns)  # noqa: S102
    # The signed and GitHub events were stored (no worker runs here: 202 never waits).
    assert clean_db.exists("fanout:ev:{INV-1-paid}")
    assert clean_db.exists("fanout:ev:{b5a5c0de-0000-4000-8000-000000000001}")
    assert ns["new"].hash.encode() in b"".join(clean_db.hgetall("fanout:ingest:keys").values())
