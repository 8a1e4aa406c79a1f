# ruff: noqa: F841, F704  (the assignments and the misplaced await are what mypy checks)
"""Must NOT type-check: each line marked E is an error mypy --strict reports."""

from __future__ import annotations

from celery import Celery

import fanout

client = fanout.Fanout("typing-bad", celery=Celery("typing-bad"), redis_url="memory://t")


def load(user_id: int) -> dict[str, int]:
    return {"id": user_id}


def ping() -> bool:
    return True


async def fetch(user_id: int) -> str:
    return f"user-{user_id}"


@client.create_function(fn_id="child", trigger=fanout.TriggerEvent(event="t/child"))
def child(ctx: fanout.ContextSync) -> int:
    return 1


@client.create_function(fn_id="sync", trigger=fanout.TriggerEvent(event="t/sync"))
def sync_handler(ctx: fanout.ContextSync) -> None:
    wrong: str = ctx.step.run("load", load, 1)  # E: Incompatible types in assignment
    ctx.step.run("extra", ping, 1)  # E: Argument 2 to "run" of "StepSync" has incompatible type "Callable[[], bool]"; expected "Callable[[int],
    ctx.step.run("missing", load)  # E: Argument 2 to "run" of "StepSync" has incompatible type "Callable[[int], dict[str, int]]"; expected "Callable[[],
    ctx.step.run("type", load, "1")  # E: Argument 2 to "run" of "StepSync" has incompatible type "Callable[[int], dict[str, int]]"; expected "Callable[[str],
    ctx.step.run("async-type", fetch, "1")  # E: Argument 2 to "run" of "StepSync" has incompatible type "Callable[[int], Coroutine[Any, Any, str]]"; expected "Callable[[str],
    n: str = ctx.step.invoke("call", function=child)  # E: Incompatible types in assignment
    pair: tuple[str, ...] = ctx.group.parallel([lambda: ctx.step.run("a", load, 1)])  # E: List item 0 has incompatible type "Callable[[], dict[str, int]]"; expected "Callable[[], str]"


@client.create_function(fn_id="sync-await", trigger=fanout.TriggerEvent(event="t/sync-await"))
def sync_handler_awaiting(ctx: fanout.ContextSync) -> None:
    await ctx.step.run("load", load, 1)  # E: "await" outside coroutine ("async def")


@client.create_function(fn_id="async", trigger=fanout.TriggerEvent(event="t/async"))
async def async_handler(ctx: fanout.Context) -> None:
    not_awaited: dict[str, int] = ctx.step.run("load", load, 1)  # E: Incompatible types in assignment
    wrong: str = await ctx.step.run("load-again", load, 1)  # E: Argument 2 to "run" of "Step" has incompatible type "Callable[[int], dict[str, int]]"
    await ctx.step.run("extra", ping, 1)  # E: Argument 2 to "run" of "Step" has incompatible type "Callable[[], bool]"; expected "Callable[[int],
    await ctx.step.run("missing", fetch)  # E: Argument 2 to "run" of "Step" has incompatible type "Callable[[int], Coroutine[Any, Any, str]]"; expected "Callable[[],
    await ctx.step.run("type", fetch, "1")  # E: Argument 2 to "run" of "Step" has incompatible type "Callable[[int], Coroutine[Any, Any, str]]"; expected "Callable[[str],
    await ctx.group.parallel([lambda: load(1)])  # E: Argument 1 to "parallel" of "Group" has incompatible type


@client.create_function(fn_id="mixed", trigger=fanout.TriggerEvent(event="t/mixed"))  # E: Value of type variable
def sync_with_async_context(ctx: fanout.Context) -> None:
    return None


@client.create_function(fn_id="mixed-async", trigger=fanout.TriggerEvent(event="t/mixed-async"))
async def async_with_sync_context(ctx: fanout.ContextSync) -> None:
    await ctx.step.run("load", load, 1)  # E: Incompatible types in "await"


def helper(step: fanout.StepSync) -> None:
    step.run("load", load)  # E: Argument 2 to "run" of "StepSync" has incompatible type "Callable[[int], dict[str, int]]"; expected "Callable[[],
