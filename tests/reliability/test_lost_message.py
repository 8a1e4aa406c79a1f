"""A step message the broker loses must not strand its run.

A Redis broker can lose a message when redis-server dies: BRPOP hands it to the
worker and the worker's separate "unacked" bookkeeping never reaches Redis (seen in
``test_redis_restart.py``).  A run whose only reminder is that message would then
never resume (fanout once dropped a run's timer right after enqueueing its next
pass).  Here a test-only hook drops one chosen ``fanout.step`` message per run (the
first one, published by the router or by a sender that routes its event itself, or the one after pass 1 or 2), as if the broker had lost it,
and every run must still complete.

A queued run keeps a watchdog timer (five times the recovery timeout, then with
backoff) until a pass begins, so a lost message delays the run but never strands it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import fanout
from tests.support import Worker, make_app, redis_for, run_of, wait_run

app, client = make_app(__name__, recovery_timeout=4)
PLAN = "drop:plan"
DONE = "drop:done"


def install_drop_hook() -> Any:
    """Drop the publish of the planned (run, seq) ``fanout.step`` message, once.

    Everything else ``Runtime.enqueue`` does still happens; only the message is gone.
    """
    from fanout._celery.publisher import Publisher

    orig = Publisher.send

    def send(self: Any, name: str, args: Any, **options: Any) -> Any:
        if name == "fanout.step" and len(args) == 3 and args[2] is not None:
            r = redis_for(__name__)
            _fn, run_id, seq = args
            want = r.hget(PLAN, run_id)
            if want is not None and int(want) == seq and r.hsetnx(DONE, run_id, str(seq)):
                return None  # the broker "lost" this message
        return orig(self, name, args, **options)

    Publisher.send = send  # type: ignore[method-assign]
    return orig


if os.environ.get("FANOUT_TEST_DROP_HOOK") == "1":
    install_drop_hook()


def noop(k: int) -> int:
    return k


# pass_budget=0: the test is about the message between two passes, which a pass that
# goes on to the next step in its task does not send.
@client.create_function(fn_id="three", trigger=fanout.TriggerEvent(event="lost/three"),
                        pass_budget=0)
def three(ctx: fanout.ContextSync) -> list[int]:
    return [ctx.step.run(f"s{k}", noop, k) for k in (1, 2, 3)]


@pytest.fixture()
def dropping_worker(clean_db: redis.Redis, log_dir: Path) -> Iterator[Worker]:
    # A run's first message is published by the sender when it routes the event itself
    # (route_in_sender), so this process drops its planned messages too.
    from fanout._celery.publisher import Publisher

    orig = install_drop_hook()
    w = Worker(__name__, env={"FANOUT_TEST_DROP_HOOK": "1"}, log_dir=log_dir)
    try:
        yield w
    finally:
        w.stop()
        Publisher.send = orig  # type: ignore[method-assign]


def test_a_lost_step_message_does_not_strand_the_run(dropping_worker: Worker) -> None:
    r = redis_for(__name__)
    rids = {}
    for seq in (0, 1, 2):
        eid = f"lost-{seq}-{uuid.uuid4().hex[:8]}"
        rid = run_of(client, eid, "three")
        r.hset(PLAN, rid, seq)
        client.send_sync(fanout.Event(name="lost/three", id=eid))
        rids[seq] = rid
    for seq, rid in rids.items():
        # The run's watchdog timer (5 x recovery_timeout = 20 s here) offers it again.
        run = wait_run(client, rid, timeout=90)
        assert r.hget(DONE, rid) == str(seq).encode(), f"message {seq} was not dropped"
        assert run.status == "completed", (seq, run.error)
        assert run.output == [1, 2, 3]
