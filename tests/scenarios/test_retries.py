"""Per-step retries with backoff, RetryAfterError, NonRetriableError and StepError,
and retries of errors raised outside any step."""

from __future__ import annotations

import time

import fanout
from tests.support import make_app, redis_for, run_of, wait_run

app, client = make_app(__name__)


def flaky(name: str, fail_times: int) -> str:
    n = int(redis_for(__name__).incr(f"side:{name}"))
    if n <= fail_times:
        raise ConnectionError(f"attempt {n} failed")
    return f"ok after {n}"


def stamp(name: str) -> float:
    now = time.time()
    redis_for(__name__).rpush(f"side:{name}", now)
    return now


@client.create_function(fn_id="flaky", trigger=fanout.TriggerEvent(event="t/flaky"), retries=4)
def flaky_fn(ctx: fanout.ContextSync) -> str:
    before = ctx.step.run("before", stamp, "before")
    result = ctx.step.run("flaky", flaky, "flaky", 2)
    ctx.step.run("after", stamp, "after")
    return f"{result} ({before > 0})"


def retry_after_step() -> str:
    times = redis_for(__name__).rpush("side:retry-after", time.time())
    if times == 1:
        raise fanout.RetryAfterError("rate limited", 1500)  # milliseconds
    return "done"


@client.create_function(fn_id="retry-after", trigger=fanout.TriggerEvent(event="t/retry-after"))
def retry_after_fn(ctx: fanout.ContextSync) -> str:
    return str(ctx.step.run("limited", retry_after_step))


def refuse() -> None:
    redis_for(__name__).incr("side:refuse")
    raise fanout.NonRetriableError("card declined")


@client.create_function(fn_id="non-retriable", trigger=fanout.TriggerEvent(event="t/nonretry"))
def non_retriable_fn(ctx: fanout.ContextSync) -> None:
    ctx.step.run("charge", refuse)
    ctx.step.run("never", stamp, "never")


@client.create_function(fn_id="catches", trigger=fanout.TriggerEvent(event="t/catches"), retries=2)
def catches_fn(ctx: fanout.ContextSync) -> dict[str, str]:
    try:
        ctx.step.run("always-fails", flaky, "always", 100)
    except fanout.StepError as exc:
        fallback = ctx.step.run("fallback", lambda: "used fallback")
        return {"step": exc.step_id, "type": exc.error_type, "fallback": fallback}
    return {"step": "none"}


@client.create_function(fn_id="outside", trigger=fanout.TriggerEvent(event="t/outside"), retries=3)
def outside_fn(ctx: fanout.ContextSync) -> str:
    ctx.step.run("once", stamp, "once")
    n = int(redis_for(__name__).incr("side:outside"))
    if n < 3:
        raise RuntimeError(f"pass error {n}")
    return f"attempt {ctx.attempt}"


def test_step_retries_until_success(worker: object) -> None:
    eid = client.emit("t/flaky")
    run = wait_run(client, run_of(client, eid, "flaky"))
    assert run.status == "completed", run.error
    assert run.output == "ok after 3 (True)"
    steps = {s.step_id: s for s in run.steps}
    assert steps["flaky"].attempts == 3
    assert steps["before"].attempts == 1 and steps["after"].attempts == 1
    r = redis_for(__name__)
    assert r.llen("side:before") == 1  # the memoized step did not run again on retries
    assert r.llen("side:after") == 1


def test_retry_after_sets_the_delay(worker: object) -> None:
    eid = client.emit("t/retry-after")
    run = wait_run(client, run_of(client, eid, "retry-after"))
    assert run.status == "completed", run.error
    t = [float(x) for x in redis_for(__name__).lrange("side:retry-after", 0, -1)]
    assert len(t) == 2
    # The default backoff in these tests is 0.2 s; RetryAfterError asked for 1.5 s.
    assert t[1] - t[0] >= 1.5


def test_non_retriable_fails_at_once(worker: object) -> None:
    eid = client.emit("t/nonretry")
    run = wait_run(client, run_of(client, eid, "non-retriable"))
    assert run.status == "failed"
    assert run.error["type"] == "StepError"
    assert "card declined" in run.error["message"]
    (charge,) = run.steps
    assert charge.status == "failed" and charge.attempts == 1
    assert charge.error["type"] == "NonRetriableError"
    assert int(redis_for(__name__).get("side:refuse")) == 1
    assert redis_for(__name__).llen("side:never") == 0


def test_handler_catches_step_error(worker: object) -> None:
    eid = client.emit("t/catches")
    run = wait_run(client, run_of(client, eid, "catches"))
    assert run.status == "completed", run.error
    assert run.output == {"step": "always-fails", "type": "ConnectionError",
                          "fallback": "used fallback"}
    steps = {s.step_id: s for s in run.steps}
    assert steps["always-fails"].attempts == 3  # retries=2 -> 3 attempts
    assert steps["always-fails"].status == "failed"


def test_error_outside_steps_retries_the_pass(worker: object) -> None:
    eid = client.emit("t/outside")
    run = wait_run(client, run_of(client, eid, "outside"))
    assert run.status == "completed", run.error
    assert run.output == "attempt 2"
    assert run.attempt == 2
    assert redis_for(__name__).llen("side:once") == 1
