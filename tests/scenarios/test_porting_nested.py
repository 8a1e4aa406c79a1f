"""A step tool called inside a running step fails the run ("Nested steps are not
supported"), even when the handler wraps the outer step in ``except Exception``."""

from __future__ import annotations

import pytest

import fanout
from tests.support import make_app, redis_for, run_of, wait_run

app, client = make_app(__name__)


def _inner(ctx: fanout.ContextSync) -> int:
    return int(ctx.step.run("inner", lambda: 1))


async def _ainner(ctx: fanout.Context) -> int:
    return int(await ctx.step.run("inner", lambda: 1))


@client.create_function(fn_id="nested", trigger=fanout.TriggerEvent(event="t/nested"), retries=2)
def nested(ctx: fanout.ContextSync) -> str:
    try:
        ctx.step.run("outer", _inner, ctx)
    except Exception:  # noqa: BLE001 - the pattern ported code uses
        redis_for(__name__).incr(f"swallowed:{ctx.run_id}")
        return "swallowed"
    return "no error"


@client.create_function(fn_id="nested-async",
                        trigger=fanout.TriggerEvent(event="t/nested-async"), retries=2)
async def nested_async(ctx: fanout.Context) -> str:
    try:
        await ctx.step.run("outer", _ainner, ctx)
    except Exception:  # noqa: BLE001
        redis_for(__name__).incr(f"swallowed:{ctx.run_id}")
        return "swallowed"
    return "no error"


@client.create_function(fn_id="nested-branch",
                        trigger=fanout.TriggerEvent(event="t/nested-branch"), retries=2)
def nested_branch(ctx: fanout.ContextSync) -> object:
    try:
        return ctx.group.parallel((lambda: ctx.step.run("outer", _inner, ctx),
                                   lambda: ctx.step.run("other", lambda: 2)))
    except Exception:  # noqa: BLE001
        redis_for(__name__).incr(f"swallowed:{ctx.run_id}")
        return "swallowed"


@pytest.mark.parametrize("fn_id", ["nested", "nested-async", "nested-branch"])
def test_nested_step_fails_the_run(worker: object, fn_id: str) -> None:
    eid = client.emit(f"t/{fn_id}")
    run = wait_run(client, run_of(client, eid, fn_id))
    assert run.status == "failed"
    assert run.error["type"] == "NestedStepError"
    assert run.error["message"].startswith("Nested steps are not supported")
    assert "'inner'" in run.error["message"] and "'outer'" in run.error["message"]
    assert redis_for(__name__).get(f"swallowed:{run.run_id}") is None
