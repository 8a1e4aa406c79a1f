"""check-deploy's replay (pure): a run's saved steps against other code, read-only,
stopping before any new code runs; sync and async handlers."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

import fanout
from fanout._core.deploy_replay import replay_run
from fanout._core.function import FunctionDef
from fanout._core.records import StepRecord
from fanout._core.run_record import new_run_fields, step_field
from fanout.embedded import embedded_celery

client = fanout.Fanout("replay-unit", celery=embedded_celery(), redis_url="memory://replay-unit")
ran: list[str] = []


def saved_run(*records: StepRecord, **extra: str) -> dict[str, str]:
    """A run of v1 (steps 'a' done, sleeping at 'nap') as its hash holds it."""
    fields = new_run_fields("f", "replay-unit", "replay-unit:f", {"name": "t/f", "id": "e1"},
                            event_ids=["e1"], created=repr(time.time()))
    fields = {k: str(v) for k, v in fields.items()}
    fields["st"] = "sleeping"
    for rec in records:
        fields[step_field(rec.id)] = json.dumps(rec.to_json())
    return {**fields, **extra}


V1 = (StepRecord(id="a", kind="run", status="completed", output="a1", seq=0),
      StepRecord(id="nap", kind="sleep", status="sleeping", seq=1,
                 extra={"until": time.time() + 3600}))


def declare(fn_id: str, handler: Any, **opts: Any) -> FunctionDef:
    client.create_function(fn_id=fn_id, trigger=fanout.TriggerEvent(event=f"t/{fn_id}"),
                           **opts)(handler)
    return client.functions[fn_id]


def step(ctx: Any, sid: str) -> Any:
    return ctx.step.run(sid, lambda: ran.append(sid) or sid)


def same(ctx: fanout.ContextSync) -> Any:
    a = step(ctx, "a")
    ctx.step.sleep("nap", "1h")
    return [a, step(ctx, "b")]


def renamed(ctx: fanout.ContextSync) -> Any:
    a = step(ctx, "a-renamed")
    ctx.step.sleep("nap", "1h")
    return [a, step(ctx, "b")]


async def renamed_async(ctx: fanout.Context) -> Any:
    a = await ctx.step.run("a-renamed", lambda: ran.append("a-renamed"))
    await ctx.step.sleep("nap", "1h")
    return a


def retooled(ctx: fanout.ContextSync) -> Any:
    ctx.step.sleep("a", "1s")


def removed_helper(ctx: fanout.ContextSync) -> Any:
    raise AttributeError("module 'helpers' has no attribute 'charge'")


@pytest.fixture(autouse=True)
def _clear() -> None:
    ran.clear()


def test_same_code_is_ok_and_runs_nothing() -> None:
    check = replay_run(declare("same", same), "r1", saved_run(*V1))
    assert (check.verdict, check.stopped_at, check.warnings) == ("ok", "nap", [])
    assert ran == []


@pytest.mark.parametrize("handler", [renamed, renamed_async])
def test_renamed_step_warns_and_would_run_again(handler: Any) -> None:
    check = replay_run(declare(f"ren-{handler.__name__}", handler), "r1", saved_run(*V1))
    assert check.verdict == "warn" and check.stopped_at == "a-renamed"
    assert check.would_run == ["a-renamed"] and check.unused == ["a"]
    assert [w["kind"] for w in check.warnings] == ["order"]
    assert ran == []  # the new step's code did not run


def test_strict_mode_and_tool_change_would_fail() -> None:
    strict = replay_run(declare("strict", renamed, strict_order=True), "r1", saved_run(*V1))
    assert strict.verdict == "fail" and strict.error is not None
    assert strict.error["type"] == "NonDeterminismError" and "strict" in strict.error["message"]
    tool = replay_run(declare("retooled", retooled), "r1", saved_run(*V1))
    assert tool.verdict == "fail" and tool.error is not None
    assert "ctx.step.sleep" in tool.error["message"]


def test_the_guard_counts_from_the_run() -> None:
    near = saved_run(*V1, vdv=json.dumps({"n": 2, "gone": []}))
    check = replay_run(declare("near", renamed), "r1", near)
    assert check.verdict == "fail" and check.error is not None
    assert "3 passes in a row" in check.error["message"]


def test_code_that_raises_before_a_new_step_would_fail() -> None:
    check = replay_run(declare("broken", removed_helper), "r1", saved_run(*V1))
    assert check.verdict == "fail" and check.error is not None
    assert check.error["type"] == "AttributeError" and check.error["retriable"] is True


def test_a_step_no_longer_reached_before_the_waiting_one() -> None:
    def v2(ctx: fanout.ContextSync) -> Any:
        ctx.step.sleep("nap", "1h")

    check = replay_run(declare("skips", v2), "r1", saved_run(*V1))
    assert check.verdict == "warn" and check.unused == ["a"] and not check.would_run
    assert [w["kind"] for w in check.warnings] == ["unreached"]
