"""Controls on run starts, each under a burst of events, with a real worker:
singleton (skip, cancel), throttle, rate limit, idempotency, debounce, batching."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import fanout
from tests.scenarios.flow_helpers import max_overlap, module_worker, recorder, spans
from tests.support import Worker, make_app, run_of, wait_for, wait_run

app, client = make_app(__name__)
span = recorder(__name__)


@client.create_function(
    fn_id="single-skip", trigger=fanout.TriggerEvent(event="t/single-skip"),
    singleton=fanout.Singleton(key="event.data.k", mode="skip"),
)
def single_skip(ctx: fanout.ContextSync) -> str:
    ctx.step.run("work", span, ctx.event.data["k"], ctx.run_id, 0.8, "single-skip")
    return ctx.event.data["k"]


@client.create_function(
    fn_id="single-cancel", trigger=fanout.TriggerEvent(event="t/single-cancel"),
    singleton=fanout.Singleton(mode="cancel"),
)
def single_cancel(ctx: fanout.ContextSync) -> int:
    ctx.step.run("one", span, "one", ctx.run_id, 0.8, "single-cancel")
    ctx.step.run("two", span, "two", ctx.run_id, 0.01, "single-cancel")
    return int(ctx.event.data["n"])


@client.create_function(
    fn_id="throttled", trigger=fanout.TriggerEvent(event="t/throttle"),
    throttle=fanout.Throttle(1, "1s", key="event.data.k"),
)
def throttled(ctx: fanout.ContextSync) -> None:
    ctx.step.run("go", span, ctx.event.data["k"], ctx.run_id, 0.01, "throttle")


@client.create_function(
    fn_id="rate-limited", trigger=fanout.TriggerEvent(event="t/rate"),
    rate_limit=fanout.RateLimit(2, "1m", key="event.data.k"),
)
def rate_limited(ctx: fanout.ContextSync) -> str:
    return ctx.event.data["k"]


@client.create_function(
    fn_id="idem", trigger=fanout.TriggerEvent(event="t/order"), idempotency="event.data.order",
)
def idem(ctx: fanout.ContextSync) -> int:
    return int(ctx.event.data["order"])


@client.create_function(
    fn_id="debounced", trigger=fanout.TriggerEvent(event="t/typing"),
    debounce=fanout.Debounce("1s", key="event.data.doc"),
)
def debounced(ctx: fanout.ContextSync) -> dict[str, object]:
    return {"doc": ctx.event.data["doc"], "i": ctx.event.data["i"], "events": len(ctx.events)}


@client.create_function(
    fn_id="debounce-capped", trigger=fanout.TriggerEvent(event="t/stream"),
    debounce=fanout.Debounce("1s", timeout="2s"),
)
def debounce_capped(ctx: fanout.ContextSync) -> int:
    return int(ctx.event.data["i"])


@client.create_function(
    fn_id="batched", trigger=fanout.TriggerEvent(event="t/item"),
    batch_events=fanout.Batch(max_size=5, timeout="1s", key="event.data.shop"),
)
def batched(ctx: fanout.ContextSync) -> dict[str, object]:
    ids = [e.data["i"] for e in ctx.events]
    first = ctx.step.run("first", lambda: ctx.event.data["i"])
    return {"ids": ids, "first": first, "shop": ctx.event.data["shop"]}


@pytest.fixture(scope="module")
def big_worker(request: pytest.FixtureRequest, clean_db: redis.Redis, log_dir: Path) -> Iterator[Worker]:
    yield from module_worker(__name__, log_dir, 6, request)


def _runs(fn_id: str) -> list[fanout.RunInfo]:
    return client.list_runs(fn_id=fn_id, limit=1000)


def test_singleton_skip(big_worker: Worker) -> None:
    evs = [fanout.Event(name="t/single-skip", data={"k": k}) for k in ("a", "a", "a", "b")]
    eids = client.send_sync(evs)
    runs = [wait_run(client, run_of(client, e, "single-skip")) for e in eids]
    a = [r.status for r in runs[:3]]
    assert sorted(a) == ["completed", "skipped", "skipped"], a
    assert runs[3].status == "completed"
    skipped = next(r for r in runs if r.status == "skipped")
    assert skipped.error and skipped.error["type"] == "Singleton"
    assert max_overlap([s for s in spans(__name__, "single-skip") if s["tag"] == "a"]) == 1
    # The key is free again once its run ended.
    again = client.emit("t/single-skip", {"k": "a"})
    assert wait_run(client, run_of(client, again, "single-skip")).status == "completed"


def test_singleton_cancel_replaces_the_active_run(big_worker: Worker) -> None:
    first = client.emit("t/single-cancel", {"n": 1})
    first_run = run_of(client, first, "single-cancel")
    wait_for(lambda: (r := client.get_run(first_run)) is not None and r.status == "running")
    second = client.emit("t/single-cancel", {"n": 2})
    old = wait_run(client, first_run)
    new = wait_run(client, run_of(client, second, "single-cancel"))
    assert old.status == "cancelled" and "singleton" in (old.error or {}).get("message", "")
    assert new.status == "completed" and new.output == 2
    assert "two" not in {s.step_id for s in old.steps}  # stopped between steps


def test_throttle_spreads_starts_and_drops_nothing(big_worker: Worker) -> None:
    evs = [fanout.Event(name="t/throttle", data={"k": "a"}) for _ in range(4)]
    evs.append(fanout.Event(name="t/throttle", data={"k": "b"}))
    eids = client.send_sync(evs)
    runs = [wait_run(client, run_of(client, e, "throttled")) for e in eids]
    assert all(r.status == "completed" for r in runs)
    recorded = spans(__name__, "throttle")
    starts = sorted(s["start"] for s in recorded if s["tag"] == "a")
    assert len(starts) == 4
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= 0.95, gaps  # one start per second for key a
    b_start = next(s["start"] for s in recorded if s["tag"] == "b")
    assert b_start < starts[-1]  # key b did not queue behind key a


def test_rate_limit_records_the_extra_runs_as_skipped(big_worker: Worker) -> None:
    evs = [fanout.Event(name="t/rate", data={"k": "a"}) for _ in range(5)]
    evs.append(fanout.Event(name="t/rate", data={"k": "b"}))
    eids = client.send_sync(evs)
    runs = [wait_run(client, run_of(client, e, "rate-limited")) for e in eids]
    assert [r.status for r in runs[:5]].count("completed") == 2
    assert [r.status for r in runs[:5]].count("skipped") == 3
    assert runs[5].status == "completed"
    skipped = [r for r in _runs("rate-limited") if r.status == "skipped"]
    assert len(skipped) == 3 and all(r.error["type"] == "RateLimited" for r in skipped)  # type: ignore[index]


def test_idempotency_one_run_per_key(big_worker: Worker) -> None:
    eids = client.send_sync([fanout.Event(name="t/order", data={"order": o}) for o in (1, 1, 2, 1)])
    runs = [wait_run(client, run_of(client, e, "idem")) for e in eids]
    assert [r.status for r in runs] == ["completed", "skipped", "completed", "skipped"]
    assert runs[1].error["type"] == "Idempotent"  # type: ignore[index]
    later = client.emit("t/order", {"order": 1})
    assert wait_run(client, run_of(client, later, "idem")).status == "skipped"
    # The same event id twice is still one run (ids dedupe before idempotency).
    client.send_sync(fanout.Event(name="t/order", data={"order": 3}, id="order-3"))
    client.send_sync(fanout.Event(name="t/order", data={"order": 3}, id="order-3"))
    assert wait_run(client, run_of(client, "order-3", "idem")).status == "completed"


def test_debounce_runs_once_with_the_last_event(big_worker: Worker) -> None:
    for i in range(5):
        client.emit("t/typing", {"doc": "d1", "i": i})
        client.emit("t/typing", {"doc": "d2", "i": i * 10})
        time.sleep(0.2)
    wait_for(lambda: len(_runs("debounced")) == 2 and all(r.done for r in _runs("debounced")),
             timeout=20)
    time.sleep(1.5)  # nothing else starts later
    runs = _runs("debounced")
    assert sorted((r.status, r.output["doc"], r.output["i"]) for r in runs) == [  # type: ignore[index]
        ("completed", "d1", 4), ("completed", "d2", 40)]


def test_debounce_timeout_caps_the_delay(big_worker: Worker) -> None:
    for i in range(12):
        client.emit("t/stream", {"i": i})
        time.sleep(0.3)
    wait_for(lambda: (rs := _runs("debounce-capped")) and all(r.done for r in rs)
             and any(r.output == 11 for r in rs), timeout=20)
    outputs = sorted(r.output for r in _runs("debounce-capped"))
    assert 2 <= len(outputs) < 12, outputs  # events kept coming, the timeout forced starts
    assert outputs[-1] == 11


def test_batch_gives_ctx_events(big_worker: Worker) -> None:
    evs = [fanout.Event(name="t/item", data={"shop": "s1", "i": i}) for i in range(12)]
    evs.append(fanout.Event(name="t/item", data={"shop": "s2", "i": 100}))
    client.send_sync(evs)
    wait_for(lambda: sum(len(r.output["ids"]) for r in _runs("batched")  # type: ignore[index]
                         if r.status == "completed") == 13, timeout=20)
    runs = _runs("batched")
    sizes = sorted((r.output["shop"], len(r.output["ids"])) for r in runs)  # type: ignore[index]
    assert sizes == [("s1", 2), ("s1", 5), ("s1", 5), ("s2", 1)], sizes
    seen = sorted(i for r in runs for i in r.output["ids"])  # type: ignore[index]
    assert seen == [*range(12), 100]
    for r in runs:
        assert r.output["first"] == r.output["ids"][0]  # type: ignore[index]
        assert len(r.event_ids) == len(r.output["ids"])  # type: ignore[index]
