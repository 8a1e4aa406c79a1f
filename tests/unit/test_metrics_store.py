"""The store's counts: the Lua scripts and the reader agree on the buckets, the
fields parse back, the timer gauges read the timers set, and counting can be off."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from fanout._redis.memory import memory_redis
from fanout._redis.metrics import DURATION_BUCKETS, parse_fields, read_metrics
from fanout._redis.store import Store

LUA = Path(__file__).resolve().parents[2] / "fanout" / "_redis" / "lua"


def test_every_script_uses_the_readers_buckets() -> None:
    found = 0
    for path in sorted(LUA.glob("*.lua")):
        m = re.search(r"local BUCKETS = \{([^}]*)\}", path.read_text())
        if m:
            found += 1
            assert tuple(re.findall(r"'([^']+)'", m.group(1))) == DURATION_BUCKETS, path.name
    assert found >= 5
    assert [float(b) for b in DURATION_BUCKETS] == sorted(float(b) for b in DURATION_BUCKETS)


def test_fields_parse_into_counters_and_cumulative_histograms() -> None:
    counters, hists = parse_fields({
        "c|runs_started|shop|checkout": "3",
        "c|runs_ended|shop|checkout|failed": "1",
        "c|events|shop/order.placed|v2": "7",
        "h|run_duration|shop|checkout|0.5": "2",
        "h|run_duration|shop|checkout|+Inf": "1",
        "hs|run_duration|shop|checkout": "4.25",
        "c|runs_ended|broken": "9",
        "h|nonsense|x|y|1": "1",
    })
    assert counters["runs_started"] == {("shop", "checkout"): 3}
    assert counters["runs_ended"] == {("shop", "checkout", "failed"): 1}
    assert counters["events"] == {("shop/order.placed|v2",): 7}
    h = hists["run_duration"][("shop", "checkout")]
    assert h.count == 3 and h.sum == 4.25
    cum = dict(h.cumulative())
    assert cum["0.25"] == 0 and cum["0.5"] == 2 and cum["86400"] == 2 and cum["+Inf"] == 3


@pytest.fixture
def store() -> Store:
    return Store(memory_redis(f"memory://metrics-{time.time_ns()}"))


def test_timer_gauges(store: Store) -> None:
    now = time.time()
    store.arm("late", now - 30)
    store.arm("later", now - 5)
    store.arm("future", now + 600)
    snap = read_metrics(store, now=now)
    assert (snap.timers, snap.timers_overdue) == (3, 2)
    assert snap.oldest_overdue_age == pytest.approx(30, abs=0.01)
    store.drop_timer("late")
    store.drop_timer("later")
    assert read_metrics(store, now=now).oldest_overdue_age == 0.0


def _run(store: Store, run_id: str) -> None:
    fields = {"st": "queued", "fn": "checkout", "app": "shop", "fk": "shop:checkout",
              "c": repr(time.time() - 2), "seq": "0", "att": "0"}
    store.create_runs([(run_id, "shop:checkout", fields)])
    head, _f = store.begin_pass(run_id, "tok", int((time.time() + 30) * 1000), 0)
    assert head == "ok"
    store.finish_run(run_id, "tok", "completed", {"out": "1"})


def test_a_run_is_counted_once(store: Store) -> None:
    _run(store, "r1")
    assert not store.finish_run("r1", "tok", "completed", {"out": "1"})  # already ended
    snap = read_metrics(store)
    assert snap.enabled
    assert snap.counter("runs_started", "shop", "checkout") == 1
    assert snap.counter("runs_ended", "shop", "checkout", "completed") == 1
    dur = snap.histograms["run_duration"][("shop", "checkout")]
    assert dur.count == 1 and 1.5 < dur.sum < 10
    assert snap.histograms["queue_delay"][("shop", "checkout")].count == 1


def test_counting_off() -> None:
    store = Store(memory_redis(f"memory://metrics-off-{time.time_ns()}"), metrics=False)
    _run(store, "r1")
    snap = read_metrics(store)
    assert not snap.enabled and snap.counter("runs_started", "shop", "checkout") == 0
    assert not store.r.exists("fanout:metrics")
