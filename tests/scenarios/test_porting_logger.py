"""``ctx.logger`` as ported code expects: the client's logger (``Fanout(logger=...)`` or
``client.set_logger``), silent while memoized steps replay, and lines logged before a
retried raise appear on every attempt; sync and async handlers."""

from __future__ import annotations

import logging

import pytest

import fanout
from tests.support import make_app, redis_for, run_of, wait_run


class RedisLines(logging.Handler):
    """Keeps each line the run logger emits in a Redis list (the workers' processes)."""

    def emit(self, record: logging.LogRecord) -> None:
        redis_for(__name__).rpush("lines", record.getMessage().rsplit("] ", 1)[-1])


custom = logging.getLogger("porting.runs")
custom.setLevel(logging.INFO)
custom.addHandler(RedisLines())

app, client = make_app(__name__, logger=custom)
other = fanout.Fanout("second", celery=app, redis_url=client.redis_url, retry_backoff=[0.2, 0.4])
other.set_logger(custom)


def flaky(key: str) -> str:
    if redis_for(__name__).incr(f"tries:{key}") < 3:
        raise RuntimeError("not yet")
    return "ok"


@client.create_function(fn_id="logs", trigger=fanout.TriggerEvent(event="t/logs"), retries=3)
def logs(ctx: fanout.ContextSync) -> str:
    key = ctx.event.data["key"]
    ctx.logger.info(f"{key} start")
    ctx.step.run("first", lambda: 1)
    ctx.logger.info(f"{key} before flaky")
    return str(ctx.step.run("flaky", flaky, key))


@other.create_function(fn_id="logs-async", trigger=fanout.TriggerEvent(event="t/logs-async"),
                       retries=3)
async def logs_async(ctx: fanout.Context) -> str:
    key = ctx.event.data["key"]
    ctx.logger.info(f"{key} start")
    await ctx.step.run("first", lambda: 1)
    ctx.logger.info(f"{key} before flaky")
    return str(await ctx.step.run("flaky", flaky, key))


@pytest.mark.parametrize(("c", "fn_id"), [(client, "logs"), (other, "logs-async")])
def test_logger_on_every_attempt_silent_in_replay(worker: object, c: fanout.Fanout,
                                                  fn_id: str) -> None:
    key = fn_id
    run = wait_run(c, run_of(c, c.emit(f"t/{fn_id}", {"key": key}), fn_id))
    assert run.status == "completed", run.error
    lines = [b.decode() for b in redis_for(__name__).lrange("lines", 0, -1)]
    mine = [ln for ln in lines if ln.startswith(f"{key} ")]
    assert mine.count(f"{key} start") == 1
    assert mine.count(f"{key} before flaky") == 3  # three attempts of the flaky step


def test_set_logger_refuses_other_objects() -> None:
    with pytest.raises(fanout.ConfigError, match="logging.Logger"):
        client.set_logger(print)  # type: ignore[arg-type]
