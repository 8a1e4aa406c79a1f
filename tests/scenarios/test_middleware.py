"""Middleware with a real worker: hook order per pass (a sync client middleware and an
async function middleware, in sync and async handlers), transform_output changing
what is stored but not what the pass sees, send hooks, a hook that raises (named in
the error, the saved step not run again), and declaration errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

import fanout
from tests.support import make_app, redis_for, run_of, wait_run

r = redis_for(__name__)


def _log(tag: str, hook: str, req: Any, extra: str = "") -> None:
    run = getattr(req, "run_id", "client")
    r.rpush(f"mw:{run}", f"{tag}:{hook}{':' + extra if extra else ''}")


class Client(fanout.Middleware):
    def transform_input(self, ctx: Any, function: Any, steps: Any) -> None:
        _log("C", "transform_input", self.raw_request, ",".join(sorted(steps)))

    def before_memoization(self) -> None:
        _log("C", "before_memoization", self.raw_request)

    def after_memoization(self) -> None:
        _log("C", "after_memoization", self.raw_request)

    def before_execution(self) -> None:
        _log("C", "before_execution", self.raw_request)

    def after_execution(self) -> None:
        _log("C", "after_execution", self.raw_request)

    def transform_output(self, result: fanout.TransformOutputResult) -> None:
        _log("C", "transform_output", self.raw_request, result.step.id if result.step else "fn")

    def before_response(self) -> None:
        _log("C", "before_response", self.raw_request)

    def before_send_events(self, events: list[fanout.Event]) -> None:
        _log("C", "before_send_events", self.raw_request, str(len(events)))
        for ev in events:
            ev.data["stamped"] = True

    def after_send_events(self, result: fanout.SendEventsResult) -> None:
        _log("C", "after_send_events", self.raw_request, str(len(result.ids)))


class Func(fanout.Middleware):
    async def transform_input(self, ctx: Any, function: Any, steps: Any) -> None:
        _log("F", "transform_input", self.raw_request, ",".join(sorted(steps)))

    async def before_execution(self) -> None:
        _log("F", "before_execution", self.raw_request)

    async def after_execution(self) -> None:
        _log("F", "after_execution", self.raw_request)

    async def before_response(self) -> None:
        _log("F", "before_response", self.raw_request)


class Wrap(fanout.Middleware):
    """Stores every output as {"w": value}; unwraps memoized ones."""

    def transform_input(self, ctx: Any, function: Any, steps: Any) -> None:
        for rec in steps.values():
            if isinstance(rec.output, dict) and set(rec.output) == {"w"}:
                rec.output = rec.output["w"]

    def transform_output(self, result: fanout.TransformOutputResult) -> None:
        if result.error is None:
            result.output = {"w": result.output}


class BoomOnce(fanout.Middleware):
    def after_execution(self) -> None:
        if r.set("mw:boom", "1", nx=True):
            raise RuntimeError("reporting backend down")


app, client = make_app(__name__, app_id="mw", middleware=[Client])


@client.create_function(fn_id="sync", trigger=fanout.TriggerEvent(event="mw/sync"),
                        middleware=[Func])
def sync_fn(ctx: fanout.ContextSync) -> str:
    ctx.step.run("a", lambda: 1)
    ctx.step.run("b", lambda: 2)
    return "done"


@client.create_function(fn_id="async", trigger=fanout.TriggerEvent(event="mw/async"),
                        middleware=[Func])
async def async_fn(ctx: fanout.Context) -> str:
    await ctx.step.run("a", lambda: 1)
    await ctx.step.run("b", lambda: 2)
    return "done"


@client.create_function(fn_id="wrapped", trigger=fanout.TriggerEvent(event="mw/wrapped"),
                        middleware=[Wrap])
def wrapped(ctx: fanout.ContextSync) -> dict[str, int]:
    x = ctx.step.run("x", lambda: 21)
    assert x == 21  # this pass sees its own value, not what was stored
    y = ctx.step.run("y", lambda: x * 2)
    return {"y": y}


@client.create_function(fn_id="boom", trigger=fanout.TriggerEvent(event="mw/boom"),
                        middleware=[BoomOnce], retries=2, backoff=[0.2])
def boom(ctx: fanout.ContextSync) -> int:
    def count() -> int:
        return int(r.incr("mw:a-ran"))

    ctx.step.run("a", count)
    return int(ctx.step.run("b", lambda: 7))


@client.create_function(fn_id="sender", trigger=fanout.TriggerEvent(event="mw/send"))
def sender(ctx: fanout.ContextSync) -> list[str]:
    return ctx.step.send_event("out", fanout.Event(name="mw/sent", data={"n": 1}))


def _hooks(run_id: str) -> list[str]:
    return [x.decode() for x in r.lrange(f"mw:{run_id}", 0, -1)]


PASS_0 = [
    "C:transform_input", "F:transform_input", "C:before_memoization", "C:after_memoization",
    "C:before_execution", "F:before_execution", "F:after_execution", "C:after_execution",
    "C:transform_output:a", "F:before_response", "C:before_response",
]
PASS_1 = [
    "C:transform_input:a", "F:transform_input:a", "C:before_memoization", "C:after_memoization",
    "C:before_execution", "F:before_execution", "F:after_execution", "C:after_execution",
    "C:transform_output:b",
    # the handler's code after its last step is new code too
    "C:before_execution", "F:before_execution", "F:after_execution", "C:after_execution",
    "C:transform_output:fn", "F:before_response", "C:before_response",
]


@pytest.mark.parametrize("fn_id", ["sync", "async"])
def test_hooks_run_in_order_each_pass(worker: object, fn_id: str) -> None:
    (eid,) = client.send_sync(fanout.Event(name=f"mw/{fn_id}"))
    info = wait_run(client, run_of(client, eid, fn_id))
    assert info.status == "completed" and info.output == "done"
    # Client middleware first, function middleware second; hooks coming back out of
    # the pass run in the reverse order. Two steps, one per pass, then the return.
    assert _hooks(info.run_id) == PASS_0 + PASS_1


def test_transform_output_changes_what_is_stored_not_what_the_pass_sees(worker: object) -> None:
    (eid,) = client.send_sync(fanout.Event(name="mw/wrapped"))
    info = wait_run(client, run_of(client, eid, "wrapped"))
    assert info.status == "completed", info.error
    fields = {k.decode(): v.decode() for k, v in r.hgetall(f"fanout:run:{{{info.run_id}}}").items()}
    assert json.loads(fields["s:x"])["out"] == {"w": 21}
    assert json.loads(fields["s:y"])["out"] == {"w": 42}
    assert info.output == {"w": {"y": 42}}


def test_a_hook_that_raises_is_named_and_the_saved_step_does_not_run_again(
    worker: Any,
) -> None:
    (eid,) = client.send_sync(fanout.Event(name="mw/boom"))
    info = wait_run(client, run_of(client, eid, "boom"))
    assert info.status == "completed" and info.output == 7
    assert r.get("mw:a-ran") == b"1"  # step a was saved before the hook raised
    assert "middleware BoomOnce.after_execution raised RuntimeError: reporting backend down" \
        in worker.log()


def test_send_hooks_see_the_events_of_client_sends_and_of_steps(worker: object) -> None:
    (eid,) = client.send_sync(fanout.Event(name="mw/send"))
    stored = json.loads(r.get(f"fanout:ev:{{{eid}}}") or b"{}")
    assert stored["data"] == {"stamped": True}  # before_send_events changed the event
    assert _hooks("client")[-2:] == ["C:before_send_events:1", "C:after_send_events:1"]
    info = wait_run(client, run_of(client, eid, "sender"))
    (sent,) = info.output
    assert json.loads(r.get(f"fanout:ev:{{{sent}}}") or b"{}")["data"] == {"n": 1, "stamped": True}
    assert "C:before_send_events:1" in _hooks(info.run_id)
    assert "C:after_send_events:1" in _hooks(info.run_id)


def test_declaration_errors_say_what_to_write() -> None:
    with pytest.raises(TypeError, match=r"pass the class Client, not an instance"):
        client.create_function(fn_id="bad", trigger=fanout.TriggerEvent(event="mw/x"),
                               middleware=[Client(client, None)])
    with pytest.raises(TypeError, match="must be a list of Middleware classes"):
        fanout.Fanout("mw2", celery=app, redis_url=client.redis_url,
                      middleware=Client)  # type: ignore[arg-type]
