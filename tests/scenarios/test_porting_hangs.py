"""Runs that would hang fail instead, with a non-retriable error naming the steps:
a parallel step that later passes no longer reach, a new step that appears only
while planned branches execute, and pausing steps (invoke, wait_for_event) awaited
together with other new steps. The watchdog fails a run that nothing will move."""

from __future__ import annotations

import asyncio
import logging

import pytest

import fanout
from fanout._redis.keyspace import Keyspace
from tests.support import make_app, redis_for, run_of, wait_for, wait_run

app, client = make_app(__name__)


def first_pass(ctx: fanout.Context | fanout.ContextSync) -> bool:
    """True on the run's first pass only (a handler whose code differs between passes)."""
    return bool(redis_for(__name__).set(f"first:{ctx.run_id}", 1, nx=True))


@client.create_function(fn_id="gone", trigger=fanout.TriggerEvent(event="t/gone"), retries=0)
def gone(ctx: fanout.ContextSync) -> object:
    steps = [lambda: ctx.step.run("a", lambda: "a")]
    if first_pass(ctx):
        steps.append(lambda: ctx.step.run("b", lambda: "b"))
    return ctx.group.parallel(steps)


@client.create_function(fn_id="gone-async", trigger=fanout.TriggerEvent(event="t/gone-async"),
                        retries=0)
async def gone_async(ctx: fanout.Context) -> object:
    steps = [ctx.step.run("a", lambda: "a")]
    if first_pass(ctx):
        steps.append(ctx.step.run("b", lambda: "b"))
    return await asyncio.gather(*steps)


@client.create_function(fn_id="appears", trigger=fanout.TriggerEvent(event="t/appears"),
                        retries=0)
def appears(ctx: fanout.ContextSync) -> object:
    if not first_pass(ctx):
        ctx.step.run("late", lambda: "late")
    return ctx.group.parallel([lambda: ctx.step.run("a", lambda: 1),
                               lambda: ctx.step.run("b", lambda: 2)])


@client.create_function(fn_id="appears-async",
                        trigger=fanout.TriggerEvent(event="t/appears-async"), retries=0)
async def appears_async(ctx: fanout.Context) -> object:
    if not first_pass(ctx):
        await ctx.step.run("late", lambda: "late")
    return await asyncio.gather(ctx.step.run("a", lambda: 1), ctx.step.run("b", lambda: 2))


@client.create_function(fn_id="kid", trigger=fanout.TriggerEvent(event="t/kid"))
def kid(ctx: fanout.ContextSync) -> int:
    if ctx.event.data.get("slow"):
        ctx.step.sleep("nap", "30s")
    return int(ctx.event.data.get("n", 7))


@client.create_function(fn_id="invoke-in-group",
                        trigger=fanout.TriggerEvent(event="t/invoke-in-group"), retries=0)
async def invoke_in_group(ctx: fanout.Context) -> object:
    return await asyncio.gather(
        ctx.step.run("a", lambda: 1),
        ctx.step.run("b", lambda: 2),
        ctx.step.invoke("c", function=kid, data={"n": 3}),
        ctx.step.invoke_by_id("d", function_id="kid", data={"n": 4}),
    )


@client.create_function(fn_id="invoke-in-group-sync",
                        trigger=fanout.TriggerEvent(event="t/invoke-in-group-sync"), retries=0)
def invoke_in_group_sync(ctx: fanout.ContextSync) -> object:
    return ctx.group.parallel([
        lambda: ctx.step.run("a", lambda: 1),
        lambda: ctx.step.invoke("c", function=kid, data={"n": 3}),
        lambda: ctx.step.send_event("e", fanout.Event(name="t/nothing")),
    ])


@client.create_function(fn_id="invoke-timeout-in-group",
                        trigger=fanout.TriggerEvent(event="t/invoke-timeout-in-group"),
                        retries=0)
def invoke_timeout_in_group(ctx: fanout.ContextSync) -> object:
    try:
        ctx.group.parallel([
            lambda: ctx.step.run("a", lambda: 1),
            lambda: ctx.step.invoke("c", function=kid, data={"slow": True}, timeout="1s"),
        ])
    except fanout.InvokeError as exc:
        return f"timed out: {exc}"
    return "no timeout"


@client.create_function(fn_id="wait-in-group",
                        trigger=fanout.TriggerEvent(event="t/wait-in-group"), retries=0)
async def wait_in_group(ctx: fanout.Context) -> object:
    return await asyncio.gather(
        ctx.step.run("a", lambda: 1),
        ctx.step.run("b", lambda: 2),
        ctx.step.wait_for_event("w", event="t/never", timeout="1s"),
    )


