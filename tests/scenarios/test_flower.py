"""What Flower shows for fanout's runs, read from a real ``celery flower``'s HTTP API
(``/api/tasks``) beside a real worker sending task events, and what the worker log
says of a run that fails for good:

* a pass that ends well: SUCCESS;
* a failed attempt that fanout will retry: RETRY, with the error (Celery's own retry
  state and ``task-retried`` event), not SUCCESS;
* the pass that ends a run as failed: FAILURE, whose traceback (in Flower and in the
  worker log) carries the user's own frame, the line that raised.

These are the rows of the Flower table in docs/howto/observability.md.
"""

from __future__ import annotations

import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fanout
from tests.support import ROOT, Worker, make_app, redis_for, run_of, wait_for, wait_run

app, client = make_app(__name__, app_id="flw")


def flaky(name: str, fail_times: int) -> str:
    n = int(redis_for(__name__).incr(f"side:{name}"))
    if n <= fail_times:
        raise ConnectionError(f"{name} attempt {n} refused")  # THE USER'S LINE
    return f"ok after {n}"


USER_LINE = next(i for i, text in enumerate(inspect.getsource(sys.modules[__name__]).splitlines(),
                                            start=1) if "# THE USER'S LINE" in text
                 and "raise" in text)


@client.create_function(fn_id="fine", trigger=fanout.TriggerEvent(event="flw/fine"))
def fine_fn(ctx: fanout.ContextSync) -> str:
    return str(ctx.step.run("ok", lambda: "fine"))


@client.create_function(fn_id="once", trigger=fanout.TriggerEvent(event="flw/once"), retries=2)
def once_fn(ctx: fanout.ContextSync) -> str:
    return str(ctx.step.run("call-api", flaky, "once", 1))


@client.create_function(fn_id="doomed", trigger=fanout.TriggerEvent(event="flw/doomed"),
                        retries=1)
def doomed_fn(ctx: fanout.ContextSync) -> str:
    return str(ctx.step.run("charge", flaky, "doomed", 99))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Flower:
    def __init__(self, log_dir: Path) -> None:
        self.port = _free_port()
        self.log_path = log_dir / f"flower-{int(time.time() * 1000)}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", __name__, "flower",
             f"--port={self.port}", "--address=127.0.0.1", "--unauthenticated_api=true",
             "--persistent=False"],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "FLOWER_UNAUTHENTICATED_API": "true"},
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_for(self._up, timeout=60, interval=0.2)

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"flower exited:\n{self.log_path.read_text()[-3000:]}")
        try:
            self.get("/healthcheck")
            return True
        except OSError:
            return False

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as resp:
            body = resp.read()
        return json.loads(body) if path.startswith("/api/") else body

    def tasks_of(self, run_id: str) -> list[dict[str, Any]]:
        """The fanout.step tasks of a run, oldest first."""
        tasks = self.get("/api/tasks?limit=1000").values()
        ours = [t for t in tasks if t.get("name") == "fanout.step" and run_id in str(t.get("args"))]
        return sorted(ours, key=lambda t: t.get("received") or t.get("timestamp") or 0)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()


@pytest.fixture(scope="module")
def flower(clean_db: Any, log_dir: Path) -> Iterator[tuple[Flower, Worker]]:
    f = Flower(log_dir)
    w = Worker(__name__, log_dir=log_dir, args=("--task-events",))
    try:
        # Flower sees this worker's events before the tests send anything.
        rid = run_of(client, client.send_sync(fanout.Event(name="flw/fine", data={}))[0], "fine")
        wait_for(lambda: any(t["state"] == "SUCCESS" for t in f.tasks_of(rid)), timeout=60,
                 interval=0.3)
        yield f, w
    finally:
        w.stop()
        f.stop()


def _states(f: Flower, run_id: str, until: str) -> list[dict[str, Any]]:
    def seen() -> list[dict[str, Any]] | None:
        tasks = f.tasks_of(run_id)
        return tasks if any(t["state"] == until for t in tasks) else None

    result: list[dict[str, Any]] = wait_for(seen, timeout=60, interval=0.3)
    return result


def test_a_pass_that_ends_well_is_success(flower: tuple[Flower, Worker]) -> None:
    f, _ = flower
    rid = run_of(client, client.send_sync(fanout.Event(name="flw/fine", data={}))[0], "fine")
    assert wait_run(client, rid).status == "completed"
    tasks = _states(f, rid, "SUCCESS")
    assert {t["state"] for t in tasks} == {"SUCCESS"}, tasks


def test_a_failed_attempt_that_will_be_retried_is_retry_with_the_error(
    flower: tuple[Flower, Worker], clean_db: Any
) -> None:
    f, _ = flower
    rid = run_of(client, client.send_sync(fanout.Event(name="flw/once", data={}))[0], "once")
    assert wait_run(client, rid).status == "completed"
    tasks = _states(f, rid, "SUCCESS")
    retried = [t for t in tasks if t["state"] == "RETRY"]
    assert len(retried) == 1, [(t["state"], t.get("exception")) for t in tasks]
    assert "ConnectionError: once attempt 1 refused" in retried[0]["exception"]
    assert f"step 'call-api' of run {rid}" in retried[0]["exception"]
    assert "attempt 1 of 3" in retried[0]["exception"]
    assert [t["state"] for t in tasks].count("FAILURE") == 0
    # The RETRY task's message was acknowledged (fanout's timer retried the attempt):
    # nothing unacknowledged, nothing queued again.
    wait_for(lambda: clean_db.hlen("unacked") == 0 and clean_db.llen("celery") == 0)


def test_a_run_failing_for_good_is_failure_with_the_users_traceback(
    flower: tuple[Flower, Worker]
) -> None:
    f, w = flower
    rid = run_of(client, client.send_sync(fanout.Event(name="flw/doomed", data={}))[0], "doomed")
    assert wait_run(client, rid).status == "failed"
    tasks = _states(f, rid, "FAILURE")
    states = [t["state"] for t in tasks]
    assert states.count("RETRY") == 1 and states.count("FAILURE") == 1, states
    (failure,) = [t for t in tasks if t["state"] == "FAILURE"]
    assert f"run {rid} of flw:doomed failed" in failure["exception"]
    here = f'{Path(__file__).name}", line {USER_LINE}, in flaky'
    assert here in failure["traceback"], failure["traceback"]
    assert "ConnectionError: doomed attempt 2 refused" in failure["traceback"]
    # The worker log: Celery's FAILURE line, then the user's traceback with their line.
    log = wait_for(lambda: (lambda t: t if "raised unexpected: RunFailed" in t else None)(w.log()))
    tail = log[log.index(f"raised unexpected: RunFailed(\"run {rid}"):]
    assert here in tail[:6000], tail[:6000]
