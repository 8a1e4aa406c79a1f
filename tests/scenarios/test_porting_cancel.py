"""A Cancel event that matches while a handler with no steps is running ends the run
``cancelled``; the handler's code still runs to its end."""

from __future__ import annotations

import asyncio
import time

import pytest

import fanout
from tests.support import make_app, redis_for, run_of, wait_for, wait_run

app, client = make_app(__name__)


def _started(ctx: fanout.Context | fanout.ContextSync) -> None:
    redis_for(__name__).set(f"started:{ctx.event.data['id']}", 1)


def _finished(ctx: fanout.Context | fanout.ContextSync) -> None:
    redis_for(__name__).set(f"finished:{ctx.event.data['id']}", 1)


def _released(ctx: fanout.Context | fanout.ContextSync) -> bool:
    return bool(redis_for(__name__).get(f"release:{ctx.event.data['id']}"))


@client.create_function(
    fn_id="plain", trigger=fanout.TriggerEvent(event="t/plain"),
    cancel=[fanout.Cancel(event="t/stop", match="data.id")],
)
def plain(ctx: fanout.ContextSync) -> str:
    _started(ctx)
    deadline = time.monotonic() + 30
    while not _released(ctx) and time.monotonic() < deadline:
        time.sleep(0.05)
    _finished(ctx)
    return "done"


@client.create_function(
    fn_id="plain-async", trigger=fanout.TriggerEvent(event="t/plain-async"),
    cancel=[fanout.Cancel(event="t/stop", match="data.id")],
)
async def plain_async(ctx: fanout.Context) -> str:
    _started(ctx)
    deadline = time.monotonic() + 30
    while not _released(ctx) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    _finished(ctx)
    return "done"


@pytest.mark.parametrize("fn_id", ["plain", "plain-async"])
def test_cancel_while_a_stepless_handler_runs(worker: object, fn_id: str) -> None:
    r = redis_for(__name__)
    key = f"{fn_id}-1"
    eid = client.emit(f"t/{fn_id}", {"id": key})
    rid = run_of(client, eid, fn_id)
    wait_for(lambda: r.get(f"started:{key}"))
    client.emit("t/stop", {"id": key})
    wait_for(lambda: r.hget(f"fanout:run:{{{rid}}}", "cx"))  # the cancel reached the run
    r.set(f"release:{key}", 1)
    run = wait_run(client, rid)
    assert run.status == "cancelled"
    assert r.get(f"finished:{key}")  # the code ran to its end


def test_a_run_with_no_cancel_completes(worker: object) -> None:
    r = redis_for(__name__)
    eid = client.emit("t/plain", {"id": "free"})
    r.set("release:free", 1)
    run = wait_run(client, run_of(client, eid, "plain"))
    assert run.status == "completed" and run.output == "done"