@client.create_function(fn_id="slow-group", trigger=fanout.TriggerEvent(event="t/slow-group"))
def slow_group(ctx: fanout.ContextSync) -> object:
    return ctx.group.parallel([lambda: ctx.step.run("a", lambda: 1),
                               lambda: ctx.step.run("b", lambda: 2)])


@pytest.mark.parametrize("fn_id", ["gone", "gone-async"])
def test_parallel_step_gone_on_a_later_pass_fails_the_run(worker: object, fn_id: str) -> None:
    eid = client.emit(f"t/{fn_id}")
    run = wait_run(client, run_of(client, eid, fn_id))
    assert run.status == "failed"
    assert run.error["type"] == "NonDeterminismError"
    assert "'b'" in run.error["message"] and "parallel" in run.error["message"]


@pytest.mark.parametrize("fn_id", ["appears", "appears-async"])
def test_new_step_while_branches_execute_fails_the_run(worker: object, fn_id: str) -> None:
    eid = client.emit(f"t/{fn_id}")
    run = wait_run(client, run_of(client, eid, fn_id))
    assert run.status == "failed"
    assert run.error["type"] == "NonDeterminismError"
    assert "'late'" in run.error["message"]


def test_pausing_step_in_a_parallel_group_fails_clearly(worker: object) -> None:
    eid = client.emit("t/wait-in-group")
    run = wait_run(client, run_of(client, eid, "wait-in-group"))
    assert run.status == "failed"
    assert run.error["type"] == "NonRetriableError"
    assert "wait_for_event('w')" in run.error["message"] and "parallel" in run.error["message"]
    assert not [s for s in run.steps if s.status == "queued"]


def test_invoke_in_an_async_parallel_group_runs(worker: object) -> None:
    eid = client.emit("t/invoke-in-group")
    run = wait_run(client, run_of(client, eid, "invoke-in-group"))
    assert run.status == "completed", run.error
    assert run.output == [1, 2, 3, 4]


def test_invoke_and_send_event_in_a_sync_parallel_group_run(worker: object) -> None:
    eid = client.emit("t/invoke-in-group-sync")
    run = wait_run(client, run_of(client, eid, "invoke-in-group-sync"))
    assert run.status == "completed", run.error
    assert run.output[:2] == [1, 3] and len(run.output[2]) == 1


def test_invoke_timeout_in_a_parallel_group(worker: object) -> None:
    eid = client.emit("t/invoke-timeout-in-group")
    run = wait_run(client, run_of(client, eid, "invoke-timeout-in-group"))
    assert run.status == "completed", run.error
    assert run.output.startswith("timed out")


def test_watchdog_fails_a_run_nothing_will_move(worker: object,
                                                caplog: pytest.LogCaptureFixture) -> None:
    eid = client.emit("t/slow-group")
    rid = run_of(client, eid, "slow-group")
    assert wait_run(client, rid).status == "completed"
    # Make the state of a hung run: running, a branch queued, no task, lease or timer.
    r = redis_for(__name__)
    key = f"fanout:run:{{{rid}}}"
    raw = r.hget(key, "s:b")
    assert raw is not None
    import json

    rec = json.loads(raw)
    rec["st"] = "queued"
    r.hset(key, mapping={"st": "running", "s:b": json.dumps(rec), "lease": "", "lu": "0"})
    for key in Keyspace().timer_keys:
        r.zrem(key, rid, f"branch:{rid}:b")
    with caplog.at_level(logging.ERROR, logger="fanout"):
        # The worker's own watchdog (every minute) may have seen the run first; if not,
        # the first look only marks it.
        if r.hget(key, "stk") is None:
            assert client.check_stuck_runs() == []  # seen once: not failed yet
        assert client.check_stuck_runs() == [rid]
    info = wait_for(lambda: client.get_run(rid))
    assert info.status == "failed"
    assert info.error["type"] == "StuckRun" and "'b'" in info.error["message"]
    assert any(rid in rec.getMessage() for rec in caplog.records if rec.levelno == logging.ERROR)


@client.create_function(fn_id="napper", trigger=fanout.TriggerEvent(event="t/napper"))
def napper(ctx: fanout.ContextSync) -> str:
    ctx.step.sleep("nap", "1h")
    return "woke"


