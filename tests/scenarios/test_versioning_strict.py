"""Strict mode: a deploy that adds a step at the top fails the runs in flight with
NonDeterminismError (today's order check), per function and per client; a function
of a strict client can opt out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis

import fanout
from tests.scenarios.versioning_helpers import CODE, counted, executions, wait_status, worker_on
from tests.support import make_app, redis_for, run_of, url_for, wait_run

app, client = make_app(__name__)
strict_client = fanout.Fanout("tests-strict", celery=app, redis_url=url_for(__name__),
                              strict_order=True, retry_backoff=[0.2])
r = redis_for(__name__)


def body(ctx: fanout.ContextSync) -> list[Any]:
    out = [counted(r, ctx, "intro", "i2")] if CODE == "2" else []
    out.append(counted(r, ctx, "a", f"a{CODE}"))
    ctx.step.sleep("nap", "4s")
    return [*out, counted(r, ctx, "b", f"b{CODE}")]


# The same body, three declarations. The handlers' source does not change between
# versions, so each names its version explicitly.
@client.create_function(fn_id="strict-fn", trigger=fanout.TriggerEvent(event="t/go"),
                        strict_order=True, version=f"v{CODE}")
def strict_fn(ctx: fanout.ContextSync) -> list[Any]:
    return body(ctx)


@strict_client.create_function(fn_id="strict-client", trigger=fanout.TriggerEvent(event="t/go"),
                               version=f"v{CODE}")
def strict_by_client(ctx: fanout.ContextSync) -> list[Any]:
    return body(ctx)


@strict_client.create_function(fn_id="opted-out", trigger=fanout.TriggerEvent(event="t/go"),
                               strict_order=False, version=f"v{CODE}")
def opted_out(ctx: fanout.ContextSync) -> list[Any]:
    return body(ctx)


def test_strict_mode_fails_runs_whose_steps_changed(clean_db: redis.Redis, log_dir: Path) -> None:
    w1 = worker_on(__name__, "1", log_dir)
    try:
        eid = client.emit("t/go")
        runs = {"strict-fn": run_of(client, eid, "strict-fn"),
                "strict-client": run_of(strict_client, eid, "strict-client"),
                "opted-out": run_of(strict_client, eid, "opted-out")}
        wait_status(client, list(runs.values()), "sleeping")
    finally:
        w1.stop()
    w2 = worker_on(__name__, "2", log_dir)
    try:
        done = {k: wait_run(client, rid) for k, rid in runs.items()}
    finally:
        w2.stop()
    for key in ("strict-fn", "strict-client"):
        run = done[key]
        assert run.status == "failed" and run.error is not None, key
        assert run.error["type"] == "NonDeterminismError"
        assert "'intro'" in run.error["message"] and "strict mode" in run.error["message"]
        assert executions(r, run.run_id) == {"a": 1}  # nothing ran on version 2
        assert run.versions == ["v1", "v2"]
    lenient = done["opted-out"]
    assert lenient.status == "completed" and lenient.output == ["i2", "a1", "b2"]
    assert [w["kind"] for w in lenient.warnings] == ["order"]
    assert lenient.warnings[0]["version"] == "v2"
