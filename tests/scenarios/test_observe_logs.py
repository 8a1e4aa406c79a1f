"""The worker log and Celery's own failure machinery tell the truth about runs:
a WARNING per failed attempt, an ERROR for a run that fails for good, the
``fanout.step`` task that ends a failed run reported as FAILURE (``task_failure``
fires) with its message acknowledged, and a recovered run keeps no error."""

from __future__ import annotations

import json
import re
from typing import Any

from celery import signals

import fanout
from fanout._celery.runlog import RunFailed
from tests.support import make_app, redis_for, run_of, wait_for, wait_run

app, client = make_app(__name__, app_id="obs")


def flaky(name: str, fail_times: int) -> str:
    n = int(redis_for(__name__).incr(f"side:{name}"))
    if n <= fail_times:
        raise ConnectionError(f"{name} attempt {n} refused")
    return f"ok after {n}"


@client.create_function(fn_id="twice", trigger=fanout.TriggerEvent(event="obs/twice"), retries=4)
def twice_fn(ctx: fanout.ContextSync) -> str:
    return str(ctx.step.run("call-api", flaky, "twice", 2))


@client.create_function(fn_id="doomed", trigger=fanout.TriggerEvent(event="obs/doomed"), retries=1)
def doomed_fn(ctx: fanout.ContextSync) -> str:
    return str(ctx.step.run("charge", flaky, "doomed", 99))


@client.create_function(fn_id="body", trigger=fanout.TriggerEvent(event="obs/body"), retries=2)
def body_fn(ctx: fanout.ContextSync) -> str:
    n = int(redis_for(__name__).incr("side:body"))
    if n == 1:
        raise ValueError("body failed on its first attempt")
    return "recovered"


def _on_failure(sender: Any = None, exception: BaseException | None = None, **_: Any) -> None:
    if isinstance(exception, RunFailed):
        redis_for(__name__).rpush("side:task-failure", json.dumps(
            {"task": getattr(sender, "name", ""), "run": exception.run_id, "fn": exception.fn_key}
        ))


signals.task_failure.connect(_on_failure, weak=False)


def _lines(log: str, run_id: str, level: str) -> list[str]:
    return [ln for ln in log.splitlines() if run_id in ln and f"{level}/" in ln
            and "fanout:" in ln]


def test_two_failed_attempts_then_success_log_two_warnings(worker: Any) -> None:
    eid = client.send_sync(fanout.Event(name="obs/twice", data={}))[0]
    run_id = run_of(client, eid, "twice")
    info = wait_run(client, run_id)
    assert info.status == "completed" and info.error is None
    warnings = wait_for(lambda: len(_lines(worker.log(), run_id, "WARNING")) >= 2 and
                        _lines(worker.log(), run_id, "WARNING"))
    assert len(warnings) == 2, warnings
    for n, line in enumerate(warnings, start=1):
        assert f"step 'call-api' of run {run_id} (obs:twice)" in line
        assert f"attempt {n} of 5" in line
        assert f"ConnectionError: twice attempt {n} refused" in line
        assert re.search(r"next attempt at \d{4}-\d\d-\d\dT", line), line
    assert not _lines(worker.log(), run_id, "ERROR")


def test_run_failing_for_good_logs_error_and_fails_the_task(worker: Any, clean_db: Any) -> None:
    eid = client.send_sync(fanout.Event(name="obs/doomed", data={}))[0]
    run_id = run_of(client, eid, "doomed")
    info = wait_run(client, run_id)
    assert info.status == "failed"
    errors = wait_for(lambda: _lines(worker.log(), run_id, "ERROR"))
    ours = [ln for ln in errors if "failed for good" in ln]
    assert len(ours) == 1, errors
    assert f"run {run_id} (obs:doomed) failed for good" in ours[0]
    assert "ConnectionError: doomed attempt 2 refused" in ours[0]
    warnings = _lines(worker.log(), run_id, "WARNING")
    assert [("attempt 1 of 2" in w, "attempt 2 of 2" in w) for w in warnings] == [
        (True, False), (False, True)]
    assert "no attempt left" in warnings[1]
    # Celery saw a failed task: task_failure fired once, for the fanout.step task.
    raw = wait_for(lambda: redis_for(__name__).lrange("side:task-failure", 0, -1))
    reports = [json.loads(x) for x in raw]
    assert {"task": "fanout.step", "run": run_id, "fn": "obs:doomed"} in reports
    assert "raised unexpected: RunFailed" in worker.log()
    # ... and acknowledged its message: nothing unacked, nothing queued again.
    wait_for(lambda: clean_db.hlen("unacked") == 0 and clean_db.llen("celery") == 0)
    assert sum(r["run"] == run_id for r in reports) == 1


def test_recovered_run_keeps_no_error(worker: Any) -> None:
    eid = client.send_sync(fanout.Event(name="obs/body", data={}))[0]
    run_id = run_of(client, eid, "body")
    info = wait_run(client, run_id)
    assert info.status == "completed"
    assert info.output == "recovered"
    assert info.error is None
    assert info.attempt == 1
    (summary,) = [r for r in client.list_runs(fn_id="body") if r.run_id == run_id]
    assert summary.error is None
    warnings = wait_for(lambda: _lines(worker.log(), run_id, "WARNING"))
    assert f"run {run_id} (obs:body) failed, attempt 1 of 3" in warnings[0]
    assert "ValueError: body failed on its first attempt" in warnings[0]
