"""``ctx.group.parallel(..., parallel_mode=ParallelMode.RACE)``: the group returns when
the first branch finishes and the run goes on; the other branches go on to their end
(every step of a losing branch runs and is recorded; their results are ignored), and
the run ends after them, as in inngest-py (sync and async handlers)."""

from __future__ import annotations

import time

import pytest

import fanout
from fanout import ParallelMode
from tests.support import make_app, redis_for, run_of, wait_for, wait_run

app, client = make_app(__name__)


def slow(ctx: fanout.Context | fanout.ContextSync) -> str:
    # Holds its worker until the test releases it: the run must finish before that.
    r = redis_for(__name__)
    deadline = time.monotonic() + 40
    while not r.get(f"release:{ctx.run_id}") and time.monotonic() < deadline:
        time.sleep(0.05)
    return "slow"


@client.create_function(fn_id="race", trigger=fanout.TriggerEvent(event="t/race"), retries=0)
def race(ctx: fanout.ContextSync) -> object:
    def fast_group() -> str:
        ctx.step.run("a.1", lambda: "a1")
        return str(ctx.step.run("a.2", lambda: "fast"))

    def slow_group() -> str:
        ctx.step.run("b", slow, ctx)
        ctx.step.run("b.2", lambda: "b2")
        return str(ctx.step.run("b.3", lambda: "b3"))

    (winner,) = ctx.group.parallel((fast_group, slow_group), parallel_mode=ParallelMode.RACE)
    after = ctx.step.run("after", lambda: "after")
    return {"winner": winner, "after": after}


@client.create_function(fn_id="race-async", trigger=fanout.TriggerEvent(event="t/race-async"),
                        retries=0)
async def race_async(ctx: fanout.Context) -> object:
    async def fast_group() -> str:
        await ctx.step.run("a.1", lambda: "a1")
        return str(await ctx.step.run("a.2", lambda: "fast"))

    async def slow_group() -> str:
        await ctx.step.run("b", slow, ctx)
        await ctx.step.run("b.2", lambda: "b2")
        return str(await ctx.step.run("b.3", lambda: "b3"))

    (winner,) = await ctx.group.parallel((fast_group, slow_group),
                                         parallel_mode=ParallelMode.RACE)
    after = await ctx.step.run("after", lambda: "after")
    return {"winner": winner, "after": after}


@client.create_function(fn_id="quick", trigger=fanout.TriggerEvent(event="t/never-quick"))
def quick(ctx: fanout.ContextSync) -> str:
    return "child"


@client.create_function(fn_id="race-invoke", trigger=fanout.TriggerEvent(event="t/race-invoke"),
                        retries=0)
def race_invoke(ctx: fanout.ContextSync) -> object:
    (winner,) = ctx.group.parallel(
        (lambda: ctx.step.run("b", slow, ctx), lambda: ctx.step.invoke("kid", function=quick)),
        parallel_mode=ParallelMode.RACE,
    )
    return winner


@client.create_function(fn_id="bad-mode", trigger=fanout.TriggerEvent(event="t/bad-mode"),
                        retries=0)
def bad_mode(ctx: fanout.ContextSync) -> object:
    return ctx.group.parallel((lambda: 1,), parallel_mode="first")  # type: ignore[arg-type]


def _steps(rid: str) -> dict[str, str]:
    info = client.get_run(rid)
    return {} if info is None else {s.step_id: s.status for s in info.steps}


@pytest.mark.parametrize("fn_id", ["race", "race-async"])
def test_first_branch_to_finish_wins_and_the_losers_go_on(worker: object, fn_id: str) -> None:
    eid = client.emit(f"t/{fn_id}")
    rid = run_of(client, eid, fn_id)
    try:
        # The group returned with the fast branch: the step after it ran while the
        # slow branch's first step still holds its worker.
        wait_for(lambda: _steps(rid).get("after") == "completed", timeout=30)
        assert _steps(rid)["b"] != "completed"
    finally:
        redis_for(__name__).set(f"release:{rid}", 1)
    run = wait_run(client, rid, timeout=30)
    assert run.status == "completed", run.error
    assert run.output == {"winner": "fast", "after": "after"}
    # The losing branch went on to its end: each of its steps ran and is recorded.
    steps = {s.step_id: s for s in run.steps}
    assert [steps[s].status for s in ("b", "b.2", "b.3")] == ["completed"] * 3
    assert [steps[s].output for s in ("b", "b.2", "b.3")] == ["slow", "b2", "b3"]
    assert run.warnings == []


def test_an_invoke_can_win_a_race(worker: object) -> None:
    rid = run_of(client, client.emit("t/race-invoke"), "race-invoke")
    try:
        wait_for(lambda: _steps(rid).get("kid") == "completed", timeout=30)
    finally:
        redis_for(__name__).set(f"release:{rid}", 1)
    run = wait_run(client, rid, timeout=30)
    assert run.status == "completed", run.error
    assert run.output == "child"


def test_unknown_parallel_mode_is_refused(worker: object) -> None:
    eid = client.emit("t/bad-mode")
    run = wait_run(client, run_of(client, eid, "bad-mode"))
    assert run.status == "failed"
    assert "ParallelMode.RACE" in run.error["message"]
