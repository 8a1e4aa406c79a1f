# ruff: noqa: F821  (reveal_type is known to mypy only)
"""Must type-check under mypy --strict: the step tools are typed by their handlers.

The spellings are inngest-py's: ``ctx: fanout.ContextSync`` in a ``def`` handler
(``ctx.step`` is a ``fanout.StepSync``), ``ctx: fanout.Context`` in an ``async def``
one (``ctx.step`` is a ``fanout.Step``, whose tools return coroutines to await).
"""

from __future__ import annotations

import asyncio
from typing import Any

from celery import Celery

import fanout

client = fanout.Fanout("typing-sample", celery=Celery("typing-sample"), redis_url="memory://t")


def load(user_id: int) -> dict[str, int]:
    return {"id": user_id}


def label(user_id: int, prefix: str = "user") -> str:
    return f"{prefix}-{user_id}"


def ping() -> bool:
    return True


async def fetch(user_id: int) -> str:
    return f"user-{user_id}"


@client.create_function(fn_id="child", trigger=fanout.TriggerEvent(event="t/child"))
def child(ctx: fanout.ContextSync) -> int:
    return 1


@client.create_function(fn_id="sync", trigger=fanout.TriggerEvent(event="t/sync"))
def sync_handler(ctx: fanout.ContextSync) -> str:
    reveal_type(ctx.step)  # R: fanout._core.step_types.StepSync
    data = ctx.step.run("load", load, 1)
    reveal_type(data)  # R: dict[str, int]
    ok = ctx.step.run("ping", ping)
    reveal_type(ok)  # R: bool
    named = ctx.step.run("label", label, 1, "admin")
    reveal_type(named)  # R: str
    name = ctx.step.run("fetch", fetch, 1)  # an async step handler from a def handler
    reveal_type(name)  # R: str
    ids: list[str] = ctx.step.send_event("send", fanout.Event(name="t/x"))
    ctx.step.sleep("nap", "1s")
    got = ctx.step.wait_for_event("wait", event="t/y", timeout="1h")
    reveal_type(got)  # R: fanout._core.event.Event | None
    n = ctx.step.invoke("call", function=child)
    reveal_type(n)  # R: int
    anything: Any = ctx.step.invoke("by-id", function="child")
    tens = [ctx.step.run(f"item-{i}", lambda n: n * 10, i) for i in range(3)]  # a loop
    reveal_type(tens)  # R: list[int]
    pair = ctx.group.parallel([lambda: ctx.step.run("a", load, 1), lambda: ctx.step.run("b", load, 2)])
    reveal_type(pair)  # R: tuple[dict[str, int], ...]
    return name + named + str(data["id"]) + ids[0] + str(n) + str(anything) + str(ok) + str(tens)


@client.create_function(fn_id="async", trigger=fanout.TriggerEvent(event="t/async"))
async def async_handler(ctx: fanout.Context) -> int:
    reveal_type(ctx.step)  # R: fanout._core.step_types.Step
    pending = ctx.step.run("load", load, 1)
    data = await reveal_type(pending)  # R: typing.Coroutine[Any, Any, dict[str, int]]
    reveal_type(data)  # R: dict[str, int]
    name = await ctx.step.run("fetch", fetch, 1)  # an async step handler is awaited
    reveal_type(name)  # R: str
    named = await ctx.step.run("label", label, 1, "admin")
    reveal_type(named)  # R: str
    await ctx.step.sleep("nap", 5)
    got = await ctx.step.wait_for_event("wait", event="t/y", timeout="1h")
    n = await ctx.step.invoke("call", function=child)
    reveal_type(n)  # R: int
    both = await asyncio.gather(ctx.step.run("a", load, 1), ctx.step.run("b", fetch, 2))
    pair = await ctx.group.parallel([lambda: ctx.step.run("c", load, 1),
                                     lambda: ctx.step.run("d", load, 2)])
    reveal_type(pair)  # R: tuple[dict[str, int], ...]
    ctx.logger.info("event %s, %s", ctx.event.name, got)
    return data["id"] + len(name) + len(named) + n + len(both) + len(pair)


@client.create_function(fn_id="legacy", trigger=fanout.TriggerEvent(event="t/legacy"))
async def legacy_async_handler(ctx: fanout.AsyncContext) -> int:
    """The name earlier releases gave fanout.Context still type-checks (and warns at run
    time) for one release."""
    return await ctx.step.run("load", load, 1) == {"id": 1}


def charge(step: fanout.StepSync, amount: int) -> int:
    """A helper annotated with the sync step tools."""
    return step.run("charge", lambda: amount * 100)


async def charge_async(step: fanout.Step, amount: int) -> int:
    """A helper annotated with the async step tools."""
    return await step.run("charge", lambda: amount * 100)


def either(ctx: fanout.Context | fanout.ContextSync) -> str:
    """A helper that reads only what both contexts have."""
    return f"{ctx.fn_id} {ctx.run_id} {ctx.attempt} {ctx.event.name} {ctx.patched('v2')}"


reveal_type(sync_handler)  # R: def (ctx: fanout._core.context.ContextSync) -> str
reveal_type(async_handler)  # R: def (ctx: fanout._core.context.Context) -> typing.Coroutine[Any, Any, int]
