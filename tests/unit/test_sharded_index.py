"""The run indexes in shards (as on a Redis Cluster) read exactly as one set: the same
runs, in the same order, with the same cursors, totals and pages back, as a store
whose indexes are single sets holding the same entries (many runs per millisecond,
runs still in the unsharded set of an earlier version)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis

from fanout._redis.history import History
from fanout._redis.keyspace import INDEX_SHARDS, Keyspace
from fanout._redis.merged_index import parts
from fanout._redis.run_index import RunIndex
from fanout._redis.store import Store
from tests.support import url_for

N, BASE = 300, 1_700_000_000_000
FNS = ("app:one", "app:two")


def _fields(fk: str, created_ms: int) -> dict[str, str]:
    app, fn = fk.split(":")
    return {"st": "completed", "fn": fn, "app": app, "fk": fk, "c": repr(created_ms / 1000),
            "ev": "[]", "event": "{}", "seq": "1", "att": "0"}


@pytest.fixture(scope="module")
def stores() -> Iterator[tuple[Store, Store]]:
    r = redis.Redis.from_url(url_for(__name__))
    r.flushdb()
    one, sharded = Store(r, prefix="one"), Store(r, prefix="sh")
    sharded.keys = Keyspace("sh", cluster=True)  # as on a cluster
    pipe = r.pipeline(transaction=False)
    for i in range(N):
        rid, fk = f"run-{i:04d}-{(i * 7919) % 1000:03d}", FNS[i % 3 == 0]
        ms = BASE + i // 6  # six runs in most milliseconds
        for s in (one, sharded):
            pipe.hset(s.run_key(rid), mapping=_fields(fk, ms))
        pipe.zadd(one.keys.runs_index, {rid: ms})
        pipe.zadd(one.keys.fn_index(fk), {rid: ms})
        # The oldest 40 in the unsharded sets of an earlier version.
        old = i < 40
        pipe.zadd(sharded.keys.runs_index if old else sharded.keys.runs_index_of(rid), {rid: ms})
        pipe.zadd(sharded.keys.fn_index(fk) if old else sharded.keys.fn_index_of(fk, rid),
                  {rid: ms})
    pipe.execute()
    yield one, sharded
    r.flushdb()


def test_a_run_is_listed_in_the_shard_of_its_id(stores: tuple[Store, Store]) -> None:
    _one, sh = stores
    keys = sh.keys
    assert len(keys.runs_index_shards) == INDEX_SHARDS
    assert keys.runs_index_of("r1") == keys.runs_index_of("r1") in keys.runs_index_shards
    assert len({keys.runs_index_of(f"r{i}") for i in range(500)}) == INDEX_SHARDS
    every = parts(keys.runs_indexes("app:one"))
    assert len(every) == INDEX_SHARDS + 1 and every[-1] == keys.fn_index("app:one")
    assert keys.fn_index_of("app:one", "r1") in every
    assert Keyspace("x").runs_indexes() == "x:idx:runs"  # one Redis: one set
    tags = {k[k.index("{"):] for k in keys.runs_index_shards}
    assert len(tags) == INDEX_SHARDS


def _pages(h: History, fn_key: str | None, limit: int,
           **kw: float) -> list[tuple[list[str], str | None, str | None, int | None]]:
    out, cursor = [], None
    while True:
        page = h.runs(fn_key=fn_key, limit=limit, cursor=cursor, **kw)
        out.append(([s.run_id for s in page.items], page.next_cursor, page.prev_cursor,
                    page.total))
        if page.next_cursor is None:
            return out
        cursor = page.next_cursor


@pytest.mark.parametrize("fn_key", [None, *FNS])
def test_pages_cursors_and_totals_match_one_set(stores: tuple[Store, Store],
                                                fn_key: str | None) -> None:
    one, sh = stores
    a, b = _pages(History(one), fn_key, 7), _pages(History(sh), fn_key, 7)
    assert b == a
    ids = [rid for page, *_ in a for rid in page]
    want = N if fn_key is None else sum(1 for i in range(N) if FNS[i % 3 == 0] == fn_key)
    assert len(ids) == len(set(ids)) == want and a[0][3] == want
    assert History(sh).count_runs(fn_key) == want


def test_paging_back_matches_one_set(stores: tuple[Store, Store]) -> None:
    one, sh = stores
    for h in (History(one), History(sh)):
        fwd = _pages(h, None, 7)
        back: list[list[str]] = []
        cursor = fwd[20][2]  # the 21st page's way back
        while cursor is not None:
            page = h.runs(limit=7, cursor=cursor)
            back.append([s.run_id for s in page.items])
            cursor = page.prev_cursor
        assert back == [p for p, *_ in fwd[:20]][::-1]


def test_windows_counts_walks_and_newest_match(stores: tuple[Store, Store]) -> None:
    one, sh = stores
    since, until = (BASE + 11) / 1000, (BASE + 37) / 1000
    for fn_key in (None, *FNS):
        kw = {"since": since, "until": until}
        assert _pages(History(sh), fn_key, 5, **kw) == _pages(History(one), fn_key, 5, **kw)
        assert History(sh).count_runs(fn_key, **kw) == History(one).count_runs(fn_key, **kw)
        walks = [[row for chunk in RunIndex(s).walk(s.keys.runs_indexes(fn_key), chunk=9)
                  for row in chunk] for s in (one, sh)]
        assert walks[1] == walks[0] and len(walks[0]) > 0
    assert sh.run_ids(limit=50) == one.run_ids(limit=50)
    assert sh.run_ids(fn_key="app:one", limit=13) == one.run_ids(fn_key="app:one", limit=13)


def test_the_shards_are_pruned(stores: tuple[Store, Store]) -> None:
    _one, sh = stores
    assert set(sh.keys.runs_index_shards) <= set(
        History(sh).prune(now=BASE / 1000 - 10 * 86400).indexes)


def test_a_new_run_goes_to_its_shard(stores: tuple[Store, Store]) -> None:
    _one, sh = stores
    rid = "fresh-run"
    sh.create_runs([(rid, "app:one", {**_fields("app:one", BASE + 999), "st": "queued",
                                      "ev": json.dumps([])})])
    assert sh.r.zscore(sh.keys.runs_index_of(rid), rid) == BASE + 999
    assert sh.r.zscore(sh.keys.fn_index_of("app:one", rid), rid) == BASE + 999
    assert sh.r.zscore(sh.keys.runs_index, rid) is None
    assert History(sh).runs(limit=1).items[0].run_id == rid
