"""The history store's version and event-name filters (the tags table) against the
rule they implement, on every combination with a function, a status, a time bound and
paging; a run copied again with other tags; and the migration of a database made
before the tags table (``create_schema`` fills it once from the rows there)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests import pg_support

pg_support.require_postgres()

from fanout._postgres.store import SCHEMA, TABLE, TAGS, PgHistory, row_of  # noqa: E402

URL = f"{pg_support.SERVER}/fanout_test_{os.getpid()}_tags"
BASE = 1_700_000_000.0


def _record(i: int) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "st": ("completed", "failed", "cancelled")[i % 3], "fk": f"app:fn{i % 4}",
        "fn": f"fn{i % 4}", "app": "app", "c": repr(BASE + (i // 2)),  # pairs share a ms
        "v": f"v{i % 3}", "ev": [f"e{i}"],
    }
    if i % 5 == 0:  # a run with a pass on another version
        rec["vs"] = [f"v{i % 3}", "v9"]
    if i % 7 == 0:  # a batch of two events of two names
        rec["events"] = [{"name": "shop/a", "data": {}}, {"name": "shop/b", "data": {}}]
    else:
        rec["event"] = {"name": f"shop/{'ab'[i % 2]}", "data": {"i": i}}
    return rec


RECORDS = {f"run-{i:03d}": _record(i) for i in range(120)}


@pytest.fixture(scope="module")
def store() -> Iterator[PgHistory]:
    pg_support.create_database(URL)
    with pg_support.admin_of(URL) as conn:
        conn.execute(SCHEMA.split(";")[0])  # the table as an earlier version made it
        conn.execute(f"CREATE INDEX {TABLE}_version ON {TABLE} (version)")
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {TABLE} (run_id, app, fn_key, fn_id, status, version, "
                            "versions, created_ms, created_at, started_at, ended_at, event_names, "
                            "event_ids, event_data, output, error, search, record) VALUES ("
                            + ", ".join(["%s"] * 18) + ")",
                            [row_of(rid, rec) for rid, rec in list(RECORDS.items())[:60]])
    h = PgHistory(URL)
    h.create_schema()  # the migration: the tags of the 60 rows there
    h.create_schema()  # again: nothing more
    h.upsert(list(RECORDS.items())[60:])
    try:
        yield h
    finally:
        h.close()
        pg_support.drop_database(URL)


def _want(fn_key: str | None, status: str | None, version: str | None,
          event_name: str | None, since: float | None) -> list[str]:
    out = []
    for rid, rec in RECORDS.items():
        row = row_of(rid, rec)
        if fn_key and rec["fk"] != fn_key or status and rec["st"] != status:
            continue
        if version and version not in row[6] or event_name and event_name not in row[11]:
            continue
        if since is not None and row[7] < since * 1000:
            continue
        out.append((row[7], rid))
    return [rid for _ms, rid in sorted(out, key=lambda x: (x[0], x[1].encode()), reverse=True)]


def test_a_database_made_before_the_tags_table_is_migrated(store: PgHistory) -> None:
    with pg_support.admin_of(URL) as conn:
        tags = conn.execute(f"SELECT count(*), count(DISTINCT (tag, tag_run)) FROM {TAGS}"
                            ).fetchone()
        old = conn.execute(f"SELECT to_regclass('{TABLE}_version')").fetchone()
    per_run = sum(len({*row_of(r, x)[6]}) + len({*row_of(r, x)[11]}) for r, x in RECORDS.items())
    assert tags == (2 * per_run, 2 * per_run)  # each tag, and again under the function
    assert old == (None,)  # the index the tags replace is gone


@pytest.mark.parametrize("fn_key,status", list(itertools.product(
    (None, "app:fn1"), (None, "failed"))))
def test_the_filters_give_the_rule_s_runs_in_order_and_page_both_ways(
        store: PgHistory, fn_key: str | None, status: str | None) -> None:
    checked = 0
    for version, event_name, since in itertools.product(
            (None, "v1", "v9", "v404"), (None, "shop/a", "shop/b"), (None, BASE + 30)):
        if version is None and event_name is None:
            continue
        want = _want(fn_key, status, version, event_name, since)
        kw: dict[str, Any] = dict(fn_key=fn_key, status=status, version=version,
                                  event_name=event_name, since=since)
        got, cursor, pages = [], None, []
        while True:
            page = store.runs(limit=4, cursor=cursor, **kw)
            assert page.total == len(want)
            pages.append(page)
            got += [x.run_id for x in page.runs]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert got == want, kw
        if len(pages) > 2:
            back = store.runs(limit=4, cursor=pages[2].prev_cursor, **kw)
            assert [x.run_id for x in back.runs] == [x.run_id for x in pages[1].runs]
        excluded = store.runs(limit=500, exclude=want[:3], **kw)
        assert [x.run_id for x in excluded.runs] == want[3:]
        assert excluded.total == max(0, len(want) - 3)
        checked += bool(want)
    assert checked >= 6  # the rule found runs for most combinations


def test_a_run_copied_again_keeps_only_its_new_tags(store: PgHistory) -> None:
    rid = "run-001"
    rec = dict(RECORDS[rid], v="v7", vs=["v7"], event={"name": "shop/z", "data": {}})
    store.upsert([(rid, rec)])
    try:
        assert [x.run_id for x in store.runs(version="v7").runs] == [rid]
        assert [x.run_id for x in store.runs(event_name="shop/z", fn_key="app:fn1").runs] == [rid]
        assert rid not in [x.run_id for x in store.runs(version="v1", limit=500).runs]
    finally:
        store.upsert([(rid, RECORDS[rid])])
    assert rid in [x.run_id for x in store.runs(version="v1", limit=500).runs]
    assert store.runs(version="v7").total == 0
