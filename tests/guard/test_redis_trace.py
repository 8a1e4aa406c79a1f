"""Guard rail: the Redis commands the seed workflow sends, in embedded mode.

The seed workflow (a loader fans out one event per user; each event starts an
email run with two steps) runs on the embedded worker (one thread) against the
in-memory store.  Every command the store receives while a Celery task runs (and
while ``emit`` runs) is recorded per task invocation, ids, tokens and times are
replaced by placeholders, and the sorted list of invocations is compared with
``redis_trace.txt``.  A restructure must leave it identical; a deliberate change
is made by regenerating the file (``FANOUT_WRITE_TRACE=1``) and naming it.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import signals
from fakeredis._socket._base import BaseFakeSocket

import fanout
import fanout.testing

N_USERS = 3
TRACE_FILE = Path(__file__).parent / "redis_trace.txt"

_local = threading.local()
_lock = threading.Lock()
_invocations: list[tuple[str, list[list[str]]]] = []


def _decode(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _begin(label: str) -> None:
    _local.current = (label, [])


def _end() -> None:
    cur = getattr(_local, "current", None)
    _local.current = None
    if cur is not None:
        with _lock:
            _invocations.append(cur)


def _on_prerun(sender: Any = None, task: Any = None, **_: Any) -> None:
    _begin(getattr(task, "name", "?"))


def _on_postrun(**_: Any) -> None:
    _end()


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    original = BaseFakeSocket._process_command

    def process(self: Any, fields: list[bytes]) -> Any:
        cur = getattr(_local, "current", None)
        if cur is not None:
            cur[1].append([_decode(f) for f in fields])
        return original(self, fields)

    monkeypatch.setattr(BaseFakeSocket, "_process_command", process)
    signals.task_prerun.connect(_on_prerun, weak=False)
    signals.task_postrun.connect(_on_postrun, weak=False)
    _invocations.clear()
    try:
        yield
    finally:
        signals.task_prerun.disconnect(_on_prerun)
        signals.task_postrun.disconnect(_on_postrun)


_ULID = re.compile(r"\b[0-9A-HJKMNP-TV-Z]{26}\b")
_HEX = re.compile(r"\b[0-9a-f]{18}\b")
_NUM = re.compile(r"(?<![\w.])\d{10,}(?:\.\d+)?(?![\w])")
_FLOAT = re.compile(r"(?<![\w.])\d+\.\d+(?![\w])")
_DURATION = re.compile(r'("(?:ms|dur|d|elapsed)"\s*:\s*)\d+(?:\.\d+)?')
_FINGERPRINT = re.compile(r"\bsrc-[0-9a-f]{12}\b")  # a function version from the handler source
_TIMER_SHARD = re.compile(r"(:timers:)\{t\d+\}")  # the shard follows the (random) run id


def normalise(commands: list[list[str]]) -> list[str]:
    """One line per command; ids and tokens numbered by first appearance, times dropped."""
    names: dict[str, str] = {}

    def name(prefix: str) -> Any:
        def sub(m: re.Match[str]) -> str:
            return names.setdefault(m.group(0), f"<{prefix}{len(names)}>")
        return sub

    out = []
    for fields in commands:
        if fields[0].upper() in ("HELLO", "CLIENT"):
            continue  # the connection handshake: whichever task opens a connection
        if fields[0].upper() == "SCRIPT" and len(fields) == 3:
            fields = [*fields[:2], hashlib.sha1(fields[2].encode()).hexdigest()]
        line = " ".join(fields)
        line = _FINGERPRINT.sub("<version>", line)
        line = _TIMER_SHARD.sub(r"\1{t<k>}", line)
        line = _ULID.sub(name("id"), line)
        line = _HEX.sub(name("tok"), line)
        line = _NUM.sub("<t>", line)
        line = _FLOAT.sub("<f>", line)
        line = _DURATION.sub(r"\1<d>", line)
        out.append(line)
    return out


def render(invocations: list[tuple[str, list[list[str]]]]) -> str:
    blocks = sorted(
        "\n".join([f"== {label}", *normalise(cmds)]) for label, cmds in invocations
    )
    return "\n".join(blocks) + "\n"


def _seed(url: str) -> tuple[Any, fanout.Fanout]:
    app = fanout.testing.embedded_celery("guard-trace")
    client = fanout.Fanout("signup-flow", celery=app, redis_url=url)

    def fetch_users() -> list[dict[str, object]]:
        return [{"id": i, "email": f"user{i}@example.com"} for i in range(N_USERS)]

    def load_user_data(user_id: int) -> dict[str, object]:
        return {"user_id": user_id, "activity": user_id % 7}

    def send_email(user: dict[str, object], data: dict[str, object]) -> str:
        return f"sent to {user['email']}"

    @client.create_function(
        fn_id="weekly-activity-load-users",
        trigger=fanout.TriggerEvent(event="app/weekly-load"),
    )
    async def load_users(ctx: fanout.Context) -> dict[str, int]:
        users = await ctx.step.run("fetch-users", fetch_users)
        events = [
            fanout.Event(name="app/weekly-email-activity.send", data={**u, "user": u})
            for u in users
        ]
        await ctx.step.send_event("fan-out-weekly-emails", events)
        return {"count": len(users)}

    @client.create_function(
        fn_id="weekly-activity-send-email",
        trigger=fanout.TriggerEvent(event="app/weekly-email-activity.send"),
    )
    def send_reminder(ctx: fanout.ContextSync) -> None:
        data = ctx.step.run("load-user-data", load_user_data, ctx.event.data["user"]["id"])
        ctx.step.run("email-user", send_email, ctx.event.data["user"], data)

    return app, client


def test_seed_workflow_redis_trace(recorder: None) -> None:
    app, client = _seed(f"memory://guard-trace-{os.getpid()}-{time.monotonic_ns()}")
    with fanout.testing.worker(app, concurrency=1):
        # The worker registers its functions as it gets ready; once it has, the emit is
        # routed in this process (route_in_sender), every time the same way.
        deadline = time.monotonic() + 30
        while not client.runtime.store.declared.read():
            assert time.monotonic() < deadline, "the worker never registered its functions"
            time.sleep(0.02)
        _begin("emit")
        eid = client.emit("app/weekly-load")
        _end()
        loader = fanout.testing.wait_run(client, fanout.testing.run_of(
            client, eid, "weekly-activity-load-users"))
        assert loader.status == "completed", loader.error
        deadline = time.monotonic() + 60
        while True:
            runs = client.list_runs(fn_id="weekly-activity-send-email", limit=100)
            if len(runs) == N_USERS and all(r.done for r in runs):
                break
            assert time.monotonic() < deadline, "the email runs did not end"
            time.sleep(0.02)
        assert {r.status for r in runs} == {"completed"}
        # Let the last task's postrun signal land before the worker stops.
        deadline = time.monotonic() + 10
        while len(_invocations) < 1 + 1 + 2 * 1 + N_USERS and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)
    got = render(list(_invocations))
    if os.environ.get("FANOUT_WRITE_TRACE"):
        TRACE_FILE.write_text(got)
    assert got == TRACE_FILE.read_text()