def test_watchdog_fails_a_run_without_a_timer_and_spares_healthy_ones(worker: object) -> None:
    lost = run_of(client, client.emit("t/napper", {"n": 1}), "napper")
    fine = run_of(client, client.emit("t/napper", {"n": 2}), "napper")
    for rid in (lost, fine):
        wait_for(lambda rid=rid: getattr(client.get_run(rid), "status", None) == "sleeping")
    redis_for(__name__).zrem(Keyspace().timer_key(lost), lost)  # nothing will wake it now
    # Two looks (the worker's own watchdog may take one of them).
    failed = client.check_stuck_runs() + client.check_stuck_runs()
    assert lost in failed and fine not in failed
    info = client.get_run(lost)
    assert info is not None and info.status == "failed"
    assert "no task, lease or timer" in info.error["message"]
    assert client.get_run(fine).status == "sleeping"  # type: ignore[union-attr]
    client.cancel(fine)


@client.create_function(fn_id="one-step", trigger=fanout.TriggerEvent(event="t/one-step"))
def one_step(ctx: fanout.ContextSync) -> int:
    return int(ctx.step.run("s", lambda: 7))


def _lose_end_and_timer(rid: str) -> None:
    """Leave a completed run as a failover can: its hash back to running with no
    lease, and no timer in any set."""
    r = redis_for(__name__)
    key = f"fanout:run:{{{rid}}}"
    r.hset(key, mapping={"st": "running", "lease": "", "lu": "0"})
    r.hdel(key, "stk")
    for tkey in Keyspace().timer_keys:
        r.zrem(tkey, rid)


def test_watchdog_offers_again_a_running_run_that_only_lost_its_timer(worker: object) -> None:
    """What a Redis Cluster failover can leave: the run's hash says running (its end was
    among the lost writes) while its timer, on another master, was removed. The watchdog
    arms the timer again instead of failing the run, and the run completes."""
    rid = run_of(client, client.emit("t/one-step"), "one-step")
    assert wait_run(client, rid).status == "completed"
    _lose_end_and_timer(rid)
    # Two looks (the worker's own watchdog may take one of them): none fails it.
    assert client.check_stuck_runs() + client.check_stuck_runs() == []
    info = wait_for(lambda: (x := client.get_run(rid)) is not None and x.done and x)
    assert info.status == "completed" and info.output == 7


def test_watchdog_reaches_a_run_older_than_the_newest_it_reads(worker: object) -> None:
    """A failover in the middle of a large fan-out leaves its damaged runs far below the
    newest ones. Each check also reads the next window of a walk over every run, and a
    run seen stuck there is read again at the next check, so it is offered again."""
    old = run_of(client, client.emit("t/one-step"), "one-step")
    assert wait_run(client, old).status == "completed"
    for _ in range(3):
        assert wait_run(client, run_of(client, client.emit("t/one-step"), "one-step")).done
    _lose_end_and_timer(old)
    # The newest run alone, three times: only the walk and the suspects can reach it.
    for _ in range(3):
        assert client.check_stuck_runs(limit=1) == []
    info = wait_for(lambda: (x := client.get_run(old)) is not None and x.done and x)
    assert info.status == "completed" and info.output == 7
    assert not redis_for(__name__).zscore("fanout:stuck:suspects", old)


def test_the_watchdog_walk_visits_every_run_and_starts_again(worker: object) -> None:
    from fanout._redis.stuck import sweep_window

    store = client.runtime.store
    every = {m.decode() for m in redis_for(__name__).zrange("fanout:idx:runs", 0, -1)}
    assert len(every) > 4
    redis_for(__name__).delete("fanout:stuck:sweep")
    seen: set[str] = set()
    for _ in range(len(every)):
        window = sweep_window(store, 3)
        seen.update(window)
        if len(window) < 3:
            break
    assert every <= seen
    assert redis_for(__name__).get("fanout:stuck:sweep") is None  # back to the newest


def test_the_watchdog_walk_reads_a_batch_larger_than_its_window(worker: object) -> None:
    # Runs routed in one batch share their creation time: ten runs of one score,
    # walked three at a time, are all read (the walk used to jump past the score).
    from fanout._redis.stuck import sweep_window

    r = redis_for(__name__)
    tied = {f"tied-{i}": 1.0 for i in range(10)}
    r.zadd("fanout:idx:runs", tied)
    try:
        r.delete("fanout:stuck:sweep")
        seen: set[str] = set()
        for _ in range(100):
            window = sweep_window(client.runtime.store, 3)
            seen.update(window)
            if len(window) < 3:
                break
        assert set(tied) <= seen
    finally:
        r.zrem("fanout:idx:runs", *tied)
        r.delete("fanout:stuck:sweep")
