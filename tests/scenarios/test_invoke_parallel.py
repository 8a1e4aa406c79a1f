"""ctx.step.invoke and parallel steps (ctx.group.parallel and asyncio.gather), with
real workers: branches run as separate tasks at the same time, the fan-in is an
idempotent set in Redis."""

from __future__ import annotations

import asyncio
import time

import fanout
from tests.support import make_app, redis_for, run_of, wait_run

app, client = make_app(__name__)


def span(name: str, seconds: float = 1.0) -> dict[str, float]:
    start = time.time()
    time.sleep(seconds)
    redis_for(__name__).incr(f"side:{name}")
    return {"start": start, "end": time.time()}


@client.create_function(fn_id="child", trigger=fanout.TriggerEvent(event="t/child"), retries=1)
def child(ctx: fanout.ContextSync) -> dict[str, object]:
    if ctx.event.data.get("fail"):
        ctx.step.run("boom", lambda: (_ for _ in ()).throw(ValueError("child broke")))
    if ctx.event.data.get("slow"):
        ctx.step.sleep("wait", "3s")
    return {"doubled": ctx.event.data["n"] * 2}


@client.create_function(fn_id="parent", trigger=fanout.TriggerEvent(event="t/parent"))
def parent(ctx: fanout.ContextSync) -> object:
    data = ctx.event.data
    try:
        return ctx.step.invoke("call-child", function=child, data=data, timeout=data.get("timeout"))
    except fanout.InvokeError as exc:
        return {"error": type(exc).__name__, "message": str(exc)}


@client.create_function(fn_id="missing-child", trigger=fanout.TriggerEvent(event="t/missing"))
def missing_child(ctx: fanout.ContextSync) -> object:
    return ctx.step.invoke("call", function="no-such-function")


@client.create_function(fn_id="group", trigger=fanout.TriggerEvent(event="t/group"))
def group(ctx: fanout.ContextSync) -> dict[str, object]:
    a, b, c = ctx.group.parallel((
        lambda: ctx.step.run("a", span, "a"),
        lambda: ctx.step.run("b", span, "b"),
        lambda: ctx.step.run("c", span, "c", 0.1),
    ))
    after = ctx.step.run("after", lambda: "joined")
    return {"a": a, "b": b, "c": c, "after": after}


@client.create_function(fn_id="gather", trigger=fanout.TriggerEvent(event="t/gather"))
async def gather(ctx: fanout.Context) -> dict[str, object]:
    first = await ctx.step.run("first", lambda: 1)
    x, y = await asyncio.gather(
        ctx.step.run("x", span, "x"),
        ctx.step.run("y", span, "y"),
    )
    return {"first": first, "x": x, "y": y}


@client.create_function(fn_id="too-wide", trigger=fanout.TriggerEvent(event="t/too-wide"))
def too_wide(ctx: fanout.ContextSync) -> object:
    return ctx.group.parallel([lambda i=i: ctx.step.run(f"s{i}", lambda: i) for i in range(1001)])


def _overlap(p: dict[str, float], q: dict[str, float]) -> bool:
    return p["start"] < q["end"] and q["start"] < p["end"]


def test_invoke_returns_the_child_output(worker: object) -> None:
    eid = client.emit("t/parent", {"n": 21})
    run = wait_run(client, run_of(client, eid, "parent"))
    assert run.status == "completed", run.error
    assert run.output == {"doubled": 42}
    (step,) = run.steps
    assert step.kind == "invoke"
    children = client.list_runs(fn_id="child")
    kid = next(c for c in children if c.parent_run_id == run.run_id)
    assert kid.output == {"doubled": 42}


def test_invoke_failure_and_timeout_are_non_retriable(worker: object) -> None:
    failed = client.emit("t/parent", {"n": 1, "fail": True})
    run = wait_run(client, run_of(client, failed, "parent"))
    assert run.output["error"] == "InvokeError"
    assert "child broke" in run.output["message"]
    kid = next(c for c in client.list_runs(fn_id="child") if c.parent_run_id == run.run_id)
    assert kid.status == "failed"
    assert kid.steps[0].attempts == 2  # the child keeps its own retries (retries=1)
    slow = client.emit("t/parent", {"n": 1, "slow": True, "timeout": "1s"})
    run = wait_run(client, run_of(client, slow, "parent"))
    assert run.output["error"] == "InvokeError" and "timed out" in run.output["message"]


def test_invoke_unknown_function(worker: object) -> None:
    eid = client.emit("t/missing")
    run = wait_run(client, run_of(client, eid, "missing-child"))
    assert run.status == "failed"
    assert "not a function declared" in run.error["message"]
    assert run.steps[0].attempts == 0 or run.steps[0].status == "failed"


def test_group_parallel_branches_run_at_once(worker: object) -> None:
    eid = client.emit("t/group")
    run = wait_run(client, run_of(client, eid, "group"))
    assert run.status == "completed", run.error
    out = run.output
    assert out["after"] == "joined"
    assert _overlap(out["a"], out["b"])  # two 1 s branches on two worker processes
    r = redis_for(__name__)
    assert [int(r.get(f"side:{k}")) for k in "abc"] == [1, 1, 1]
    assert [s.step_id for s in run.steps] == ["a", "b", "c", "after"]


def test_asyncio_gather_runs_branches_as_tasks(worker: object) -> None:
    eid = client.emit("t/gather")
    run = wait_run(client, run_of(client, eid, "gather"))
    assert run.status == "completed", run.error
    assert run.output["first"] == 1
    assert _overlap(run.output["x"], run.output["y"])
    r = redis_for(__name__)
    assert int(r.get("side:x")) == 1 and int(r.get("side:y")) == 1


def test_parallel_plan_past_the_step_limit_fails_at_once(worker: object) -> None:
    eid = client.emit("t/too-wide")
    run = wait_run(client, run_of(client, eid, "too-wide"))
    assert run.status == "failed"
    assert "limit of 1000 steps" in run.error["message"]
    assert run.steps == []
