# ruff: noqa: F841  (the assignments are what mypy checks)
"""Must NOT type-check: each line marked E is an error mypy --strict reports."""

from __future__ import annotations

from celery import Celery

import fanout

client = fanout.Fanout("typing-bad", celery=Celery("typing-bad"), redis_url="memory://t")


def load(user_id: int) -> dict[str, int]:
    return {"id": user_id}


@client.create_function(fn_id="sync", trigger=fanout.TriggerEvent(event="t/sync"))
def sync_handler(ctx: fanout.Context) -> None:
    wrong: str = ctx.step.run("load", load, 1)  # E: Incompatible types in assignment


@client.create_function(fn_id="async", trigger=fanout.TriggerEvent(event="t/async"))
async def async_handler(ctx: fanout.AsyncContext) -> None:
    not_awaited: dict[str, int] = ctx.step.run("load", load, 1)  # E: Incompatible types in assignment


@client.create_function(fn_id="mixed", trigger=fanout.TriggerEvent(event="t/mixed"))  # E: Value of type variable
def sync_with_async_context(ctx: fanout.AsyncContext) -> None:
    return None
