"""The history store's search: the paths and values it takes, and the containment
rule the Redis side of a combined listing applies (``combined._contains``) against
PostgreSQL's own ``@>`` on the same documents (the machine's server)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fanout._errors import ConfigError
from tests import pg_support

pg_support.require_postgres()

from fanout._postgres.combined import _contains  # noqa: E402
from fanout._postgres.store import parse_search, search_clause  # noqa: E402

DOCS: list[Any] = [
    {"user_id": 42, "tier": "gold", "tags": ["a", "b"], "n": {"x": 1.5}},
    {"user_id": "42", "tier": None, "tags": [], "n": {"x": 1}},
    {"user_id": 42.0, "ok": True, "tags": ["b"]},
    [1, 2, {"a": 1}],
    "42",
    42,
    None,
]


def test_search_paths_and_values() -> None:
    assert parse_search(["data.user_id=42", 'data.tier="gold"', "output=7", "data.s=x y"]) == {
        "data.user_id": 42, "data.tier": "gold", "output": 7, "data.s": "x y"}
    assert search_clause("data.a.b", 1) == ("event_data", {"a": {"b": 1}})
    assert search_clause("output.total", 3) == ("output", {"total": 3})
    for bad, why in (("user_id=1", "starts with data."), ("data=1", "name a field"),
                     ("data..x=1", "invalid search path"), ("data.x", "use <path>=<value>")):
        with pytest.raises(ConfigError, match=why):
            parse_search([bad])


def test_containment_agrees_with_postgres() -> None:
    wants: list[Any] = [{"user_id": 42}, {"user_id": "42"}, {"tier": "gold"}, {"tier": None},
                        {"tags": ["b"]}, {"tags": []}, {"n": {"x": 1}}, {"n": {"x": 1.5}},
                        {"ok": True}, {"ok": 1}, [{"a": 1}], [2], 42, "42", {}, {"tags": "b"}, 2]
    with pg_support.admin() as conn:
        for doc in DOCS:
            for want in wants:
                row = conn.execute("SELECT %s::jsonb @> %s::jsonb",
                                   (json.dumps(doc), json.dumps(want))).fetchone()
                assert row is not None
                assert _contains(doc, want) == row[0], (doc, want)


def test_retention_deletes_the_runs_that_ended_before_it() -> None:
    import os
    import time

    from fanout._postgres.copier import Copier
    from fanout._postgres.store import PgHistory

    url = f"{pg_support.SERVER}/fanout_test_{os.getpid()}_retention"
    pg_support.create_database(url)
    h = PgHistory(url)
    try:
        h.create_schema()
        h.create_schema()  # idempotent
        now = time.time()
        old = {"st": "completed", "fk": "a:f", "c": repr(now - 41 * 86400),
               "t1": repr(now - 40 * 86400)}
        new = {"st": "failed", "fk": "a:f", "c": repr(now - 10), "t1": repr(now - 5)}
        assert h.upsert([("old", old), ("new", new), ("new", new)]) == 3  # one row each
        assert h.count() == 2
        copier = Copier(lambda: None, h, retention_days=30)  # type: ignore[arg-type,return-value]
        copier._retention()
        assert [r.run_id for r in h.runs().runs] == ["new"]
        h.upsert([("old2", old)])
        copier._retention()  # once an hour, not every round
        assert h.count() == 2
    finally:
        h.close()
        pg_support.drop_database(url)
