"""The run lifecycle with a real worker: runs cancelled by an event and in bulk,
start and finish timeouts, on_failure handlers and the fanout/function.* system
events (emitted once, even when a run's end is reported twice)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import fanout
from fanout._celery import endings
from fanout._core.ids import derived_event_id
from tests.scenarios.flow_helpers import module_worker
from tests.support import Worker, make_app, redis_for, run_of, wait_for, wait_run

app, client = make_app(__name__)


@client.create_function(
    fn_id="order-flow", trigger=fanout.TriggerEvent(event="t/order.created"),
    cancel=[
        fanout.Cancel(event="t/order.cancelled", match="data.order_id"),
        fanout.Cancel(event="t/user.deleted", if_exp="async.data.user == event.data.user"),
    ],
)
def order_flow(ctx: fanout.ContextSync) -> str:
    ctx.step.run("reserve", lambda: "reserved")
    ctx.step.sleep("hold", "30s")
    ctx.step.run("charge", lambda: "charged")
    return "done"


@client.create_function(
    fn_id="queued-too-long", trigger=fanout.TriggerEvent(event="t/throttled"),
    throttle=fanout.Throttle(1, "10s"), timeouts=fanout.Timeouts(start="1s"),
)
def queued_too_long(ctx: fanout.ContextSync) -> str:
    return ctx.step.run("go", lambda: "went")


@client.create_function(
    fn_id="slot-too-late", trigger=fanout.TriggerEvent(event="t/slot"),
    concurrency=[fanout.Concurrency(1)], timeouts=fanout.Timeouts(start="1s"),
)
def slot_too_late(ctx: fanout.ContextSync) -> str:
    return ctx.step.run("go", time.sleep, ctx.event.data["seconds"]) or "slept"


@client.create_function(
    fn_id="too-slow", trigger=fanout.TriggerEvent(event="t/slow"),
    timeouts=fanout.Timeouts(finish="1s"),
)
def too_slow(ctx: fanout.ContextSync) -> str:
    ctx.step.run("first", lambda: 1)
    ctx.step.sleep("nap", "20s")
    return ctx.step.run("second", lambda: 2)


@client.create_function(fn_id="plain", trigger=fanout.TriggerEvent(event="t/plain"))
def plain(ctx: fanout.ContextSync) -> str:
    return ctx.step.run("go", lambda: "went")


def record_failure(ctx: fanout.ContextSync) -> dict[str, object]:
    data = ctx.event.data
    return {"name": ctx.event.name, "run_id": data["run_id"], "function_id": data["function_id"],
            "fn_id": data["fn_id"], "error": data["error"]["message"],
            "error_name": data["error"]["name"], "order": data["event"]["data"]["order"]}


@client.create_function(
    fn_id="fragile", trigger=fanout.TriggerEvent(event="t/fragile"), retries=0,
    on_failure=record_failure,
)
def fragile(ctx: fanout.ContextSync) -> None:
    ctx.step.run("explode", lambda: (_ for _ in ()).throw(RuntimeError("card declined")))


@client.create_function(
    fn_id="watcher",
    trigger=[fanout.TriggerEvent(event="fanout/function.finished",
                                 expression="event.data.fn_id != 'fragile'"),
             fanout.TriggerEvent(event="fanout/function.cancelled")],
)
def watcher(ctx: fanout.ContextSync) -> dict[str, object]:
    return {"name": ctx.event.name, "run_id": ctx.event.data["run_id"],
            "status": ctx.event.data["status"], "result": ctx.event.data.get("result")}


@client.create_function(
    fn_id="limited-child", trigger=fanout.TriggerEvent(event="t/limited"),
    rate_limit=fanout.RateLimit(1, "1m"),
)
def limited_child(ctx: fanout.ContextSync) -> int:
    return int(ctx.event.data["n"])


@client.create_function(fn_id="invoker", trigger=fanout.TriggerEvent(event="t/invoker"))
def invoker(ctx: fanout.ContextSync) -> list[object]:
    out: list[object] = []
    for n in (1, 2):
        try:
            out.append(ctx.step.invoke(f"call-{n}", function=limited_child, data={"n": n}))
        except fanout.InvokeError as exc:
            out.append(str(exc))
    return out


@pytest.fixture(scope="module")
def big_worker(request: pytest.FixtureRequest, clean_db: redis.Redis, log_dir: Path) -> Iterator[Worker]:
    yield from module_worker(__name__, log_dir, 4, request)


def _status(run_id: str) -> str | None:
    run = client.get_run(run_id)
    return run.status if run else None


def test_cancel_on_event_and_in_bulk(big_worker: Worker) -> None:
    eids = {o: client.emit("t/order.created", {"order_id": o, "user": f"u{o}"}) for o in range(1, 6)}
    rids = {o: run_of(client, e, "order-flow") for o, e in eids.items()}
    for rid in rids.values():
        wait_for(lambda rid=rid: _status(rid) == "sleeping")
    client.emit("t/order.cancelled", {"order_id": 2})
    client.emit("t/order.cancelled", {"order_id": 99})  # matches nothing
    client.emit("t/user.deleted", {"user": "u3"})  # if_exp against the run's event
    assert wait_run(client, rids[2]).status == "cancelled"
    assert "t/order.cancelled" in (wait_run(client, rids[2]).error or {})["message"]
    assert wait_run(client, rids[3]).status == "cancelled"
    assert {_status(rids[o]) for o in (1, 4, 5)} == {"sleeping"}
    assert client.cancel_runs("order-flow", if_exp="event.data.order_id == 4") == 1
    assert wait_run(client, rids[4]).status == "cancelled"
    assert client.cancel_runs("order-flow", started_before=time.time() - 3600) == 0
    assert client.cancel_runs(order_flow, started_after=time.time() - 3600) == 2
    for o in (1, 5):
        run = wait_run(client, rids[o])
        assert run.status == "cancelled" and "charge" not in {s.step_id for s in run.steps}
    # A run that ended stops listening: nothing is left registered.
    r = redis_for(__name__)
    assert not any(r.hlen(k) for k in r.scan_iter("fanout:fc:cx:*"))


def test_start_timeout_while_throttled(big_worker: Worker) -> None:
    first, second = client.send_sync([fanout.Event(name="t/throttled"), fanout.Event(name="t/throttled")])
    assert wait_run(client, run_of(client, first, "queued-too-long")).status == "completed"
    late = wait_run(client, run_of(client, second, "queued-too-long"), timeout=8)
    assert late.status == "cancelled" and late.error["type"] == "StartTimeout"  # type: ignore[index]
    assert late.steps == []


def test_start_timeout_while_waiting_for_a_slot(big_worker: Worker) -> None:
    blocker = client.emit("t/slot", {"seconds": 2.5})
    wait_for(lambda: _status(run_of(client, blocker, "slot-too-late")) == "running")
    waiter = client.emit("t/slot", {"seconds": 0})
    late = wait_run(client, run_of(client, waiter, "slot-too-late"), timeout=8)
    assert late.status == "cancelled" and late.error["type"] == "StartTimeout"  # type: ignore[index]
    assert wait_run(client, run_of(client, blocker, "slot-too-late")).status == "completed"


def test_finish_timeout_cancels_a_sleeping_run(big_worker: Worker) -> None:
    eid = client.emit("t/slow")
    run = wait_run(client, run_of(client, eid, "too-slow"), timeout=10)
    assert run.status == "cancelled" and run.error["type"] == "FinishTimeout"  # type: ignore[index]
    assert [s.step_id for s in run.steps] == ["first", "nap"]


def test_on_failure_gets_the_error_and_the_event(big_worker: Worker) -> None:
    eid = client.emit("t/fragile", {"order": 7})
    rid = run_of(client, eid, "fragile")
    assert wait_run(client, rid).status == "failed"
    failed_eid = derived_event_id(rid, "fanout/function.failed", 0)
    handled = wait_run(client, run_of(client, failed_eid, "fragile-failure"))
    assert handled.status == "completed", handled.error
    out = handled.output
    assert "card declined" in out.pop("error")  # type: ignore[union-attr]
    # function_id is the fully-qualified id, as fn.id and inngest-py's; the error has
    # inngest-py's name.
    assert out == {"name": "fanout/function.failed", "run_id": rid,
                   "function_id": fragile.id, "fn_id": "fragile",  # type: ignore[attr-defined]
                   "error_name": "StepError", "order": 7}
    assert fragile.id == "tests-fragile"  # type: ignore[attr-defined]


def test_system_events_once_each(big_worker: Worker) -> None:
    done = client.emit("t/plain")
    done_rid = run_of(client, done, "plain")
    order = client.emit("t/order.created", {"order_id": 50, "user": "x"})
    order_rid = run_of(client, order, "order-flow")
    wait_for(lambda: _status(order_rid) == "sleeping")
    assert client.cancel(order_rid)
    finished = run_of(client, derived_event_id(done_rid, "fanout/function.finished", 0), "watcher")
    cancelled = run_of(client, derived_event_id(order_rid, "fanout/function.cancelled", 0), "watcher")
    assert wait_run(client, finished).output == {
        "name": "fanout/function.finished", "run_id": done_rid, "status": "completed",
        "result": "went"}
    assert wait_run(client, cancelled).output["status"] == "cancelled"  # type: ignore[index]
    # Reporting an end again (a retried finish) publishes the same event ids: no new runs.
    before = len(client.list_runs(fn_id="watcher"))
    fields = client.runtime.store.run_fields(order_rid)
    endings.ended(client.runtime, order_rid, "cancelled", fields, None, {"message": "again"})
    time.sleep(1.0)
    after = client.list_runs(fn_id="watcher")
    assert len(after) == before
    # The watcher's own runs finish too, but a run started by a system event emits none.
    assert all(r.output["run_id"] not in {w.run_id for w in after} for r in after)  # type: ignore[index]


def test_an_invoked_run_that_is_skipped_fails_the_invoke(big_worker: Worker) -> None:
    run = wait_run(client, run_of(client, client.emit("t/invoker"), "invoker"))
    assert run.status == "completed", run.error
    first, second = run.output  # type: ignore[misc]
    assert first == 1
    assert "skipped" in second and "rate limit" in second
