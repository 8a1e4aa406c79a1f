"""Errors and the event/function surface of code ported from inngest-py, with a real
worker, in sync and async handlers.

* a failed invoked child raises a ``StepError`` (and an ``InvokeError``) carrying the
  child's error name, message and stack;
* ``StepError.name``, ``.message`` and ``.stack`` describe a step's failure;
* ``quiet=True`` keeps ``NonRetriableError`` and ``RetryAfterError`` out of the
  ``fanout.failures`` log, while the run still records them;
* ``Event(id="", ts=0)`` mean "not given"; a 1 MiB event goes through; the
  decorated handler has inngest-py's fully-qualified ``.id``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

import fanout
from tests.support import Worker, make_app, redis_for, run_of, wait_for, wait_run

app, client = make_app(__name__, app_id="port-err")


class MyException(Exception):
    pass


# --------------------------------------------------------------------------- invoke failure


@client.create_function(fn_id="invokee", trigger=fanout.TriggerEvent(event="pe/never"), retries=0)
def invokee(ctx: fanout.ContextSync) -> None:
    raise MyException("oh no")


def _describe(err: fanout.StepError) -> dict[str, Any]:
    return {"name": err.name, "message": err.message, "stack": err.stack,
            "invoke_error": isinstance(err, fanout.InvokeError)}


@client.create_function(fn_id="invoker-sync", trigger=fanout.TriggerEvent(event="pe/invoker-sync"),
                        retries=0)
def invoker_sync(ctx: fanout.ContextSync) -> dict[str, Any]:
    try:
        ctx.step.invoke("invoke", function=invokee, timeout=60_000)
    except fanout.StepError as err:
        return _describe(err)
    return {}


@client.create_function(fn_id="invoker-async",
                        trigger=fanout.TriggerEvent(event="pe/invoker-async"), retries=0)
async def invoker_async(ctx: fanout.Context) -> dict[str, Any]:
    try:
        await ctx.step.invoke("invoke", function=invokee, timeout=60_000)
    except fanout.StepError as err:
        return _describe(err)
    return {}


@pytest.mark.parametrize("fn_id", ["invoker-sync", "invoker-async"])
def test_a_failed_child_raises_a_step_error_with_its_error(worker: Worker, fn_id: str) -> None:
    eid = client.emit(f"pe/{fn_id}")
    run = wait_run(client, run_of(client, eid, fn_id), timeout=60)
    assert run.status == "completed", run.error
    out = run.output
    assert (out["name"], out["message"], out["invoke_error"]) == ("MyException", "oh no", True)
    assert isinstance(out["stack"], str) and "MyException: oh no" in out["stack"]


# --------------------------------------------------------------------------- StepError attributes


def decline() -> None:
    raise ValueError("card declined")


@client.create_function(fn_id="step-sync", trigger=fanout.TriggerEvent(event="pe/step-sync"),
                        retries=0)
def step_sync(ctx: fanout.ContextSync) -> dict[str, Any]:
    try:
        ctx.step.run("charge", decline)
    except fanout.StepError as err:
        return {**_describe(err), "step_id": err.step_id, "error_type": err.error_type}
    return {}


@client.create_function(fn_id="step-async", trigger=fanout.TriggerEvent(event="pe/step-async"),
                        retries=0)
async def step_async(ctx: fanout.Context) -> dict[str, Any]:
    try:
        await ctx.step.run("charge", decline)
    except fanout.StepError as err:
        return {**_describe(err), "step_id": err.step_id, "error_type": err.error_type}
    return {}


@pytest.mark.parametrize("fn_id", ["step-sync", "step-async"])
def test_step_error_name_message_stack(worker: Worker, fn_id: str) -> None:
    eid = client.emit(f"pe/{fn_id}")
    run = wait_run(client, run_of(client, eid, fn_id), timeout=60)
    assert run.status == "completed", run.error
    out = run.output
    assert (out["name"], out["message"]) == ("ValueError", "card declined")
    assert (out["step_id"], out["error_type"], out["invoke_error"]) == ("charge", "ValueError", False)
    assert "in decline" in out["stack"] and "ValueError: card declined" in out["stack"]


# --------------------------------------------------------------------------- quiet


def refuse(quiet: bool) -> None:
    raise fanout.NonRetriableError("not retrying", quiet=quiet)


def later(key: str, quiet: bool) -> str:
    if redis_for(__name__).incr(f"side:{key}") == 1:
        raise fanout.RetryAfterError("come back", 200, quiet=quiet)
    return "done"


@client.create_function(fn_id="refuse-sync", trigger=fanout.TriggerEvent(event="pe/refuse-sync"))
def refuse_sync(ctx: fanout.ContextSync) -> None:
    ctx.step.run("refuse", refuse, bool(ctx.event.data["quiet"]))


@client.create_function(fn_id="refuse-async", trigger=fanout.TriggerEvent(event="pe/refuse-async"))
async def refuse_async(ctx: fanout.Context) -> None:
    await ctx.step.run("refuse", refuse, bool(ctx.event.data["quiet"]))


@client.create_function(fn_id="later-sync", trigger=fanout.TriggerEvent(event="pe/later-sync"))
def later_sync(ctx: fanout.ContextSync) -> str:
    return str(ctx.step.run("later", later, ctx.event.data["key"], bool(ctx.event.data["quiet"])))


@client.create_function(fn_id="later-async", trigger=fanout.TriggerEvent(event="pe/later-async"))
async def later_async(ctx: fanout.Context) -> str:
    data = ctx.event.data
    return str(await ctx.step.run("later", later, data["key"], bool(data["quiet"])))


def _failure_lines(worker: Worker, run_id: str) -> list[str]:
    return [ln for ln in worker.log().splitlines()
            if run_id in ln and "fanout: " in ln and ("WARNING/" in ln or "ERROR/" in ln)]


@pytest.mark.parametrize("fn_id", ["refuse-sync", "refuse-async"])
def test_quiet_non_retriable_error_stays_out_of_the_failure_log(worker: Worker, fn_id: str) -> None:
    quiet = client.emit(f"pe/{fn_id}", {"quiet": True})
    quiet_run = wait_run(client, run_of(client, quiet, fn_id), timeout=60)
    loud = client.emit(f"pe/{fn_id}", {"quiet": False})
    loud_run = wait_run(client, run_of(client, loud, fn_id), timeout=60)
    assert loud_run.status == quiet_run.status == "failed"
    assert quiet_run.steps[0].error["message"] == "not retrying"  # type: ignore[index]
    # The loud run, started after the quiet one ended, is logged (a WARNING for the
    # step, an ERROR for the run); nothing about the quiet run.
    wait_for(lambda: len(_failure_lines(worker, loud_run.run_id)) >= 2)
    assert _failure_lines(worker, quiet_run.run_id) == []


@pytest.mark.parametrize("fn_id", ["later-sync", "later-async"])
def test_quiet_retry_after_error_stays_out_of_the_failure_log(worker: Worker, fn_id: str) -> None:
    quiet = client.emit(f"pe/{fn_id}", {"quiet": True, "key": f"{fn_id}-quiet"})
    quiet_run = wait_run(client, run_of(client, quiet, fn_id), timeout=60)
    loud = client.emit(f"pe/{fn_id}", {"quiet": False, "key": f"{fn_id}-loud"})
    loud_run = wait_run(client, run_of(client, loud, fn_id), timeout=60)
    assert loud_run.status == quiet_run.status == "completed"
    assert quiet_run.steps[0].attempts == loud_run.steps[0].attempts == 2
    wait_for(lambda: _failure_lines(worker, loud_run.run_id))
    assert _failure_lines(worker, quiet_run.run_id) == []


# --------------------------------------------------------------------------- events and functions


@client.create_function(fn_id="echo", trigger=fanout.TriggerEvent(event="pe/echo"))
async def echo(ctx: fanout.Context) -> dict[str, Any]:
    return {"id": ctx.event.id, "ts": ctx.event.ts, "size": len(ctx.event.data.get("msg", ""))}


def test_event_id_and_ts_defaults_mean_not_given(worker: Worker) -> None:
    (eid,) = client.send_sync(fanout.Event(name="pe/echo", id="", ts=0))
    assert eid
    run = wait_run(client, run_of(client, eid, "echo"), timeout=60)
    assert run.status == "completed", run.error
    assert run.output["id"] == eid
    assert abs(run.output["ts"] - time.time() * 1000) < 600_000


def test_a_one_mebibyte_event_goes_through(worker: Worker) -> None:
    (eid,) = client.send_sync(fanout.Event(name="pe/echo", data={"msg": "a" * 1024 * 1024}))
    run = wait_run(client, run_of(client, eid, "echo"), timeout=60)
    assert run.status == "completed", run.error
    assert run.output["size"] == 1024 * 1024


@client.create_function(fn_id="big-batch", trigger=fanout.TriggerEvent(event="pe/big"),
                        batch_events=fanout.Batch(max_size=5, timeout="10s"))
def big_batch(ctx: fanout.ContextSync) -> list[int]:
    return [len(e.data["msg"]) for e in ctx.events]


def test_a_batch_of_one_mebibyte_events(worker: Worker) -> None:
    # inngest-py's own batch case sends events of 1 MiB each.
    events = [fanout.Event(name="pe/big", data={"msg": "a" * 1024 * 1024}) for _ in range(5)]
    eids = client.send_sync(events)
    run = wait_run(client, run_of(client, eids[0], "big-batch"), timeout=60)
    assert run.status == "completed", run.error
    assert run.output == [1024 * 1024] * 5


def test_the_decorated_handler_has_the_qualified_id() -> None:
    assert echo.id == "port-err-echo"  # type: ignore[attr-defined]
    assert invoker_sync.id == "port-err-invoker-sync"  # type: ignore[attr-defined]
