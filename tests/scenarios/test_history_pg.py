"""The PostgreSQL history store with a real worker: every run that ends (completed,
failed, cancelled) is copied once, by the worker's copier thread; through an outage
of the database (closed to connections, the shared server left running) the copy
waits and then catches up; the store's listings give the same exact answers as the
Redis indexes on the same runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests import pg_support

pg_support.require_postgres()

import fanout  # noqa: E402
from fanout._postgres.store import PgHistory, parse_search  # noqa: E402
from fanout._redis.history import History  # noqa: E402
from tests.support import ROOT, make_app, redis_for, run_of, wait_for, wait_run  # noqa: E402

PG_URL = pg_support.database_url()
r = redis_for(__name__)
app, client = make_app(__name__, app_id="hpg")
app.conf.fanout_history_url = PG_URL
app.conf.fanout_history_retention = 30


@client.create_function(fn_id="order", trigger=fanout.TriggerEvent(event="hpg/order"),
                        retries=0)
def order(ctx: fanout.ContextSync) -> dict[str, Any]:
    n = int(ctx.event.data["n"])
    if ctx.event.data.get("fail"):
        raise fanout.NonRetriableError(f"order {n} refused")
    if ctx.event.data.get("nap"):
        ctx.step.sleep("nap", "60s")
    total = ctx.step.run("price", lambda: n * 10)
    return {"total": total, "tier": "gold" if n % 2 else "basic"}


@pytest.fixture(scope="module", autouse=True)
def _database() -> Iterator[None]:
    yield
    pg_support.drop_database(PG_URL)


def _store() -> PgHistory:
    return PgHistory(PG_URL)


def _pg_ids() -> list[str]:
    return pg_support.run_ids(PG_URL)


def _send(*datas: dict[str, Any]) -> list[str]:
    ids = client.send_sync([fanout.Event(name="hpg/order", data=d) for d in datas])
    return [run_of(client, eid, "order") for eid in ids]


def test_each_ended_run_is_copied_once_and_the_listings_agree(worker: Any) -> None:
    ok = _send(*({"n": n, "user_id": n} for n in range(20)))
    failed = _send(*({"n": 100 + n, "fail": True} for n in range(5)))
    napping = _send({"n": 500, "nap": True}, {"n": 501, "nap": True})
    for rid in ok + failed:
        wait_run(client, rid)
    wait_for(lambda: all(getattr(client.get_run(x), "status", "") == "sleeping"
                         for x in napping), 30)
    assert client.cancel(napping[0], reason="changed my mind")
    ended = ok + failed + [napping[0]]
    wait_for(lambda: set(_pg_ids()) >= set(ended), 60)
    time.sleep(2.5)  # a second copier round: nothing copied twice, the active run not at all
    ids = _pg_ids()
    assert sorted(ids) == sorted(ended)  # one row each (the primary key), none missing
    assert napping[1] not in ids  # still sleeping: not ended, not copied

    h = _store()
    try:
        row = h.record(failed[0])
        assert row is not None and row["st"] == "failed"
        assert "order 100 refused" in str(row["err"])
        assert h.record(ok[3])["out"] == {"total": 30, "tier": "gold"}  # type: ignore[index]
        # The same exact answers as the Redis indexes on the same (ended) runs.
        redis_history = History(client.runtime.store)
        for status in ("completed", "failed", "cancelled"):
            redis_page = redis_history.runs(fn_key="hpg:order", status=status, limit=100)
            pg_page = h.runs(fn_key="hpg:order", status=status, limit=100)
            assert [x.run_id for x in pg_page.runs] == [x.run_id for x in redis_page.items]
            assert pg_page.total == redis_page.total
        # Paging both ways, with the total: 26 ended runs in pages of 10.
        first = h.runs(fn_key="hpg:order", limit=10)
        assert first.total == 26 and len(first.runs) == 10 and first.prev_cursor is None
        second = h.runs(fn_key="hpg:order", limit=10, cursor=first.next_cursor)
        third = h.runs(fn_key="hpg:order", limit=10, cursor=second.next_cursor)
        assert len(third.runs) == 6 and third.next_cursor is None
        everything = [x.run_id for p in (first, second, third) for x in p.runs]
        assert everything == [x.run_id for x in redis_history.runs(
            fn_key="hpg:order", status="completed,failed,cancelled", limit=100).items]
        back = h.runs(fn_key="hpg:order", limit=10, cursor=second.prev_cursor)
        assert [x.run_id for x in back.runs] == [x.run_id for x in first.runs]
        # JSONB search over the event's data and the output, and the event name.
        found = h.runs(search=parse_search(["data.user_id=7"]))
        assert [x.run_id for x in found.runs] == [ok[7]] and found.total == 1
        gold = h.runs(search=parse_search(['output.tier="gold"']), status="completed")
        assert gold.total == 10
        assert h.runs(event_name="hpg/order").total == 26
        assert h.runs(event_name="hpg/other").total == 0
    finally:
        h.close()


def test_an_outage_of_postgres_is_caught_up_afterwards(worker: Any) -> None:
    before = set(_pg_ids())
    pg_support.set_connections(PG_URL, False)
    try:
        during = _send(*({"n": 1000 + n} for n in range(10)))
        for rid in during:
            assert wait_run(client, rid).status == "completed"  # runs go on meanwhile
        time.sleep(8)  # past the settle time: the copier has tried and failed
    finally:
        pg_support.set_connections(PG_URL, True)
    wait_for(lambda: set(_pg_ids()) >= before | set(during), 90)
    ids = _pg_ids()
    assert len(ids) == len(set(ids)) == len(before) + 10
    assert "copying ended runs to the PostgreSQL history store" in worker.log()


def _cli(*args: str) -> Any:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FANOUT_APP": __name__}
    res = subprocess.run([sys.executable, "-m", "fanout._cli", *args, "--json"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_list_runs_and_the_cli_read_postgres_and_redis_as_one(worker: Any) -> None:
    """With the store configured, list_runs and `fanout runs` merge the ended runs of
    PostgreSQL with the active and not-yet-copied ones of Redis: the same pages and
    totals as the Redis indexes alone, on every filter both answer."""
    fresh = _send({"n": 2000})  # ended just now: in Redis, maybe not copied yet
    wait_run(client, fresh[0])
    redis_history = History(client.runtime.store)
    for status in (None, "completed", "failed", "cancelled", "sleeping", "active",
                   "completed,failed"):
        want = redis_history.runs(fn_key="hpg:order", status=status, limit=1000)
        got = client.list_runs(fn_id="order", status=status, limit=1000)
        assert [x.run_id for x in got] == [x.run_id for x in want.items], status
        assert got.total == want.total, status
        listed = _cli("runs", "--fn", "order", *(["--status", status] if status else []),
                      "--limit", "1000")
        assert [x["run_id"] for x in listed["runs"]] == [x.run_id for x in want.items]
        assert listed["total"] == want.total and listed["source"] == "postgres+redis"
    # Paging both ways through the merged listing, in pages of 7.
    all_ids = [x.run_id for x in redis_history.runs(fn_key="hpg:order", limit=1000).items]
    seen: list[str] = []
    pages = []
    cursor = None
    while True:
        page = client.list_runs(fn_id="order", limit=7, cursor=cursor)
        assert page.total == len(all_ids)
        pages.append(page)
        seen += [x.run_id for x in page]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == all_ids
    back = client.list_runs(fn_id="order", limit=7, cursor=pages[2].prev_cursor)
    assert [x.run_id for x in back] == [x.run_id for x in pages[1]]
    # What only the store answers: any JSON path, an event name.
    found = client.list_runs(search={"data.user_id": 7})
    assert len(found) == 1 and found[0].output == {"total": 70, "tier": "gold"}
    assert _cli("runs", "--search", "data.user_id=7")["total"] == 1
    assert client.list_runs(event_name="hpg/order", limit=1000).total == len(all_ids)
    assert _cli("runs", "--event-name", "hpg/none")["total"] == 0


def test_the_dashboards_runs_list_reads_the_store(worker: Any) -> None:
    """The dashboard's runs list (JSON and page) with the store: the same runs and totals
    as the Redis indexes, status by status."""
    import urllib.request

    from tests import browser

    redis_history = History(client.runtime.store)
    for base in browser.serve_dashboard(__name__):
        for status in ("", "failed", "completed", "cancelled", "sleeping"):
            with urllib.request.urlopen(f"{base}/api/runs?fn=order&status={status}"
                                        "&limit=500", timeout=60) as res:
                api = json.loads(res.read())
            want = redis_history.runs(fn_key="hpg:order", status=status or None, limit=500)
            assert [x["run_id"] for x in api["runs"]] == [x.run_id for x in want.items]
            assert api["total"] == want.total
        with urllib.request.urlopen(f"{base}/runs?status=failed", timeout=60) as res:
            page = res.read().decode()
        failed = redis_history.runs(status="failed", limit=500).items
        assert failed and all(x.run_id in page for x in failed)


def test_a_run_past_the_redis_retention_is_read_from_the_store(worker: Any) -> None:
    """Once Redis no longer holds a run (its hash expired), get_run, `fanout run`, the
    dashboard's run page, its JSON and its search box read the store's copy; the page
    offers no action and says why, and replay says the run is not in Redis."""
    import urllib.error
    import urllib.request

    from tests import browser

    gone, kept = _send({"n": 3000, "user_id": 424242}, {"n": 3001})
    for rid in (gone, kept):
        assert wait_run(client, rid).status == "completed"
    wait_for(lambda: {gone, kept} <= set(_pg_ids()), 60)
    store = client.runtime.store
    assert r.delete(store.keys.run(gone)) == 1  # what Redis's retention does to it
    assert store.run_fields(gone) == {}

    info = client.get_run(gone)
    assert info is not None and info.status == "completed"
    assert info.output == {"total": 30000, "tier": "basic"}
    assert [s.step_id for s in info.steps] == ["price"]
    assert client.get_run("no-such-run") is None
    shown = _cli("run", gone)
    assert shown["status"] == "completed" and shown["output"] == {"total": 30000,
                                                                  "tier": "basic"}
    with pytest.raises(fanout.ConfigError, match="past its retention"):
        client.replay(gone)  # a new run needs the old one in Redis

    for base in browser.serve_dashboard(__name__):
        with urllib.request.urlopen(f"{base}/runs/{gone}", timeout=60) as res:
            page = res.read().decode()
        assert 'id="run-copy"' in page and "/actions/replay" not in page
        with urllib.request.urlopen(f"{base}/runs/{kept}", timeout=60) as res:
            live_page = res.read().decode()
        assert 'id="run-copy"' not in live_page and "/actions/replay" in live_page
        with urllib.request.urlopen(f"{base}/api/runs/{gone}", timeout=60) as res:
            assert json.loads(res.read())["status"] == "completed"
        with urllib.request.urlopen(f"{base}/runs?q={gone}", timeout=60) as res:
            assert res.geturl().endswith(f"/runs/{gone}")  # the search box opens it
        with urllib.request.urlopen(f"{base}/runs?q=user_id%3D424242", timeout=60) as res:
            found = res.read().decode()
        assert gone in found and kept not in found  # the store answers any field
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{base}/runs/no-such-run", timeout=60)
        assert err.value.code == 404


def test_history_backfill_copies_the_ended_runs_the_feed_does_not_hold(worker: Any) -> None:
    """Runs that ended before the ended feed existed are in Redis's all-runs index only:
    the copier does not see them, `fanout history backfill` copies them (and only ended
    runs), and running it again writes the same rows."""
    old = _send({"n": 4000}, {"n": 4001}, {"n": 4002})
    asleep = _send({"n": 4003, "nap": True})
    for rid in old:
        assert wait_run(client, rid).status == "completed"
    wait_for(lambda: set(old) <= set(_pg_ids()), 60)
    wait_for(lambda: getattr(client.get_run(asleep[0]), "status", "") == "sleeping", 30)
    # As if they had ended before the feed: in Redis, in no feed, not in the store.
    with pg_support.admin_of(PG_URL) as conn:
        conn.execute("DELETE FROM fanout_runs WHERE run_id = ANY(%s)", (old,))
    assert not set(old) & set(_pg_ids())
    assert r.zcard("fanout:idx:ended") == 0  # the copier took them out long ago
    time.sleep(2.5)  # a copier round: nothing brings them back
    assert not set(old) & set(_pg_ids())

    store = client.runtime.store
    ended = [x.run_id for x in History(store).runs(
        fn_key="hpg:order", status="completed,failed,cancelled", limit=1000).items
        if store.run_fields(x.run_id)]  # the ended runs whose hash Redis still holds
    done = _cli("history", "backfill", "--batch", "7")
    assert done["copied"] == len(ended) and done["passed_over"] >= 1  # the sleeping one
    ids = _pg_ids()
    assert set(old) | set(ended) <= set(ids) and asleep[0] not in ids
    assert len(ids) == len(set(ids))
    again = _cli("history", "backfill")
    assert again["copied"] == len(ended) and sorted(_pg_ids()) == sorted(ids)
