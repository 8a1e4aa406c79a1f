"""Durations in code ported from inngest-py mean what they mean there, with a real
worker, in sync and async handlers: an int is milliseconds (``sleep("z", 1500)``
wakes after 1.5 s, ``RetryAfterError("x", 1000)`` retries after 1 s, a timeout of
1000 is one second), and a naive datetime is local time.

The worker runs with ``TZ=Europe/Paris`` so that local time is not UTC.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import fanout
from tests.support import Worker, make_app, redis_for, run_of, wait_run

app, client = make_app(__name__, app_id="port-dur")


def now() -> float:
    return time.time()


@pytest.fixture(scope="module")
def worker(request: pytest.FixtureRequest, clean_db: redis.Redis, log_dir: Path) -> Iterator[Worker]:
    w = Worker(__name__, log_dir=log_dir, env={"TZ": "Europe/Paris"})
    yield w
    w.stop()
    if request.session.testsfailed:
        print(f"\n--- worker log {w.log_path} (tail) ---\n{w.log()[-3000:]}")


# --------------------------------------------------------------------------- sleep


@client.create_function(fn_id="sleep-sync", trigger=fanout.TriggerEvent(event="pd/sleep-sync"))
def sleep_sync(ctx: fanout.ContextSync) -> float:
    before = ctx.step.run("before", now)
    ctx.step.sleep("z", 1500)
    return float(ctx.step.run("after", now)) - before


@client.create_function(fn_id="sleep-async", trigger=fanout.TriggerEvent(event="pd/sleep-async"))
async def sleep_async(ctx: fanout.Context) -> float:
    before = await ctx.step.run("before", now)
    await ctx.step.sleep("z", 1500)
    return float(await ctx.step.run("after", now)) - before


@pytest.mark.parametrize("fn_id", ["sleep-sync", "sleep-async"])
def test_sleep_of_an_int_is_milliseconds(worker: Worker, fn_id: str) -> None:
    eid = client.emit(f"pd/{fn_id}")
    run = wait_run(client, run_of(client, eid, fn_id), timeout=60)
    assert run.status == "completed", run.error
    assert run.output >= 1.5  # it did not wake before 1.5 s
    # (1500 read as seconds would sleep 25 minutes: the run would not have ended.)


# --------------------------------------------------------------------------- RetryAfterError


def limited(key: str) -> str:
    times = redis_for(__name__).rpush(f"side:{key}", time.time())
    if times == 1:
        raise fanout.RetryAfterError("rate limited", 1000)
    return "done"


@client.create_function(fn_id="retry-sync", trigger=fanout.TriggerEvent(event="pd/retry-sync"))
def retry_sync(ctx: fanout.ContextSync) -> str:
    return str(ctx.step.run("call", limited, "retry-sync"))


@client.create_function(fn_id="retry-async", trigger=fanout.TriggerEvent(event="pd/retry-async"))
async def retry_async(ctx: fanout.Context) -> str:
    return str(await ctx.step.run("call", limited, "retry-async"))


@pytest.mark.parametrize("fn_id", ["retry-sync", "retry-async"])
def test_retry_after_an_int_is_milliseconds(worker: Worker, fn_id: str) -> None:
    eid = client.emit(f"pd/{fn_id}")
    run = wait_run(client, run_of(client, eid, fn_id), timeout=60)
    assert run.status == "completed", run.error
    assert run.output == "done" and run.steps[0].attempts == 2
    t = [float(x) for x in redis_for(__name__).lrange(f"side:{fn_id}", 0, -1)]
    assert t[1] - t[0] >= 1.0  # the test client's backoff is 0.2 s; the error asked for 1 s


# --------------------------------------------------------------------------- wait and invoke timeouts


@client.create_function(fn_id="wait-sync", trigger=fanout.TriggerEvent(event="pd/wait-sync"))
def wait_sync(ctx: fanout.ContextSync) -> dict[str, Any]:
    before = ctx.step.run("before", now)
    ev = ctx.step.wait_for_event("w", event="pd/never", timeout=1000)
    return {"event": ev, "waited": float(ctx.step.run("after", now)) - before}


@client.create_function(fn_id="wait-async", trigger=fanout.TriggerEvent(event="pd/wait-async"))
async def wait_async(ctx: fanout.Context) -> dict[str, Any]:
    before = await ctx.step.run("before", now)
    ev = await ctx.step.wait_for_event("w", event="pd/never", timeout=1000)
    return {"event": ev, "waited": float(await ctx.step.run("after", now)) - before}


@pytest.mark.parametrize("fn_id", ["wait-sync", "wait-async"])
def test_wait_for_event_timeout_is_milliseconds(worker: Worker, fn_id: str) -> None:
    eid = client.emit(f"pd/{fn_id}")
    run = wait_run(client, run_of(client, eid, fn_id), timeout=60)
    assert run.status == "completed", run.error
    assert run.output["event"] is None and run.output["waited"] >= 1.0


@client.create_function(fn_id="slow-child", trigger=fanout.TriggerEvent(event="pd/never"),
                        retries=0)
def slow_child(ctx: fanout.ContextSync) -> None:
    ctx.step.sleep("sleep", 60_000)


@client.create_function(fn_id="invoke-sync", trigger=fanout.TriggerEvent(event="pd/invoke-sync"),
                        retries=0)
def invoke_sync(ctx: fanout.ContextSync) -> dict[str, Any]:
    before = ctx.step.run("before", now)
    try:
        ctx.step.invoke("invoke", function=slow_child, timeout=1000)
    except fanout.StepError as err:
        waited = float(ctx.step.run("after", now)) - before
        return {"name": err.name, "invoke_error": isinstance(err, fanout.InvokeError),
                "waited": waited}
    return {"name": None}


@client.create_function(fn_id="invoke-async",
                        trigger=fanout.TriggerEvent(event="pd/invoke-async"), retries=0)
async def invoke_async(ctx: fanout.Context) -> dict[str, Any]:
    before = await ctx.step.run("before", now)
    try:
        await ctx.step.invoke("invoke", function=slow_child, timeout=dt.timedelta(seconds=1))
    except fanout.StepError as err:
        waited = float(await ctx.step.run("after", now)) - before
        return {"name": err.name, "invoke_error": isinstance(err, fanout.InvokeError),
                "waited": waited}
    return {"name": None}


@pytest.mark.parametrize("fn_id", ["invoke-sync", "invoke-async"])
def test_invoke_timeout_is_milliseconds_and_raises_a_step_error(worker: Worker, fn_id: str) -> None:
    eid = client.emit(f"pd/{fn_id}")
    run = wait_run(client, run_of(client, eid, fn_id), timeout=60)
    assert run.status == "completed", run.error
    assert (run.output["name"], run.output["invoke_error"]) == ("InvokeTimeoutError", True)
    assert run.output["waited"] >= 1.0


# --------------------------------------------------------------------------- flow control


@client.create_function(fn_id="throttled", trigger=fanout.TriggerEvent(event="pd/throttled"),
                        throttle=fanout.Throttle(limit=1, period=1000))
def throttled(ctx: fanout.ContextSync) -> float:
    return float(ctx.step.run("started", now))


def test_throttle_period_is_milliseconds(worker: Worker) -> None:
    eids = [client.emit("pd/throttled") for _ in range(3)]
    runs = [wait_run(client, run_of(client, e, "throttled"), timeout=60) for e in eids]
    assert all(r.status == "completed" for r in runs), [r.error for r in runs]
    starts = sorted(float(r.output) for r in runs)
    # One admission per 1000 ms: the third run starts at least two periods after the
    # first was admitted, which is when it was created (1000 s would not have let the
    # second start). Measured from the creation, not from the first run's own start,
    # which a busy worker may delay.
    admitted = min(r.created_at.timestamp() for r in runs if r.created_at is not None)
    assert starts[2] - admitted >= 1.9, (starts, admitted)


@client.create_function(fn_id="batched", trigger=fanout.TriggerEvent(event="pd/batched"),
                        batch_events=fanout.Batch(max_size=100, timeout=1000))
async def batched(ctx: fanout.Context) -> dict[str, Any]:
    sent = min(float(e.data["at"]) for e in ctx.events)
    return {"n": len(ctx.events), "after": await ctx.step.run("started", now) - sent}


def test_batch_timeout_is_milliseconds(worker: Worker) -> None:
    eids = client.send_sync([fanout.Event(name="pd/batched", data={"at": time.time()})
                             for _ in range(3)])
    rid = run_of(client, eids[0], "batched")
    run = wait_run(client, rid, timeout=60)
    assert run.status == "completed", run.error
    # The batch was not full: it closed when its 1000 ms timeout passed.
    assert run.output["n"] == 3 and run.output["after"] >= 1.0


# --------------------------------------------------------------------------- naive datetimes


def local_target() -> str:
    """1.5 s from now on the worker's local wall clock, as a naive ISO string."""
    return (dt.datetime.now() + dt.timedelta(seconds=1.5)).isoformat()


