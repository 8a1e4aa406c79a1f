"""``ctx.step.invoke_by_id(step_id, function_id=..., data=..., timeout=...)``, for a
function of the same client or (``app_id=``) of another client on the same Celery app,
served by the same workers; sync and async handlers."""

from __future__ import annotations

import fanout
from tests.support import make_app, run_of, url_for, wait_run

app, client = make_app(__name__)
other = fanout.Fanout("billing", celery=app, redis_url=url_for(__name__))


@client.create_function(fn_id="double", trigger=fanout.TriggerEvent(event="t/never-double"))
def double(ctx: fanout.ContextSync) -> int:
    return int(ctx.event.data["n"]) * 2


@other.create_function(fn_id="double", trigger=fanout.TriggerEvent(event="t/never-b-double"))
def billing_double(ctx: fanout.ContextSync) -> dict[str, int]:
    return {"billed": int(ctx.event.data["n"]) * 2}


@client.create_function(fn_id="caller", trigger=fanout.TriggerEvent(event="t/caller"))
def caller(ctx: fanout.ContextSync) -> object:
    mine = ctx.step.invoke_by_id("mine", function_id="double", data={"n": 2}, timeout="30s")
    theirs = ctx.step.invoke_by_id("theirs", app_id="billing", function_id="double",
                                   data={"n": 3})
    return {"mine": mine, "theirs": theirs}


@client.create_function(fn_id="caller-async", trigger=fanout.TriggerEvent(event="t/caller-async"))
async def caller_async(ctx: fanout.Context) -> object:
    mine = await ctx.step.invoke_by_id("mine", function_id="double", data={"n": 5})
    theirs = await ctx.step.invoke_by_id("theirs", app_id="billing", function_id="double",
                                         data={"n": 7})
    return {"mine": mine, "theirs": theirs}


@client.create_function(fn_id="caller-missing",
                        trigger=fanout.TriggerEvent(event="t/caller-missing"), retries=0)
def caller_missing(ctx: fanout.ContextSync) -> object:
    return ctx.step.invoke_by_id("x", app_id="billing", function_id="nope")


def test_invoke_by_id_same_and_other_app(worker: object) -> None:
    run = wait_run(client, run_of(client, client.emit("t/caller"), "caller"))
    assert run.status == "completed", run.error
    assert run.output == {"mine": 4, "theirs": {"billed": 6}}


def test_invoke_by_id_async(worker: object) -> None:
    run = wait_run(client, run_of(client, client.emit("t/caller-async"), "caller-async"))
    assert run.status == "completed", run.error
    assert run.output == {"mine": 10, "theirs": {"billed": 14}}


def test_invoke_by_id_of_an_unknown_function(worker: object) -> None:
    run = wait_run(client, run_of(client, client.emit("t/caller-missing"), "caller-missing"))
    assert run.status == "failed"
    assert "billing:nope" in run.error["message"]
