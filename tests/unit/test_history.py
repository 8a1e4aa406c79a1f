"""The history query layer against a real Redis: paging, filters, pruning, and the
cost of a query (Redis commands per listing) with 100k index entries."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from fanout._errors import ConfigError
from fanout._redis.history import History, parse_time
from fanout._redis.store import Store
from tests.support import url_for

BIG = 100_000


class CountingConnection(redis.connection.Connection):
    """Records every command sent and every round trip."""

    commands: list[str] = []
    round_trips = 0

    def send_command(self, *args: Any, **kwargs: Any) -> None:
        CountingConnection.commands.append(str(args[0]).upper())
        CountingConnection.round_trips += 1
        super().send_command(*args, **kwargs)

    def pack_commands(self, commands: Any) -> Any:
        cmds = list(commands)
        CountingConnection.commands.extend(str(c[0]).upper() for c in cmds)
        CountingConnection.round_trips += 1
        return super().pack_commands(cmds)

    @classmethod
    def reset(cls) -> None:
        cls.commands = []
        cls.round_trips = 0


def _counting_client() -> redis.Redis:
    pool = redis.ConnectionPool.from_url(url_for(__name__), connection_class=CountingConnection)
    return redis.Redis(connection_pool=pool)


@pytest.fixture(scope="module")
def store() -> Iterator[Store]:
    r = _counting_client()
    r.flushdb()
    yield Store(r, retention=7 * 86400)
    r.flushdb()


def _run_fields(fn_key: str, status: str, created: float, ev: str | None = None) -> dict[str, str]:
    app, fn = fn_key.split(":")
    return {"st": status, "fn": fn, "app": app, "fk": fn_key, "c": repr(created),
            "t0": repr(created + 0.01), "t1": repr(created + 0.05),
            "ev": json.dumps([ev] if ev else []), "event": "{}", "seq": "3", "att": "0",
            "s:a": json.dumps({"id": "a", "st": "completed", "out": "x" * 200})}


def _add_runs(store: Store, fn_key: str, n: int, *, hashes: int, base_ms: int,
              statuses: tuple[str, ...] = ("completed",)) -> list[str]:
    """n index entries (newest = highest score); hashes only for the newest ``hashes``."""
    ids = [f"{fn_key.replace(':', '-')}-{i:07d}" for i in range(n)]
    r = store.r
    for start in range(0, n, 20_000):
        pipe = r.pipeline(transaction=False)
        chunk = {rid: base_ms + i for i, rid in enumerate(ids[start:start + 20_000], start)}
        pipe.zadd(store.fn_index(fn_key), chunk)
        pipe.zadd(f"{store.p}:idx:runs", chunk)
        pipe.execute()
    pipe = r.pipeline(transaction=False)
    for i in range(max(0, n - hashes), n):
        st = statuses[i % len(statuses)]
        pipe.hset(store.run_key(ids[i]), mapping=_run_fields(fn_key, st, (base_ms + i) / 1000))
    pipe.execute()
    # The runs were written by hand: the backfill gives them their status entries.
    History(store).reindex(force=True)
    return ids


@pytest.fixture(scope="module")
def big(store: Store) -> list[str]:
    base = int((time.time() - 3600) * 1000)
    return _add_runs(store, "app:big", BIG, hashes=600, base_ms=base,
                     statuses=("completed", "completed", "failed", "running"))


def test_latest_50_of_100k_costs_o_limit_commands(store: Store, big: list[str]) -> None:
    hist = History(store)
    assert hist.count_runs("app:big") == BIG
    CountingConnection.reset()
    page = hist.runs(fn_key="app:big", limit=50)
    assert [r.run_id for r in page.items] == big[::-1][:50]
    # One ZCOUNT (the total) and one ZREVRANGEBYSCORE, then one HMGET per run, in two
    # round trips: O(limit), not O(N).
    assert CountingConnection.commands.count("ZREVRANGEBYSCORE") == 1
    assert CountingConnection.commands.count("HMGET") == 50
    assert len(CountingConnection.commands) == 52
    assert CountingConnection.round_trips == 2
    assert page.next_cursor is not None and page.total == BIG


def test_query_cost_does_not_grow_with_the_index(store: Store) -> None:
    base = int((time.time() - 1800) * 1000)
    _add_runs(store, "app:small", 60, hashes=60, base_ms=base)
    hist = History(store)
    CountingConnection.reset()
    hist.runs(fn_key="app:small", limit=50)
    small_cost = len(CountingConnection.commands)
    CountingConnection.reset()
    hist.runs(fn_key="app:big", limit=50)
    assert len(CountingConnection.commands) == small_cost


def test_paging_is_exact_across_ties(store: Store) -> None:
    ms = int((time.time() - 600) * 1000)
    r = store.r
    ids = [f"tie-{i}" for i in range(7)]
    for i, rid in enumerate(ids):  # three runs in the same millisecond, then four
        created = ms if i < 3 else ms + 1
        r.zadd(store.fn_index("app:ties"), {rid: created})
        r.hset(store.run_key(rid), mapping=_run_fields("app:ties", "completed", created / 1000))
    hist = History(store)
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        page = hist.runs(fn_key="app:ties", limit=2, cursor=cursor)
        seen.extend(x.run_id for x in page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == len(set(seen)) == 7


def test_status_filter_reads_its_index(store: Store, big: list[str]) -> None:
    hist = History(store)
    CountingConnection.reset()
    page = hist.runs(fn_key="app:big", status="failed", limit=20)
    assert len(page.items) == 20 and all(r.status == "failed" for r in page.items)
    # The failed runs' own index: one HMGET per run on the page, nothing scanned.
    assert CountingConnection.commands.count("HMGET") == 20
    assert page.total == 150 == hist.count_runs("app:big", status="failed")
    active = hist.runs(fn_key="app:big", status="active", limit=5)
    assert {r.status for r in active.items} == {"running"} and active.total == 150
    running = hist.runs(fn_key="app:big", status="running", limit=500)
    assert len(running.items) == 150 and running.next_cursor is None
    both = hist.runs(fn_key="app:big", status="failed,running", limit=1000)
    assert both.total == 300 and len(both.items) == 300
    # No run was cancelled: an empty page that says so, not a scan that gave up.
    page = hist.runs(fn_key="app:big", status="cancelled", limit=5)
    assert page.items == [] and page.complete and page.total == 0 and page.next_cursor is None
    with pytest.raises(ConfigError, match="unknown run status 'nope'"):
        hist.runs(status="nope")


def test_paging_both_ways_with_a_total(store: Store, big: list[str]) -> None:
    hist = History(store)
    pages = []
    cursor = None
    while True:
        page = hist.runs(fn_key="app:big", status="failed", limit=40, cursor=cursor)
        assert page.total == 150
        pages.append(page)
        cursor = page.next_cursor
        if cursor is None:
            break
    ids = [r.run_id for p in pages for r in p.items]
    assert len(ids) == 150 == len(set(ids)) and [len(p.items) for p in pages] == [40, 40, 40, 30]
    assert pages[0].prev_cursor is None and all(p.prev_cursor for p in pages[1:])
    # Back from the last page: each page before it again, in the same order.
    for i in (3, 2, 1):
        back = hist.runs(fn_key="app:big", status="failed", limit=40, cursor=pages[i].prev_cursor)
        assert [r.run_id for r in back.items] == [r.run_id for r in pages[i - 1].items]
        assert (back.prev_cursor is None) == (i == 1)
        again = hist.runs(fn_key="app:big", status="failed", limit=40, cursor=back.next_cursor)
        assert [r.run_id for r in again.items] == [r.run_id for r in pages[i].items]


def test_time_window(store: Store, big: list[str]) -> None:
    hist = History(store)
    newest = hist.runs(fn_key="app:big", limit=1).items[0]
    assert newest.created_at is not None
    window = hist.runs(fn_key="app:big", since=newest.created_at - 0.009,
                       until=newest.created_at, limit=100)
    assert [r.run_id for r in window.items] == big[::-1][:10]
    assert window.next_cursor is None
    older = hist.runs(fn_key="app:big", until=newest.created_at - 0.010, limit=1)
    assert older.items[0].run_id == big[-11]


def test_expired_runs_are_skipped(store: Store) -> None:
    ms = int((time.time() - 300) * 1000)
    r = store.r
    r.zadd(store.fn_index("app:gone"), {"gone-1": ms, "gone-2": ms + 1, "gone-3": ms + 2})
    r.hset(store.run_key("gone-1"), mapping=_run_fields("app:gone", "failed", ms / 1000))
    r.hset(store.run_key("gone-3"), mapping=_run_fields("app:gone", "completed", ms / 1000))
    page = History(store).runs(fn_key="app:gone", limit=10)
    assert [x.run_id for x in page.items] == ["gone-3", "gone-1"]


def test_events_and_runs_of_an_event(store: Store) -> None:
    now = time.time()
    events = [(f"EV{i}", json.dumps({"name": f"shop/{'a' if i % 2 else 'b'}", "data": {"i": i},
                                    "id": f"EV{i}", "ts": int((now - 10 + i) * 1000)}),
               int((now - 10 + i) * 1000), f"shop/{'a' if i % 2 else 'b'}") for i in range(6)]
    store.store_events(events)
    store.r.sadd(f"{store.event_key('EV5')}:runs", "ev-run-1")
    store.r.hset(store.run_key("ev-run-1"), mapping=_run_fields("app:ev", "completed", now, "EV5"))
    hist = History(store)
    page = hist.events(limit=3)
    assert [e.event_id for e in page.items] == ["EV5", "EV4", "EV3"]
    assert page.items[0].run_count == 1 and page.items[0].data == {"i": 5}
    rest = hist.events(limit=10, cursor=page.next_cursor)
    assert [e.event_id for e in rest.items][:3] == ["EV2", "EV1", "EV0"]
    named = hist.events(name="shop/a", since=now - 60)
    assert [e.event_id for e in named.items] == ["EV5", "EV3", "EV1"]
    newer = hist.events(since=(now - 10 + 3), after_exclusive=True)
    assert [e.event_id for e in newer.items] == ["EV5", "EV4"]
    assert [x.run_id for x in hist.runs_of_event("EV5")] == ["ev-run-1"]
    assert hist.event("missing") is None


def test_prune_drops_only_what_expired(store: Store) -> None:
    r = store.r
    old_ms = int((time.time() - 8 * 86400) * 1000)
    r.zadd(store.fn_index("app:old"), {"old-gone": old_ms, "old-alive": old_ms + 1,
                                        "recent": int(time.time() * 1000)})
    r.zadd(f"{store.p}:idx:runs", {"old-gone": old_ms, "old-alive": old_ms + 1})
    r.hset(store.run_key("old-alive"), mapping=_run_fields("app:old", "sleeping", old_ms / 1000))
    r.zadd(f"{store.p}:idx:events", {"old-event": old_ms})
    rep = History(store).prune(batch=1)
    members = {m.decode() for m in r.zrange(store.fn_index("app:old"), 0, -1)}
    assert members == {"old-alive", "recent"}
    assert rep.runs_removed == 2 and rep.events_removed == 1
    assert r.zscore(f"{store.p}:idx:events", "old-event") is None
    assert r.zscore(f"{store.p}:idx:runs", "old-alive") is not None


def test_parse_time() -> None:
    now = 1_700_000_000.0
    assert parse_time("15m", now=now) == now - 900
    assert parse_time("2h ago", now=now) == now - 7200
    assert parse_time("7d", now=now) == now - 7 * 86400
    assert parse_time("now", now=now) == now
    assert parse_time("1700000000") == 1_700_000_000.0
    assert parse_time("2023-11-14T22:13:20Z") == 1_700_000_000.0
    assert parse_time("2023-11-14 22:13:20") == 1_700_000_000.0
    with pytest.raises(ConfigError, match="invalid time 'yesterday-ish'"):
        parse_time("yesterday-ish")


def _scripted_run(store: Store, rid: str, fn_key: str, created: float, data: dict[str, Any],
                  *, version: str = "v1") -> None:
    """A run created by the create_run script (the indexes written as a worker writes them)."""
    from fanout._core.run_record import new_run_fields

    app, fn = fn_key.split(":")
    fields = new_run_fields(fn, app, fn_key, {"name": "e", "data": data}, event_ids=[],
                            created=repr(created), creation={
                                "v": version,
                                "sa": json.dumps(["data.user_id", "output.order_id"])})
    store.create_runs([(rid, fn_key, fields)])


def _index_keys_holding(store: Store, rid: str) -> set[str]:
    return {k.decode() for k in store.r.scan_iter(match=f"{store.p}:idx:*", count=1000)
            if store.r.type(k) == b"zset" and store.r.zscore(k, rid) is not None}


def test_scripts_index_status_version_and_search(store: Store) -> None:
    keys, now = store.keys, time.time()
    _scripted_run(store, "ix-1", "app:ix", now - 5, {"user_id": 42})
    assert _index_keys_holding(store, "ix-1") == {
        keys.runs_index, keys.fn_index("app:ix"), keys.status_index("active", "app:ix"), keys.version_index("app:ix", "v1"),
        keys.version_index(None, "v1"), keys.search_index("app:ix", "data.user_id", "42"),
        keys.run_event_name_index("app:ix", "e"), keys.run_event_name_index(None, "e")}
    assert store.finish_run("ix-1", "", "failed", {"out": json.dumps({"order_id": "A 1"})}) == 1
    held = _index_keys_holding(store, "ix-1")
    assert keys.status_index("active", "app:ix") not in held
    assert {keys.status_index("failed"), keys.status_index("failed", "app:ix"),
            keys.search_index("app:ix", "output.order_id", "A%201"), keys.ended_index} <= held
    # The ended feed is scored by the end (now), not by the creation (5 s ago).
    assert abs(float(store.r.zscore(keys.ended_index, "ix-1") or 0) - time.time() * 1000) < 4000
    hist = History(store)
    assert [r.run_id for r in hist.runs(search={"output.order_id": "A 1"}).items] == ["ix-1"]
    assert hist.count_runs("app:ix", status="failed", version="v1") == 1


def test_search_values_are_keyed_alike_in_lua_and_python(store: Store) -> None:
    from fanout._core.search import value_part

    now = time.time()
    values: list[Any] = [7, 7.0, 4.5, "7", "a b/c|d", True, "x" * 64, -3, 1e20, "é"]
    for i, v in enumerate(values):
        _scripted_run(store, f"sv-{i}", "app:sv", now - 1, {"user_id": v})
    hist = History(store)
    for i, v in enumerate(values):
        part = value_part(v)
        assert part is not None
        key = store.keys.search_index("app:sv", "data.user_id", part)
        assert store.r.zscore(key, f"sv-{i}") is not None, (v, key)
        assert f"sv-{i}" in {r.run_id for r in hist.runs(
            fn_key="app:sv", search={"data.user_id": v}, limit=20).items}
    # 7, 7.0 and "7" are one value to search by.
    assert hist.count_runs("app:sv", search={"data.user_id": 7}) == 3
    # Objects, lists and texts over 64 bytes are not indexed; searching by one says so.
    _scripted_run(store, "sv-obj", "app:sv", now - 1, {"user_id": {"a": 1}})
    _scripted_run(store, "sv-long", "app:sv", now - 1, {"user_id": "x" * 65})
    assert not any("sa:" in k for k in _index_keys_holding(store, "sv-obj"))
    assert not any("sa:" in k for k in _index_keys_holding(store, "sv-long"))
    with pytest.raises(ConfigError, match="at most 64 bytes"):
        hist.runs(search={"data.user_id": "x" * 65})


def test_event_names_are_keyed_alike_in_lua_and_python(store: Store) -> None:
    from fanout._core.event import dumps
    from fanout._core.run_record import BATCH_KEY, EVENTS, new_run_fields

    now, hist = time.time(), History(store)
    names = ["plain/name", 'quo"te', "back\\slash", "é|x y%", "a" * 300]
    for i, name in enumerate(names):
        fields = new_run_fields("en", "app", "app:en", {"name": name, "data": {}},
                                event_ids=[], created=repr(now - 1))
        store.create_runs([(f"en-{i}", "app:en", fields)])
    # Written by Python (json.dumps, keys in another order) rather than fanout's dumps.
    fields = new_run_fields("en", "app", "app:en", {}, event_ids=[], created=repr(now - 1))
    fields["event"] = json.dumps({"data": {"k": 1}, "name": "late/name"})
    store.create_runs([("en-late", "app:en", fields)])
    for i, name in enumerate(names):
        assert [r.run_id for r in hist.runs(event_name=name).items] == [f"en-{i}"], name
        assert hist.count_runs("app:en", event_name=name) == 1
    assert [r.run_id for r in hist.runs(event_name="late/name").items] == ["en-late"]
    # A run created with its events (a replayed batch): each distinct name.
    fields = new_run_fields("en", "app", "app:en", {"name": "b/1", "data": {}}, event_ids=[],
                            created=repr(now - 1))
    fields[EVENTS] = dumps([{"name": "b/1"}, {"name": "b/2"}, {"name": "b/1"}])
    store.create_runs([("en-batch", "app:en", fields)])
    assert hist.count_runs(event_name="b/1") == 1 == hist.count_runs("app:en", event_name="b/2")
    # An open batch: each event added joins its name's sets.
    fields = new_run_fields("en", "app", "app:en", {"name": "o/1", "data": {}}, event_ids=[],
                            created=repr(now - 1))
    fields[BATCH_KEY] = "k"
    store.create_runs([("en-open", "app:en", fields)])
    for n, name in enumerate(("o/1", "o/2"), 1):
        added, _wake = store.flow.batch_run("en-open", f"be:e{n}",
                                            {"n": n, "e": {"name": name, "id": f"e{n}"}}, False)
        assert added
    assert [r.run_id for r in hist.runs(fn_key="app:en", event_name="o/2").items] == ["en-open"]
    assert hist.count_runs(event_name="nope") == 0
    # And the backfill finds the same names, an open batch's from its be: fields.
    for k in store.r.scan_iter(match=f"{store.p}:idx:*en:*"):
        store.r.delete(k)
    assert hist.count_runs(event_name="o/2") == 0
    hist.reindex(force=True)
    for name in (*names, "late/name", "b/2", "o/2"):
        assert hist.count_runs("app:en", event_name=name) >= 1, name


def test_prune_clears_every_index(store: Store) -> None:
    keys = store.keys
    old = time.time() - 8 * 86400
    _scripted_run(store, "px-gone", "app:px", old, {"user_id": 1})
    _scripted_run(store, "px-kept", "app:px", old + 1, {"user_id": 1})
    _scripted_run(store, "px-done", "app:px", old + 2, {"user_id": 2})
    assert store.finish_run("px-gone", "", "completed", {"out": json.dumps({"order_id": 5})}) == 1
    assert store.finish_run("px-done", "", "cancelled", {}) == 1
    gone_keys = _index_keys_holding(store, "px-gone")
    # all, fn, completed x2, version x2, event name x2, data and output attributes, the
    # ended feed
    assert len(gone_keys) == 11
    store.r.delete(keys.run("px-gone"), keys.run("px-done"))  # their retention ended
    # The ended feed is trimmed by its score (the end): put their ends past the retention.
    store.r.zadd(keys.ended_index, {"px-gone": int(old * 1000), "px-done": int(old * 1000)})
    store.r.zadd(keys.ended_index, {"px-recent": int(time.time() * 1000)})
    History(store).prune()
    assert _index_keys_holding(store, "px-gone") == set()
    assert _index_keys_holding(store, "px-done") == set()
    assert store.r.zscore(keys.ended_index, "px-recent") is not None
    # A run still alive (sleeping past the retention) keeps every entry it had.
    assert keys.status_index("active", "app:px") in _index_keys_holding(store, "px-kept")
    hist = History(store)
    assert hist.count_runs("app:px") == 1 == hist.count_runs("app:px", status="active")
    assert hist.count_runs("app:px", search={"data.user_id": 1}) == 1


def test_paging_back_across_ties(store: Store) -> None:
    ms = int((time.time() - 900) * 1000)
    r = store.r
    key = store.keys.status_index("failed", "app:tb")
    ids = [f"tb-{i}" for i in range(9)]
    for i, rid in enumerate(ids):  # scores: 3 runs at ms, 4 at ms+1, 2 at ms+2
        created = ms if i < 3 else ms + 1 if i < 7 else ms + 2
        r.zadd(key, {rid: created})
        r.hset(store.run_key(rid), mapping=_run_fields("app:tb", "failed", created / 1000))
    hist = History(store)
    forward = []
    cursor = None
    while True:
        page = hist.runs(fn_key="app:tb", status="failed", limit=2, cursor=cursor)
        forward.append(page)
        cursor = page.next_cursor
        if cursor is None:
            break
    order = [x.run_id for p in forward for x in p.items]
    assert sorted(order) == sorted(ids) and len(set(order)) == 9
    for i in range(len(forward) - 1, 0, -1):
        back = hist.runs(fn_key="app:tb", status="failed", limit=2, cursor=forward[i].prev_cursor)
        assert [x.run_id for x in back.items] == [x.run_id for x in forward[i - 1].items], i


def test_reindex_backfills_runs_written_before_the_indexes(store: Store) -> None:
    keys, r = store.keys, store.r
    now = time.time()
    old = {"ri-done": "failed", "ri-live": "sleeping"}
    for rid, st in old.items():  # as a run created before the indexes: no status entries
        fields = _run_fields("app:ri", st, now - 30)
        fields.update({"v": "v9", "sa": json.dumps(["data.user_id"]),
                       "event": json.dumps({"name": "old/e", "data": {"user_id": 5}})})
        r.hset(store.run_key(rid), mapping=fields)
        r.zadd(keys.runs_index, {rid: int((now - 30) * 1000)})
        r.zadd(keys.fn_index("app:ri"), {rid: int((now - 30) * 1000)})
    r.delete(keys.reindexed)
    hist = History(store)
    assert hist.count_runs("app:ri", status="failed") == 0  # not indexed yet
    r.set(keys.reindex_lock, "another process", ex=60)
    assert hist.reindex() is None  # someone else holds the lock
    r.delete(keys.reindex_lock)
    assert (hist.reindex() or 0) >= 2
    assert hist.reindex() is None  # done once: a worker's start does nothing
    assert [x.run_id for x in hist.runs(fn_key="app:ri", status="failed").items] == ["ri-done"]
    assert [x.run_id for x in hist.runs(fn_key="app:ri", status="sleeping").items] == ["ri-live"]
    assert hist.count_runs("app:ri", version="v9") == 2
    assert hist.count_runs("app:ri", event_name="old/e") == 2
    assert hist.count_runs(event_name="old/e", status="failed") == 1
    assert hist.count_runs("app:ri", search={"data.user_id": 5}) == 2
    assert hist.count_runs(status="active", search={"data.user_id": 5}) == 1
