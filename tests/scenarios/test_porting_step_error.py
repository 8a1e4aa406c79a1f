"""``StepError`` always has ``name``, ``message`` and ``stack`` (strings), as inngest-py's:
also when no traceback was recorded, as for an invoke that timed out (real worker,
sync and async handlers)."""

from __future__ import annotations

from typing import Any

import pytest

import fanout
from tests.support import Worker, make_app, run_of, wait_run

app, client = make_app(__name__, app_id="step-err")


@client.create_function(fn_id="sleepy", trigger=fanout.TriggerEvent(event="se/never"))
def sleepy(ctx: fanout.ContextSync) -> str:
    ctx.step.sleep("long", "30s")
    return "late"


def _describe(err: fanout.StepError) -> dict[str, Any]:
    return {"name": err.name, "message": err.message, "stack": err.stack,
            "step_id": err.step_id, "invoke_error": isinstance(err, fanout.InvokeError)}


@client.create_function(fn_id="impatient", trigger=fanout.TriggerEvent(event="se/impatient"),
                        retries=0)
def impatient(ctx: fanout.ContextSync) -> dict[str, Any]:
    try:
        ctx.step.invoke("call", function=sleepy, timeout="1s")
    except fanout.StepError as err:
        return _describe(err)
    return {}


@client.create_function(fn_id="impatient-async",
                        trigger=fanout.TriggerEvent(event="se/impatient-async"), retries=0)
async def impatient_async(ctx: fanout.Context) -> dict[str, Any]:
    try:
        await ctx.step.invoke("call", function=sleepy, timeout="1s")
    except fanout.StepError as err:
        return _describe(err)
    return {}


@pytest.mark.parametrize("fn_id", ["impatient", "impatient-async"])
def test_a_timed_out_invoke_has_name_message_and_stack(worker: Worker, fn_id: str) -> None:
    run = wait_run(client, run_of(client, client.emit(f"se/{fn_id}"), fn_id), timeout=60)
    assert run.status == "completed", run.error
    out = run.output
    assert out["name"] == "InvokeTimeoutError" and out["invoke_error"] and out["step_id"] == "call"
    assert isinstance(out["message"], str) and "timed out" in out["message"]
    assert out["stack"] == f"InvokeTimeoutError: {out['message']}\n"


def test_step_error_attributes_without_a_recorded_stack() -> None:
    err = fanout.StepError("charge", "ValueError", "declined")
    assert (err.name, err.message, err.stack) == ("ValueError", "declined", "ValueError: declined\n")
    kept = fanout.StepError("charge", "ValueError", "declined", "Traceback ...")
    assert kept.stack == "Traceback ..."
