"""fanout.testing.run_function: the in-process harness (pure: no Redis, no worker)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import fanout
from fanout.testing import embedded_celery, run_function, run_function_async

app = embedded_celery()
client = fanout.Fanout("harness", celery=app, redis_url="memory://harness-unit")
calls: list[str] = []


def charge(amount: int) -> dict[str, Any]:
    calls.append("charge")
    return {"charged": amount}


@client.create_function(fn_id="order", trigger=fanout.TriggerEvent(event="shop/order"),
                        retries=2)
def order(ctx: fanout.ContextSync) -> dict[str, Any]:
    paid = ctx.step.run("charge", charge, ctx.event.data["amount"])
    ctx.step.sleep("cool-off", "3d")
    ok = ctx.step.wait_for_event("approval", event="shop/approved", timeout="1h",
                                 match="data.order")
    if ok is None:
        return {"paid": paid, "approved": False}
    ctx.step.send_event("notify", fanout.Event(name="shop/shipped",
                                               data={"order": ctx.event.data["order"]}))
    return {"paid": paid, "approved": True, "by": ok.data["by"]}


ORDER = {"name": "shop/order", "data": {"order": 7, "amount": 30}}


def test_real_steps_run_sleep_skipped_and_wait_answered() -> None:
    calls.clear()
    r = run_function(order, ORDER, waits={
        "approval": {"name": "shop/approved", "data": {"order": 7, "by": "ann"}}})
    assert r.status == "completed", r.error
    assert r.output == {"paid": {"charged": 30}, "approved": True, "by": "ann"}
    assert calls == ["charge"]  # memoized: later passes replay it without running it
    assert r.step_ids == ["charge", "cool-off", "approval", "notify"]
    assert r.step("approval").output["data"] == {"order": 7, "by": "ann"}
    assert [(e.name, e.data) for e in r.events] == [("shop/shipped", {"order": 7})]
    assert r.skipped_seconds >= 3 * 86400 - 1
    assert r.passes == 3  # charge+sleep | wake, wait | answered, notify, return


def test_wait_with_no_matching_answer_times_out() -> None:
    r = run_function(order, ORDER, waits={
        "approval": [{"name": "shop/approved", "data": {"order": 8, "by": "bob"}},
                     {"name": "shop/other", "data": {"order": 7}}]})
    assert r.output == {"paid": {"charged": 30}, "approved": False}
    assert r.step("approval").output is None
    assert r.events == []


def test_mock_value_callable_and_exception_with_retries() -> None:
    calls.clear()
    r = run_function(order, ORDER, steps={"charge": {"charged": 0}})
    assert calls == [] and r.output["paid"] == {"charged": 0}
    r = run_function(order, ORDER, steps={"charge": lambda amount: {"double": amount * 2}})
    assert r.output["paid"] == {"double": 60}
    r = run_function(order, ORDER, steps={"charge": RuntimeError("card declined")})
    assert r.status == "failed"
    assert r.step("charge").attempts == 3 and r.step("charge").status == "failed"
    assert "card declined" in r.error["message"]
    assert r.skipped_seconds == 15 + 30  # the default backoff, skipped
    assert r.step_ids == ["charge"]


def test_flaky_step_retries_then_succeeds() -> None:
    tries: list[int] = []

    def flaky(amount: int) -> int:
        tries.append(amount)
        if len(tries) < 3:
            raise ConnectionError("try again")
        return amount

    r = run_function(order, ORDER, steps={"charge": flaky})
    assert r.status == "completed" and r.output["paid"] == 30
    assert r.step("charge").attempts == 3 and len(tries) == 3


def test_non_retriable_error_fails_at_once() -> None:
    r = run_function(order, ORDER, steps={"charge": fanout.NonRetriableError("no such card")})
    assert r.status == "failed" and r.step("charge").attempts == 1


def test_a_misspelt_mock_is_an_error() -> None:
    with pytest.raises(fanout.ConfigError, match="chrage"):
        run_function(order, ORDER, steps={"chrage": 1})


def test_bad_event_is_refused_before_anything_runs() -> None:
    with pytest.raises(fanout.EventError):
        run_function(order, {"name": "", "data": {}})
    with pytest.raises(fanout.ConfigError, match="create_function"):
        run_function(charge, ORDER)


@client.create_function(fn_id="repeat", trigger=fanout.TriggerEvent(event="t/repeat"))
async def repeat(ctx: fanout.Context) -> list[Any]:
    out = [await ctx.step.run("item", lambda i=i: i) for i in range(3)]
    both = await asyncio.gather(ctx.step.run("fan", lambda: "a"), ctx.step.run("fan", lambda: "b"))
    child = await ctx.step.invoke("child", function="worker-fn", data={"n": 2}, timeout="1m")
    return [out, list(both), child]


def test_async_handler_repeated_ids_parallel_and_invoke() -> None:
    r = run_function(repeat, {"name": "t/repeat"}, steps={"item:1": 10},
                     invokes={"child": lambda data: data["n"] * 21})
    assert r.status == "completed", r.error
    assert r.output == [[0, 10, 2], ["a", "b"], 42]
    assert r.step_ids == ["item", "item:1", "item:2", "fan", "fan:1", "child"]
    assert r.invoked == [{"step": "child", "function": "harness:worker-fn", "data": {"n": 2}}]


def test_invoke_without_an_answer_times_out_and_a_failed_child() -> None:
    r = run_function(repeat, {"name": "t/repeat"})
    assert r.status == "failed" and "timed out" in r.error["message"]
    assert r.skipped_seconds >= 59
    r = run_function(repeat, {"name": "t/repeat"}, invokes={"child": ValueError("boom")})
    assert r.status == "failed" and "boom" in r.error["message"]


def test_from_async_test_code() -> None:
    r = asyncio.run(run_function_async(order, ORDER))
    assert r.status == "completed"


@client.create_function(fn_id="sync-parallel", trigger=fanout.TriggerEvent(event="t/par"))
def sync_parallel(ctx: fanout.ContextSync) -> tuple[Any, ...]:
    return ctx.group.parallel([lambda: ctx.step.run("a", lambda: 1),
                               lambda: ctx.step.run("b", lambda: 2)])


def test_sync_parallel_runs_each_branch() -> None:
    r = run_function(sync_parallel, {"name": "t/par"})
    assert r.output == [1, 2] and r.step_ids == ["a", "b"]


def test_nondeterministic_ids_fail_as_on_a_worker() -> None:
    @client.create_function(fn_id="nondet", trigger=fanout.TriggerEvent(event="t/nondet"))
    def nondet(ctx: fanout.ContextSync) -> None:
        n = len(calls)
        calls.append("pass")
        ctx.step.run(f"step-{n}", lambda: 1)
        ctx.step.run("after", lambda: 2)

    calls.clear()
    r = run_function(nondet, {"name": "t/nondet"})
    assert r.status == "failed" and r.error["type"] == "NonDeterminismError"
