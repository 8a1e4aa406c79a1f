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
