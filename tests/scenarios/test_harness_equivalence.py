"""fanout.testing.run_function and a real Celery worker agree: the same functions,
the same events, compared field by field (status, output, error, each step's id,
kind, status and attempts in run order, the events sent and their ids).  The
harness skips time; the worker really sleeps, waits, times out and retries."""

from __future__ import annotations

from typing import Any

import pytest

import fanout
from fanout.testing import run_function
from tests.support import make_app, run_of, wait_run

app, client = make_app(__name__, app_id="eq", retry_backoff=[0.3])


@client.create_function(fn_id="order", trigger=fanout.TriggerEvent(event="eq/order"), retries=2)
def order(ctx: fanout.ContextSync) -> dict[str, Any]:
    def charge() -> dict[str, Any]:
        if ctx.attempt == 0:
            raise ConnectionError("gateway timeout")  # the first attempt fails
        return {"charged": ctx.event.data["amount"]}

    paid = ctx.step.run("charge", charge)
    ctx.step.sleep("cool-off", "1s")
    sent = ctx.step.send_event("notify", [
        fanout.Event(name="eq/notify", data={"to": "ada"}),
        fanout.Event(name="eq/notify", data={"to": "bob"}),
    ])
    approval = ctx.step.wait_for_event("approval", event="eq/approved", timeout="1s")
    for i in range(2):
        ctx.step.run("line", lambda i=i: i * 10)
    return {"paid": paid, "sent": len(sent), "approved": approval is not None}


@client.create_function(fn_id="fanout", trigger=fanout.TriggerEvent(event="eq/fan"))
async def fan(ctx: fanout.Context) -> list[int]:
    results = await ctx.group.parallel((
        lambda: ctx.step.run("a", lambda: 1),
        lambda: ctx.step.run("b", lambda: 2),
        lambda: ctx.step.run("c", lambda: 3),
    ))
    total = await ctx.step.run("sum", lambda: sum(results))
    return [*results, total]


@client.create_function(fn_id="refuse", trigger=fanout.TriggerEvent(event="eq/refuse"),
                        retries=1)
def refuse(ctx: fanout.ContextSync) -> None:
    ctx.step.run("check", lambda: "ok")

    def reject() -> None:
        raise fanout.NonRetriableError("over the limit")

    ctx.step.run("reject", reject)


def _steps(steps: list[Any]) -> list[tuple[str, str, str, int]]:
    return [(s.step_id, s.kind, s.status, s.attempts) for s in steps]


CASES = [
    ("order", fanout.Event(name="eq/order", id="EQ-ORDER-1", data={"amount": 30})),
    ("fanout", fanout.Event(name="eq/fan", id="EQ-FAN-1")),
    ("refuse", fanout.Event(name="eq/refuse", id="EQ-REFUSE-1")),
]


@pytest.mark.parametrize(("fn_id", "event"), CASES, ids=[c[0] for c in CASES])
def test_harness_and_worker_agree(worker: object, fn_id: str, event: fanout.Event) -> None:
    fn = client.functions[fn_id]
    local = run_function(fn.handler, event)
    (eid,) = client.send_sync(event)
    real = wait_run(client, run_of(client, eid, fn_id), timeout=60)
    assert local.run_id == real.run_id  # the same deterministic id
    assert (local.status, local.output) == (real.status, real.output)
    if real.error is None:
        assert local.error is None
    else:
        assert local.error is not None
        assert (local.error["type"], local.error["message"]) == (
            real.error["type"], real.error["message"])
    real_steps = sorted(real.steps, key=lambda s: s.started_at or s.ended_at or 0)
    assert sorted(_steps(local.steps)) == sorted(_steps(real_steps))
    if fn_id != "fanout":  # parallel branches finish in any order on a worker
        assert [s.step_id for s in local.steps] == [s.step_id for s in real_steps]
    if fn_id == "order":
        sent = [e.id for e in local.events]
        assert real.output["sent"] == len(sent) == 2
        for ev_id in sent:  # the worker sent the same events under the same ids
            runs = client.runtime.store.r.get(client.runtime.store.event_key(ev_id))
            assert runs is not None
