"""A pass goes on to the run's next step in the same ``fanout.step`` task while the
function's ``pass_budget`` allows, with real workers: one task for a 3-step run
(one per step with ``pass_budget=0``, or when each step outlasts the budget);
``kill -9`` mid-chain loses no completed step; a cancel or a pause stops the chain
at the next step.

The tasks a run took are counted by the worker itself (``task_prerun``, one INCR
per ``fanout.step`` task of the run), the steps' executions by the steps.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from celery import signals

import fanout
from tests.support import Worker, make_app, redis_for, run_of, wait_for, wait_run

r = redis_for(__name__)
# A short recovery timeout (the lease) keeps the kill -9 test quick.
app, client = make_app(__name__, app_id="pc", recovery_timeout=4)

# The budget of the functions that must chain: long enough that a loaded machine
# does not spend it between two quick steps.
LONG = 30.0


@signals.task_prerun.connect(weak=False)
def _count_task(sender: Any = None, args: Any = None, kwargs: Any = None, **_: Any) -> None:
    if getattr(sender, "name", None) != "fanout.step":
        return
    run_id = (kwargs or {}).get("run_id") or (list(args or ()) + [None, None])[1]
    r.incr(f"pc:tasks:{run_id}")


def tasks(run_id: str) -> int:
    return int(r.get(f"pc:tasks:{run_id}") or 0)


def ran(name: str) -> int:
    return int(r.get(f"pc:ran:{name}") or 0)


def _mark(name: str) -> str:
    r.incr(f"pc:ran:{name}")
    return name


def _gate(name: str) -> str:
    """A step that waits until the test opens its gate (``pc:gate:<name>``)."""
    r.incr(f"pc:ran:{name}")
    while not r.get(f"pc:gate:{name}"):
        time.sleep(0.02)
    return name


def _three(ctx: fanout.ContextSync, tag: str) -> list[str]:
    return [ctx.step.run("a", _mark, f"{tag}-a"), ctx.step.run("b", _mark, f"{tag}-b"),
            ctx.step.run("c", _mark, f"{tag}-c")]


@client.create_function(fn_id="chain", trigger=fanout.TriggerEvent(event="pc/chain"),
                        pass_budget=LONG)
def chain(ctx: fanout.ContextSync) -> list[str]:
    return _three(ctx, "chain")


@client.create_function(fn_id="per-step", trigger=fanout.TriggerEvent(event="pc/per-step"),
                        pass_budget=0)
def per_step(ctx: fanout.ContextSync) -> list[str]:
    return _three(ctx, "per-step")


def _slow(name: str) -> str:
    time.sleep(0.2)
    return _mark(name)


@client.create_function(fn_id="slow", trigger=fanout.TriggerEvent(event="pc/slow"),
                        pass_budget=0.05)
def slow(ctx: fanout.ContextSync) -> list[str]:
    return [ctx.step.run(s, _slow, f"slow-{s}") for s in ("a", "b", "c")]


@client.create_function(fn_id="gated", trigger=fanout.TriggerEvent(event="pc/gated"),
                        pass_budget=LONG, retries=0)
def gated(ctx: fanout.ContextSync) -> list[str]:
    tag = ctx.event.data["tag"]
    return [ctx.step.run("a", _mark, f"{tag}-a"), ctx.step.run("b", _gate, f"{tag}-b"),
            ctx.step.run("c", _mark, f"{tag}-c")]


@client.create_function(fn_id="pausable", trigger=fanout.TriggerEvent(event="pc/pausable"),
                        pass_budget=LONG)
def pausable(ctx: fanout.ContextSync) -> list[str]:
    def held() -> str:
        _gate("pause-b")
        # This process sees the pause before the step ends: the pass must not go on.
        while not client.runtime.paused.is_paused(pausable_key):
            time.sleep(0.02)
        return "pause-b"

    return [ctx.step.run("a", _mark, "pause-a"), ctx.step.run("b", held),
            ctx.step.run("c", _mark, "pause-c")]


pausable_key = "pc:pausable"


def _emit(name: str, fn_id: str, **data: Any) -> str:
    return run_of(client, client.emit(name, data), fn_id)


def _seq(run_id: str) -> int:
    return int(r.hget(f"fanout:run:{{{run_id}}}", "seq") or 0)


def test_kill_9_inside_a_chained_step(clean_db: object, log_dir: Path) -> None:
    # First in the module: no other worker of the module runs yet.
    rid = _emit("pc/gated", "gated", tag="k9")
    w1 = Worker(__name__, name="victim", log_dir=log_dir)
    try:
        wait_for(lambda: ran("k9-b"), timeout=30)  # a ran, and b runs in the same task
        assert tasks(rid) == 1
        w1.kill()
    finally:
        w1.stop()
    r.set("pc:gate:k9-b", 1)
    w2 = Worker(__name__, name="rescuer", log_dir=log_dir)
    try:
        run = wait_run(client, rid, timeout=60)
    finally:
        w2.stop()
    assert run.status == "completed", run.error
    assert run.output == ["k9-a", "k9-b", "k9-c"]
    assert ran("k9-a") == 1  # written when the pass went on: never again
    assert ran("k9-b") == 2  # the interrupted step ran again
    assert ran("k9-c") == 1


def test_a_three_step_run_takes_one_task(worker: Worker) -> None:
    rid = _emit("pc/chain", "chain")
    run = wait_run(client, rid)
    assert run.status == "completed", run.error
    assert run.output == ["chain-a", "chain-b", "chain-c"]
    assert tasks(rid) == 1
    assert [s.step_id for s in run.steps] == ["a", "b", "c"]
    assert all(s.attempts == 1 and s.status == "completed" for s in run.steps)
    a, b, c = run.steps
    assert a.ended_at and b.started_at and b.ended_at and c.started_at
    assert a.ended_at <= b.started_at and b.ended_at <= c.started_at
    assert ran("chain-a") == ran("chain-b") == ran("chain-c") == 1
    # The pass sequence moved on once per pass, as with one task per pass.
    other = _emit("pc/per-step", "per-step")
    assert wait_run(client, other).status == "completed"
    assert _seq(rid) == _seq(other) == 3


def test_pass_budget_0_takes_one_task_per_step(worker: Worker) -> None:
    rid = _emit("pc/per-step", "per-step")
    run = wait_run(client, rid)
    assert run.status == "completed", run.error
    assert tasks(rid) == 3


def test_steps_longer_than_the_budget_go_back_to_the_broker(worker: Worker) -> None:
    rid = _emit("pc/slow", "slow")
    run = wait_run(client, rid)
    assert run.output == ["slow-a", "slow-b", "slow-c"]
    assert tasks(rid) == 3  # each step spends the budget: a task for each


def test_a_cancel_stops_the_chain(worker: Worker) -> None:
    rid = _emit("pc/gated", "gated", tag="cx")
    wait_for(lambda: ran("cx-b"), timeout=30)
    assert client.cancel(rid, "stop it")
    r.set("pc:gate:cx-b", 1)
    run = wait_run(client, rid)
    assert run.status == "cancelled"
    assert ran("cx-a") == ran("cx-b") == 1
    assert ran("cx-c") == 0  # the next step did not run
    assert tasks(rid) == 1
    assert [s.step_id for s in run.steps] == ["a", "b"]  # b's record was still written


def test_a_pause_stops_the_chain_at_the_next_step(worker: Worker) -> None:
    rid = _emit("pc/pausable", "pausable")
    wait_for(lambda: ran("pause-b"), timeout=30)
    assert client.pause(pausable)
    try:
        r.set("pc:gate:pause-b", 1)
        wait_for(lambda: r.zcard(f"fanout:parked:{{{pausable_key}}}") == 1, timeout=30)
        assert ran("pause-c") == 0
        run = client.get_run(rid)
        assert run is not None and not run.done
        assert [s.step_id for s in run.steps] == ["a", "b"]
        assert tasks(rid) == 2  # the chain, then the pass that parked
    finally:
        client.resume(pausable)
    run = wait_run(client, rid)
    assert run.status == "completed" and ran("pause-c") == 1
