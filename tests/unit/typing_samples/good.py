# ruff: noqa: F821  (reveal_type is known to mypy only)
"""Must type-check under mypy --strict: the step tools are typed by their handlers."""

from __future__ import annotations

from typing import Any

from celery import Celery

import fanout

client = fanout.Fanout("typing-sample", celery=Celery("typing-sample"), redis_url="memory://t")


def load(user_id: int) -> dict[str, int]:
    return {"id": user_id}


async def fetch(user_id: int) -> str:
    return f"user-{user_id}"


@client.create_function(fn_id="child", trigger=fanout.TriggerEvent(event="t/child"))
def child(ctx: fanout.Context) -> int:
    return 1


@client.create_function(fn_id="sync", trigger=fanout.TriggerEvent(event="t/sync"))
def sync_handler(ctx: fanout.Context) -> str:
    data = ctx.step.run("load", load, 1)
    reveal_type(data)  # R: dict[str, int]
    name = ctx.step.run("fetch", fetch, 1)  # an async step handler from a def handler
    reveal_type(name)  # R: str
    ids: list[str] = ctx.step.send_event("send", fanout.Event(name="t/x"))
    ctx.step.sleep("nap", "1s")
    got = ctx.step.wait_for_event("wait", event="t/y", timeout="1h")
    reveal_type(got)  # R: fanout._core.event.Event | None
    n = ctx.step.invoke("call", function=child)
    reveal_type(n)  # R: int
    anything: Any = ctx.step.invoke("by-id", function="child")
    pair = ctx.group.parallel([lambda: ctx.step.run("a", load, 1), lambda: ctx.step.run("b", load, 2)])
    reveal_type(pair)  # R: tuple[dict[str, int], ...]
    return name + str(data["id"]) + ids[0] + str(n) + str(anything)


@client.create_function(fn_id="async", trigger=fanout.TriggerEvent(event="t/async"))
async def async_handler(ctx: fanout.AsyncContext) -> int:
    pending = ctx.step.run("load", load, 1)
    reveal_type(pending)  # R: typing.Awaitable[dict[str, int]]
    data = await pending
    name = await ctx.step.run("fetch", fetch, 1)
    reveal_type(name)  # R: str
    await ctx.step.sleep("nap", 5)
    got = await ctx.step.wait_for_event("wait", event="t/y", timeout="1h")
    n = await ctx.step.invoke("call", function=child)
    reveal_type(n)  # R: int
    ctx.logger.info("event %s, %s", ctx.event.name, got)
    return data["id"] + len(name) + n


reveal_type(sync_handler)  # R: def (ctx: fanout._core.context.Context) -> str
