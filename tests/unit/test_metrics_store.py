"""The store's counts: the scripts count, the processes buffer the histograms and
send them, the fields parse back, the timer gauges read the timers set, and
counting can be off."""

from __future__ import annotations

import atexit
import re
import time
from pathlib import Path

import pytest

import fanout._redis
from fanout._redis.memory import memory_redis
from fanout._redis.metrics_store import DURATION_BUCKETS, parse_fields, read_metrics
from fanout._redis.observations import Observations, bucket
from fanout._redis.store import Store

LUA = Path(fanout._redis.__file__).resolve().parent / "lua"  # the installed package's scripts


def test_every_script_that_counts_includes_the_library() -> None:
    counting = [p.name for p in sorted(LUA.glob("*.lua"))
                if re.search(r"\b(count_attempt|count_steps|read_run)\(", p.read_text())
                and p.name != "_metrics.lua"]
    assert counting == ["end_pass.lua", "finish_run.lua", "go_on.lua", "save_step.lua"]
    for name in counting:
        assert "--#include _metrics\n" in (LUA / name).read_text(), name
    # No script writes a histogram field: those come from the worker processes.
    for p in LUA.glob("*.lua"):
        assert "'h|" not in p.read_text() and "'hu|" not in p.read_text(), p.name


def test_include_inlines_the_library() -> None:
    from fanout._redis.scripts import load_script

    text = load_script("finish_run")
    assert not any(line.startswith("--#include") for line in text.splitlines())
    assert "count_attempt = function(raw, prev, lab)" in text


def test_an_observation_falls_in_the_first_bucket_at_or_above_it() -> None:
    assert [float(b) for b in DURATION_BUCKETS] == sorted(float(b) for b in DURATION_BUCKETS)
    assert bucket(0.0) == "0.005" and bucket(0.005) == "0.005" and bucket(0.0051) == "0.01"
    assert bucket(1.0) == "1" and bucket(86400) == "86400" and bucket(86400.5) == "+Inf"


def test_observations_wait_for_a_send_and_add_up() -> None:
    r = memory_redis(f"memory://obs-{time.time_ns()}")
    obs = Observations(r, "fanout:metrics", interval=3600)
    obs.observe("step_duration", "shop", "pay", 0.2)
    obs.observe("step_duration", "shop", "pay", 0.3)
    obs.observe("step_duration", "shop", "pay", -1)  # a clock step back counts as 0
    assert not r.exists("fanout:metrics")  # buffered until a send
    assert obs.pending() == {"h|step_duration|shop|pay|0.25": 1, "h|step_duration|shop|pay|0.5": 1,
                             "h|step_duration|shop|pay|0.005": 1, "hu|step_duration|shop|pay": 500000}
    assert obs.flush() == 4 and obs.pending() == {} and obs.flush() == 0
    obs.observe_many("step_duration", "shop", "pay", [b"0.25", "0.25"])
    obs.close()
    _c, hists = parse_fields({k.decode(): v.decode() for k, v in r.hgetall("fanout:metrics").items()})
    h = hists["step_duration"][("shop", "pay")]
    assert h.count == 5 and h.sum == pytest.approx(1.0)


def test_a_failed_send_keeps_the_observations_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # Nothing listens on port 1; no retries inside the client, so the test is quick.
    down = redis.Redis(port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    obs = Observations(down, "fanout:metrics", interval=3600)
    obs.observe("run_duration", "shop", "pay", 2.0)
    with pytest.raises(redis.exceptions.ConnectionError):
        obs.flush()
    assert obs.pending() == {"h|run_duration|shop|pay|2.5": 1, "hu|run_duration|shop|pay": 2000000}
    with caplog.at_level("WARNING", logger="fanout"):
        obs.flush_quietly()
        obs.flush_quietly()  # once a minute, not on every try
    warned = [r for r in caplog.records if "histogram fields" in r.getMessage()]
    assert len(warned) == 1 and "kept" in warned[0].getMessage()
    assert sum(obs.pending().values()) == 2000001
    atexit.unregister(obs.close)  # this process would try once more as it exits


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
