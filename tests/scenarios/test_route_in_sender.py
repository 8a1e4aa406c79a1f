"""Routing in the sender (``Fanout(route_in_sender=True)``, the default), with real
workers: a process that declares every function the workers declare starts runs
without a ``fanout.route`` task; one that lacks a function publishes to the router;
a sender killed between storing its events and ending the route record has them
routed once by the route timer; waits and cancels work from sender-routed events.

With ``FANOUT_TEST_EXTRA=1`` the module declares one more function (a worker that
knows a function the test process does not)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

import fanout
from fanout._celery.routing import SenderRouting
from tests.support import ROOT, Worker, make_app, run_of, url_for, wait_for, wait_run

# recovery_timeout=2: a route record left by a killed sender is re-offered after
# 5 x 2 = 10 s (the store's watchdog).
app, client = make_app(__name__, recovery_timeout=2)
COUNTS = "tests:direct:count"


def _count(name: str) -> int:
    r = redis.Redis.from_url(url_for(__name__))
    return int(r.hincrby(COUNTS, name, 1))


@client.create_function(fn_id="one", trigger=fanout.TriggerEvent(event="direct/one"))
def one(ctx: fanout.ContextSync) -> dict[str, object]:
    ctx.step.run("count", lambda: _count(f"one:{ctx.event.id}"))
    return dict(ctx.event.data)


@client.create_function(fn_id="waiter", trigger=fanout.TriggerEvent(event="direct/wait"))
def waiter(ctx: fanout.ContextSync) -> object:
    ev = ctx.step.wait_for_event("w", event="direct/answer", timeout="60s", match="data.k")
    return None if ev is None else ev.data


@client.create_function(fn_id="long", trigger=fanout.TriggerEvent(event="direct/long"),
                        cancel=[fanout.Cancel(event="direct/stop", match="data.k")])
def long(ctx: fanout.ContextSync) -> str:
    ctx.step.sleep("nap", "60s")
    return "slept"


if os.environ.get("FANOUT_TEST_EXTRA") == "1":
    @client.create_function(fn_id="extra", trigger=fanout.TriggerEvent(event="direct/one"))
    def extra(ctx: fanout.ContextSync) -> str:
        return "extra"


def _sender() -> SenderRouting:
    sender = client._rt.publisher.sender
    assert isinstance(sender, SenderRouting)
    return sender


def _registered(r: redis.Redis) -> set[str]:
    return {k.decode() for k in r.hkeys("fanout:declared")}


def _wait_registered(r: redis.Redis) -> None:
    mine = _sender().entries()
    wait_for(lambda: _registered(r) == mine)


def _tasks_since(w: Worker, mark: int, name: str) -> int:
    """How many ``name`` tasks the worker received since ``mark`` (its log's length)."""
    return sum(1 for line in w.log()[mark:].splitlines()
               if f"Task {name}[" in line and line.endswith("received"))


def test_option_is_checked() -> None:
    with pytest.raises(fanout.ConfigError, match="route_in_sender must be True or False"):
        fanout.Fanout("tests", celery=app, redis_url=url_for(__name__),
                      route_in_sender="yes")  # type: ignore[arg-type]


def test_no_worker_yet_goes_to_the_router(clean_db: redis.Redis,
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="fanout")
    clean_db.delete("fanout:declared")
    client.emit("direct/one", {"n": 0})
    assert "no live worker has registered its functions yet" in caplog.text
    assert clean_db.llen("fanout.events") == 1  # the router message, waiting
    clean_db.flushdb()  # no worker will see it, nor its route record


def test_send_routes_in_the_sender(worker: Worker, clean_db: redis.Redis,
                                   caplog: pytest.LogCaptureFixture) -> None:
    _wait_registered(clean_db)
    caplog.set_level(logging.DEBUG, logger="fanout")
    mark = len(worker.log())
    eid = client.emit("direct/one", {"n": 1})
    assert "routed 1 event(s) in the sender" in caplog.text
    run = wait_run(client, run_of(client, eid, "one"))
    assert run.status == "completed" and run.output == {"n": 1}
    wait_for(lambda: _tasks_since(worker, mark, "fanout.step") >= 1)
    assert _tasks_since(worker, mark, "fanout.route") == 0
    # The route record was ended: no route timer is left behind.
    assert not list(clean_db.scan_iter("fanout:route:*"))


def test_duplicate_event_id_starts_one_run(worker: Worker, clean_db: redis.Redis) -> None:
    _wait_registered(clean_db)
    mark = len(worker.log())
    client.send_sync(fanout.Event(name="direct/one", data={"n": "first"}, id="dup-1"))
    client.send_sync(fanout.Event(name="direct/one", data={"n": "second"}, id="dup-1"))
    run = wait_run(client, run_of(client, "dup-1", "one"))
    assert run.output == {"n": "first"}  # the first payload wins
    assert [r.run_id for r in client.list_runs(event_id="dup-1")] == [run.run_id]
    assert int(clean_db.hget(COUNTS, "one:dup-1") or 0) == 1
    assert _tasks_since(worker, mark, "fanout.route") == 0


def test_wait_resolved_by_a_sender_routed_event(worker: Worker, clean_db: redis.Redis) -> None:
    _wait_registered(clean_db)
    mark = len(worker.log())
    eid = client.emit("direct/wait", {"k": "a1"})
    rid = run_of(client, eid, "waiter")
    wait_for(lambda: (info := client.get_run(rid)) is not None and info.status == "waiting")
    client.emit("direct/answer", {"k": "other"})
    client.emit("direct/answer", {"k": "a1", "v": 5})
    run = wait_run(client, rid)
    assert run.status == "completed" and run.output == {"k": "a1", "v": 5}
    assert _tasks_since(worker, mark, "fanout.route") == 0


def test_cancel_by_a_sender_routed_event(worker: Worker, clean_db: redis.Redis) -> None:
    _wait_registered(clean_db)
    mark = len(worker.log())
    eid = client.emit("direct/long", {"k": "c1"})
    rid = run_of(client, eid, "long")
    wait_for(lambda: (info := client.get_run(rid)) is not None and info.status == "sleeping")
    client.emit("direct/stop", {"k": "c1"})
    assert wait_run(client, rid).status == "cancelled"
    assert _tasks_since(worker, mark, "fanout.route") == 0


KILLED_SENDER = """
import os, signal, sys
import fanout
from fanout._celery import routing
from fanout._redis.store import Store
import tests.scenarios.test_route_in_sender as mod

where = sys.argv[1]
def die(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)
if where == "before-routing":
    routing.route_events = die
else:
    Store.end_route = die
mod.client.send_sync([fanout.Event(name="direct/one", data={"n": i}, id=f"{where}-{i}")
                      for i in range(3)])
print("not killed")
"""


@pytest.mark.parametrize("where", ["before-routing", "before-ending"])
def test_sender_killed_midway_routes_once(worker: Worker, clean_db: redis.Redis,
                                          where: str) -> None:
    _wait_registered(clean_db)
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_SENDER, where], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60,
    )
    assert proc.returncode == -9, proc.stdout + proc.stderr
    assert list(clean_db.scan_iter("fanout:route:*"))  # the record the timer recovers from
    for i in range(3):
        run = wait_run(client, run_of(client, f"{where}-{i}", "one"))
        assert run.status == "completed"
    wait_for(lambda: not list(clean_db.scan_iter("fanout:route:*")))
    for i in range(3):
        assert len(client.list_runs(event_id=f"{where}-{i}")) == 1
        assert int(clean_db.hget(COUNTS, f"one:{where}-{i}") or 0) == 1


def test_sender_lacking_a_function_uses_the_router(
    worker: Worker, clean_db: redis.Redis, log_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Last in the module: the module's worker makes way for one that declares a
    # function this process does not.
    worker.stop()
    clean_db.delete("fanout:declared")
    extra = Worker(__name__, name="w2", env={"FANOUT_TEST_EXTRA": "1"}, log_dir=log_dir)
    try:
        wait_for(lambda: any(k.startswith("tests:extra ") for k in _registered(clean_db)))
        caplog.set_level(logging.DEBUG, logger="fanout")
        mark = len(extra.log())
        first = client.emit("direct/one", {"n": 2})
        second = client.emit("direct/one", {"n": 3})
        assert "this process does not declare tests:extra" in caplog.text
        told = [r for r in caplog.records
                if r.levelno == logging.INFO and "Import the modules" in r.getMessage()]
        assert len(told) == 1 and "tests:extra" in told[0].getMessage()
        for eid in (first, second):
            assert wait_run(client, run_of(client, eid, "one")).status == "completed"
            assert wait_run(client, run_of(client, eid, "extra")).output == "extra"
        assert _tasks_since(extra, mark, "fanout.route") == 2
    finally:
        extra.stop()
