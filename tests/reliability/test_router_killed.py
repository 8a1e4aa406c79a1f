"""``kill -9`` of the worker that is routing a send: every event still starts its run.

Found by the crash benchmark (``python -m bench --workloads C``): a fan-out of 5,000
events once lost exactly 500 runs, one router chunk.  A send of more than 500 event
ids is split by the router into chunks of 500, each published as its own router
message; a worker killed while publishing the chunks lost the ones it had not
published yet.  Likewise a router message taken by a worker that dies on receipt
left the events stored but unrouted.  With a Redis broker the original message only
comes back after the transport's ``visibility_timeout`` (1 hour by default).  Now
every router batch is recorded with a watchdog when it is published, and a split
send stays recorded until all its chunks are out.

Both windows are hit on purpose here with a test-only hook, and every run must
complete within ``DEADLINE`` seconds after a new worker starts.
"""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

import fanout
from tests.support import Worker, make_app, redis_for, run_of, wait_for

# route_in_sender=False: these sends must go through the router under test.
app, client = make_app(__name__, recovery_timeout=4, route_in_sender=False)
DEADLINE = 45  # the router batch's watchdog is 5 x recovery_timeout = 20 s after the send
PLAN, DONE = "router-kill:plan", "router-kill:done"


def install_router_kill_hook() -> None:
    """Kill the whole worker at the planned router point, once.

    ``receive``: as ``fanout.route`` starts on a batch holding the marked event id.
    ``split:K``: as the router publishes the K-th chunk of a split send.
    """
    from fanout._celery import publisher as _publisher
    from fanout._celery import routing as _routing

    orig_route = _routing.route
    orig_publish = _publisher.Publisher.route
    chunks = {"n": 0}

    def die(point: str) -> None:
        if redis_for(__name__).hsetnx(DONE, point, os.getpid()):
            os.killpg(os.getpgrp(), signal.SIGKILL)

    def route(rt: Any, event_ids: Any, **kw: Any) -> Any:
        plan = redis_for(__name__).hgetall(PLAN)
        marked = plan.get(b"receive")
        if marked is not None and marked.decode() in event_ids:
            die("receive")
        return orig_route(rt, event_ids, **kw)

    def publish_route(self: Any, ids: list[str], **kw: Any) -> Any:
        plan = redis_for(__name__).hget(PLAN, "split")
        chunk = "." in str(kw.get("batch_id") or "")  # the router publishing a chunk
        if plan is not None and kw.get("producer") is not None and chunk:
            chunks["n"] += 1
            if chunks["n"] == int(plan):
                die("split")
        return orig_publish(self, ids, **kw)

    _routing.route = route  # type: ignore[assignment]
    _publisher.Publisher.route = publish_route  # type: ignore[method-assign]


if os.environ.get("FANOUT_TEST_ROUTER_KILL") == "1":
    install_router_kill_hook()


@client.create_function(fn_id="noted", trigger=fanout.TriggerEvent(event="rk/*"))
def noted(ctx: fanout.ContextSync) -> int:
    return int(ctx.event.data["i"])


def _events(n: int, name: str) -> list[fanout.Event]:
    tag = uuid.uuid4().hex[:8]
    return [fanout.Event(name=name, data={"i": i}, id=f"{tag}-{i}") for i in range(n)]


def _completed(ids: list[str]) -> int:
    runs = client.runtime.store.many_run_fields([run_of(client, e, "noted") for e in ids])
    return sum(1 for f in runs if f.get("st") == "completed")


@pytest.mark.parametrize(
    ("point", "n"),
    [("receive", 10), ("split", 1200)],
    ids=["killed-on-receipt", "killed-while-splitting"],
)
def test_router_killed_mid_send_loses_no_event(
    point: str, n: int, clean_db: redis.Redis, log_dir: Path
) -> None:
    env = {"FANOUT_TEST_ROUTER_KILL": "1"}
    evs = _events(n, f"rk/{point}")
    ids = [e.id or "" for e in evs]
    clean_db.delete(PLAN, DONE)
    clean_db.hset(PLAN, point, ids[0] if point == "receive" else "2")
    victim = Worker(__name__, name=f"victim-{point}", env=env, log_dir=log_dir)
    try:
        client.send_sync(evs)
        victim.proc.wait(timeout=30)
    finally:
        victim.kill()
        victim.stop()
    assert clean_db.hget(DONE, point) is not None, "the router was not killed at the point"
    rescuer = Worker(__name__, name=f"rescuer-{point}", env=env, log_dir=log_dir)
    try:
        wait_for(lambda: _completed(ids) == n, timeout=DEADLINE, interval=0.25)
    except AssertionError:
        pytest.fail(f"{point}: {_completed(ids)}/{n} runs completed {DEADLINE}s after a new "
                    "worker started; the rest of the send was never routed")
    finally:
        rescuer.stop()
