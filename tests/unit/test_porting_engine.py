"""The engine's porting behaviours without Redis (fanout.testing.run_function and the
watchdog's rule): invoke inside parallel groups, races, a branch that later passes no
longer reach, nested steps, the logger on retried attempts."""

from __future__ import annotations

import asyncio
import logging

import pytest

import fanout
from fanout._redis.stuck import stuck_reason
from fanout.testing import embedded_celery, run_function

app = embedded_celery()
client = fanout.Fanout("porting-unit", celery=app, redis_url="memory://porting-unit",
                       retry_backoff=[0.0])


@client.create_function(fn_id="kid", trigger=fanout.TriggerEvent(event="u/kid"))
def kid(ctx: fanout.ContextSync) -> int:
    return 1


@client.create_function(fn_id="fan", trigger=fanout.TriggerEvent(event="u/fan"))
def fan(ctx: fanout.ContextSync) -> object:
    return ctx.group.parallel((
        lambda: ctx.step.run("a", lambda: "a"),
        lambda: ctx.step.invoke("k", function=kid),
    ))


@client.create_function(fn_id="fan-async", trigger=fanout.TriggerEvent(event="u/fan-async"))
async def fan_async(ctx: fanout.Context) -> object:
    return await asyncio.gather(ctx.step.run("a", lambda: "a"),
                                ctx.step.invoke("k", function=kid))


@client.create_function(fn_id="race", trigger=fanout.TriggerEvent(event="u/race"))
def race(ctx: fanout.ContextSync) -> object:
    (won,) = ctx.group.parallel((lambda: ctx.step.run("x", lambda: "x"),
                                 lambda: ctx.step.run("y", lambda: "y")),
                                parallel_mode=fanout.ParallelMode.RACE)
    return won


passes: list[int] = []


@client.create_function(fn_id="shrinks", trigger=fanout.TriggerEvent(event="u/shrinks"))
def shrinks(ctx: fanout.ContextSync) -> object:
    passes.append(1)
    steps = [lambda: ctx.step.run("a", lambda: 1)]
    if len(passes) == 1:
        steps.append(lambda: ctx.step.run("b", lambda: 2))
    return ctx.group.parallel(steps)


lines: list[str] = []


class Keep(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        lines.append(record.getMessage().rsplit("] ", 1)[-1])


mine = logging.getLogger("porting.unit")
mine.addHandler(Keep())
mine.setLevel(logging.INFO)
client.set_logger(mine)


@client.create_function(fn_id="logs", trigger=fanout.TriggerEvent(event="u/logs"), retries=3)
def logs(ctx: fanout.ContextSync) -> object:
    ctx.logger.info("start")
    ctx.step.run("one", lambda: 1)
    ctx.logger.info("before")
    return ctx.step.run("flaky", lambda: 1 if ctx.attempt >= 2 else 1 // 0)


@pytest.mark.parametrize("fn", [fan, fan_async])
def test_invoke_in_a_group(fn: object) -> None:
    res = run_function(fn, {"name": "u/x"}, invokes={"k": 5})  # type: ignore[arg-type]
    assert res.status == "completed", res.error
    assert list(res.output) == ["a", 5]


def test_race_returns_one_winner() -> None:
    res = run_function(race, {"name": "u/race"})
    assert res.status == "completed" and res.output in ("x", "y")


def test_branch_no_longer_reached_fails_the_run() -> None:
    passes.clear()
    res = run_function(shrinks, {"name": "u/shrinks"})
    assert res.status == "failed"
    assert res.error["type"] == "NonDeterminismError" and "'b'" in res.error["message"]


def test_logger_lines_on_every_attempt() -> None:
    lines.clear()
    res = run_function(logs, {"name": "u/logs"})
    assert res.status == "completed", res.error
    assert lines.count("start") == 1
    assert lines.count("before") == 3


def test_stuck_rule() -> None:
    queued = '{"id":"b","k":"run","st":"queued","x":{"group":["a","b"]}}'
    run = {"st": "running", "lease": "", "lu": "0", "s:b": queued}
    assert "['b']" in (stuck_reason(run, {"r": 1.0}, "r", 1000.0) or "")
    assert stuck_reason(run, {"r": 1.0, "branch:r:b": 2.0}, "r", 1000.0) is None
    leased = {**run, "bl:b": "tok", "bl:b:u": "5000"}
    assert stuck_reason(leased, {"r": 1.0}, "r", 1000.0) is None
    assert stuck_reason({"st": "sleeping"}, {"r": None}, "r", 1000.0) is not None
    assert stuck_reason({"st": "sleeping"}, {"r": 5.0}, "r", 1000.0) is None
    assert stuck_reason({"st": "running", "lease": "t", "lu": "9000"}, {}, "r", 1000.0) is None
    assert stuck_reason({"st": "completed"}, {}, "r", 1000.0) is None