def local_offset() -> float:
    offset = dt.datetime.now().astimezone().utcoffset()
    return offset.total_seconds() if offset else 0.0


@client.create_function(fn_id="until-sync", trigger=fanout.TriggerEvent(event="pd/until-sync"))
def until_sync(ctx: fanout.ContextSync) -> dict[str, float]:
    offset = ctx.step.run("offset", local_offset)
    target = ctx.step.run("target", local_target)
    before = ctx.step.run("before", now)
    ctx.step.sleep_until("z", dt.datetime.fromisoformat(target))
    return {"offset": offset, "slept": float(ctx.step.run("after", now)) - before}


@client.create_function(fn_id="until-async", trigger=fanout.TriggerEvent(event="pd/until-async"))
async def until_async(ctx: fanout.Context) -> dict[str, float]:
    offset = await ctx.step.run("offset", local_offset)
    target = await ctx.step.run("target", local_target)
    before = await ctx.step.run("before", now)
    await ctx.step.sleep_until("z", dt.datetime.fromisoformat(target))
    return {"offset": offset, "slept": float(await ctx.step.run("after", now)) - before}


@pytest.mark.parametrize("fn_id", ["until-sync", "until-async"])
def test_sleep_until_a_naive_datetime_is_local_time(worker: Worker, fn_id: str) -> None:
    eid = client.emit(f"pd/{fn_id}")
    run = wait_run(client, run_of(client, eid, fn_id), timeout=60)
    assert run.status == "completed", run.error
    assert run.output["offset"] != 0  # the worker's local time is not UTC
    # Read as UTC, the naive target would be an hour away: the run would not end.
    assert run.output["slept"] >= 1.0
