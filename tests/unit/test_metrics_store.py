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


def test_the_scripts_use_the_readers_buckets() -> None:
    """The bounds live once, in ``_metrics.lua``, as the reader's strings and as
    numbers; every script that counts includes that file."""
    lib = (LUA / "_metrics.lua").read_text()
    strings = re.search(r"local BUCKETS = \{([^}]*)\}", lib)
    numbers = re.search(r"local BOUNDS = \{([^}]*)\}", lib)
    assert strings and numbers
    assert tuple(re.findall(r"'([^']+)'", strings.group(1))) == DURATION_BUCKETS
    assert [float(x) for x in numbers.group(1).split(",")] == [float(b) for b in DURATION_BUCKETS]
    assert [float(b) for b in DURATION_BUCKETS] == sorted(float(b) for b in DURATION_BUCKETS)
    assert f"for i = 1, {len(DURATION_BUCKETS)} do" in lib
    counting = [p.name for p in sorted(LUA.glob("*.lua"))
                if re.search(r"\b(observe|count_attempt|read_run)\(", p.read_text())
                and p.name != "_metrics.lua"]
    assert len(counting) >= 5
    for name in counting:
        assert "--#include _metrics\n" in (LUA / name).read_text(), name


def test_include_inlines_the_library() -> None:
    from fanout._redis.store import load_script

    text = load_script("finish_run")
    assert not any(line.startswith("--#include") for line in text.splitlines())
    assert "  local BOUNDS = {" in text


def test_a_sum_in_microseconds_and_an_older_float_sum_add_up() -> None:
    """Sums are written as whole microseconds (``hu|``); a store counted by an older
    release holds float seconds (``hs|``) for the same series, and both are read."""
    _counters, hists = parse_fields({
        "h|step_duration|shop|pay|0.5": "2",
        "hu|step_duration|shop|pay": "750000",
        "hs|step_duration|shop|pay": "0.25",
    })
    h = hists["step_duration"][("shop", "pay")]
    assert h.count == 2 and h.sum == pytest.approx(1.0)


def test_fields_parse_into_counters_and_cumulative_histograms() -> None:
    counters, hists = parse_fields({
        "c|runs_started|shop|checkout": "3",
        "c|runs_ended|shop|checkout|failed": "1",
        "c|events|shop/order.placed|v2": "7",
        "h|run_duration|shop|checkout|0.5": "2",
        "h|run_duration|shop|checkout|+Inf": "1",
        "hu|run_duration|shop|checkout": "4250000",
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
