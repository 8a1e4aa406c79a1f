"""Sync and async handlers, memoization across passes, loops of one step id,
nested steps, non-JSON results, and what ctx carries."""

from __future__ import annotations

import asyncio

import fanout
from tests.support import make_app, redis_for, run_of, wait_run

app, client = make_app(__name__)


def bump(name: str) -> int:
    return int(redis_for(__name__).incr(f"side:{name}"))


async def abump(name: str) -> int:
    await asyncio.sleep(0.01)
    return bump(name)


@client.create_function(fn_id="sync-fn", trigger=fanout.TriggerEvent(event="t/sync"))
def sync_fn(ctx: fanout.ContextSync) -> dict[str, object]:
    a = ctx.step.run("a", bump, "sync-a")
    b = ctx.step.run("b", abump, "sync-b")  # an async step inside a sync handler
    total = 0
    for i in range(3):  # one step id in a loop: a, a:1, a:2 as Inngest does
        total += ctx.step.run("loop", lambda i=i: i * 10)
    return {"a": a, "b": b, "total": total, "run_id": ctx.run_id, "fn_id": ctx.fn_id,
            "event": ctx.event.name, "n_events": len(ctx.events), "x": ctx.event.data["x"]}


@client.create_function(fn_id="async-fn", trigger=fanout.TriggerEvent(event="t/async"))
async def async_fn(ctx: fanout.Context) -> dict[str, object]:
    a = await ctx.step.run("a", abump, "async-a")
    b = await ctx.step.run("b", bump, "async-b")  # a sync step inside an async handler
    # Code outside steps runs on every pass; steps run once.
    bump("async-outside")
    return {"a": a, "b": b}


def _nested_inner(ctx: fanout.ContextSync) -> str:
    return str(ctx.step.run("inner", lambda: 1))


@client.create_function(fn_id="nested", trigger=fanout.TriggerEvent(event="t/nested"), retries=3)
def nested(ctx: fanout.ContextSync) -> str:
    try:
        ctx.step.run("outer", _nested_inner, ctx)
    except fanout.StepError as exc:
        return f"{exc.error_type}: {exc.error_message}"
    return "no error"


@client.create_function(fn_id="not-json", trigger=fanout.TriggerEvent(event="t/not-json"))
def not_json(ctx: fanout.ContextSync) -> None:
    ctx.step.run("returns-a-set", lambda: {1, 2, 3})


def test_sync_handler(worker: object) -> None:
    eid = client.emit("t/sync", {"x": 42})
    run = wait_run(client, run_of(client, eid, "sync-fn"))
    assert run.status == "completed", run.error
    assert run.output == {"a": 1, "b": 1, "total": 30, "run_id": run.run_id, "fn_id": "sync-fn",
                          "event": "t/sync", "n_events": 1, "x": 42}
    assert [s.step_id for s in run.steps] == ["a", "b", "loop", "loop:1", "loop:2"]
    assert [s.output for s in run.steps[2:]] == [0, 10, 20]
    assert all(s.attempts == 1 and s.status == "completed" for s in run.steps)
    assert run.started_at and run.ended_at and run.created_at
    assert run.created_at <= run.started_at <= run.ended_at


def test_async_handler_and_memoization(worker: object) -> None:
    eid = client.emit("t/async")
    run = wait_run(client, run_of(client, eid, "async-fn"))
    assert run.status == "completed", run.error
    assert run.output == {"a": 1, "b": 1}
    r = redis_for(__name__)
    # Each step's side effect happened once; the code outside steps ran on the
    # final pass only, which replayed both memoized steps.
    assert int(r.get("side:async-a") or 0) == 1
    assert int(r.get("side:async-b") or 0) == 1
    assert int(r.get("side:async-outside") or 0) == 1


def test_step_inside_step_fails_the_run(worker: object) -> None:
    eid = client.emit("t/nested")
    run = wait_run(client, run_of(client, eid, "nested"))
    assert run.status == "failed"  # the handler's `except StepError` never sees it
    assert run.error["type"] == "NestedStepError"
    assert "ctx.step.run('inner')" in run.error["message"]
    assert not [s for s in run.steps if s.status == "completed"]


def test_non_json_step_result(worker: object) -> None:
    eid = client.emit("t/not-json")
    run = wait_run(client, run_of(client, eid, "not-json"))
    assert run.status == "failed"
    assert "not JSON-serializable" in run.error["message"]
    assert run.steps[0].attempts == 1
