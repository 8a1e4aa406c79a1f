"""Each kind of handler receives the context of its kind, with the same step tools.

A ``def`` handler gets a ``fanout.ContextSync`` and an ``async def`` one a
``fanout.Context`` (inngest-py's names); ``fanout.AsyncContext``, the earlier name of
``fanout.Context``, still resolves and warns.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest

import fanout
from fanout.testing import embedded_celery, run_function

app = embedded_celery()
client = fanout.Fanout("context-kinds", celery=app, redis_url="memory://context-kinds")


def add(a: int, b: int) -> int:
    return a + b


async def add_async(a: int, b: int) -> int:
    return a + b


@client.create_function(fn_id="sync", trigger=fanout.TriggerEvent(event="t/sync"))
def sync_handler(ctx: fanout.ContextSync) -> dict[str, object]:
    total = ctx.step.run("add", add, 1, 2)
    awaited = ctx.step.run("add-async", add_async, 3, 4)  # an async step handler, awaited
    (par,) = ctx.group.parallel([lambda: ctx.step.run("p", add, 5, 6)])
    return {"kind": type(ctx).__name__, "sync": isinstance(ctx, fanout.ContextSync),
            "async": isinstance(ctx, fanout.Context), "repr": repr(ctx),
            "values": [total, awaited, par]}


@client.create_function(fn_id="async", trigger=fanout.TriggerEvent(event="t/async"))
async def async_handler(ctx: fanout.Context) -> dict[str, object]:
    total = await ctx.step.run("add", add, 1, 2)
    awaited = await ctx.step.run("add-async", add_async, 3, 4)
    (par,) = await ctx.group.parallel([lambda: ctx.step.run("p", add, 5, 6)])
    return {"kind": type(ctx).__name__, "sync": isinstance(ctx, fanout.ContextSync),
            "async": isinstance(ctx, fanout.Context), "repr": repr(ctx),
            "values": [total, awaited, par]}


@pytest.mark.parametrize(("handler", "kind"), [(sync_handler, "ContextSync"),
                                               (async_handler, "Context")])
def test_each_handler_gets_the_context_of_its_kind(handler: Any, kind: str) -> None:
    r = run_function(handler, {"name": "t/x", "data": {}})
    assert r.status == "completed", r.error
    out = r.output
    assert out["kind"] == kind
    assert (out["sync"], out["async"]) == (kind == "ContextSync", kind == "Context")
    assert out["repr"].startswith(f"<fanout.{kind} fn=")
    assert out["values"] == [3, 7, 11]


def test_async_context_is_a_deprecated_alias_of_context() -> None:
    with pytest.warns(DeprecationWarning, match=r"fanout\.Context"):
        assert fanout.AsyncContext is fanout.Context
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # the new names do not warn
        from fanout import Context, ContextSync, Group, GroupSync, Step, StepSync  # noqa: F401
    assert "AsyncContext" not in fanout.__all__
