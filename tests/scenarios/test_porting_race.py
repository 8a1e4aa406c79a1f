"""``ctx.group.parallel(..., parallel_mode=ParallelMode.RACE)``: the first branch to
finish wins and the run goes on without waiting for the others, whose results are
ignored (sync and async handlers)."""

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

    (winner,) = ctx.group.parallel(
        (fast_group, lambda: ctx.step.run("b", slow, ctx)),
        parallel_mode=ParallelMode.RACE,
    )
    after = ctx.step.run("after", lambda: "after")
    return {"winner": winner, "after": after}


@client.create_function(fn_id="race-async", trigger=fanout.TriggerEvent(event="t/race-async"),
                        retries=0)
async def race_async(ctx: fanout.Context) -> object:
    async def fast_group() -> str:
        await ctx.step.run("a.1", lambda: "a1")
        return str(await ctx.step.run("a.2", lambda: "fast"))

    (winner,) = await ctx.group.parallel(
        (fast_group, lambda: ctx.step.run("b", slow, ctx)),
        parallel_mode=ParallelMode.RACE,
    )
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


@pytest.mark.parametrize("fn_id", ["race", "race-async"])
def test_first_branch_to_finish_wins(worker: object, fn_id: str) -> None:
    eid = client.emit(f"t/{fn_id}")
    rid = run_of(client, eid, fn_id)
    try:
        run = wait_run(client, rid, timeout=30)
    finally:
        redis_for(__name__).set(f"release:{rid}", 1)
    assert run.status == "completed", run.error
    assert run.output == {"winner": "fast", "after": "after"}
    # The loser still ends (its result is ignored); the run is not disturbed by it.
    wait_for(lambda: any(s.step_id == "b" and s.status == "completed"
                         for s in client.get_run(rid).steps))  # type: ignore[union-attr]
    assert client.get_run(rid).output == run.output  # type: ignore[union-attr]


def test_an_invoke_can_win_a_race(worker: object) -> None:
    rid = run_of(client, client.emit("t/race-invoke"), "race-invoke")
    try:
        run = wait_run(client, rid, timeout=30)
    finally:
        redis_for(__name__).set(f"release:{rid}", 1)
    assert run.status == "completed", run.error
    assert run.output == "child"


def test_unknown_parallel_mode_is_refused(worker: object) -> None:
    eid = client.emit("t/bad-mode")
    run = wait_run(client, run_of(client, eid, "bad-mode"))
    assert run.status == "failed"
    assert "ParallelMode.RACE" in run.error["message"]
