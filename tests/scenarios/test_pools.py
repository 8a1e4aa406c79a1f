"""The seed workflow on each worker pool Celery ships: prefork, threads, solo,
gevent and eventlet, each a real ``celery worker`` subprocess.

For each pool: one loader (an async handler) fans out one event per user with
``ctx.step.send_event``, each event starts a run of the email function; a run
that sleeps wakes on the timer thread; a step longer than its lease keeps the
run (the lease is renewed) and runs once; and the worker stops cleanly on
SIGTERM, with no traceback in its log.
"""

from __future__ import annotations

import asyncio
import importlib.util
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis

import fanout
from tests.support import Worker, make_app, redis_for, run_of, wait_for, wait_run

# recovery_timeout=2: leases last 1s and are renewed every third of that, so the
# 2.5s step below outlives its lease three times over unless renewal works.
app, client = make_app(__name__, app_id="pools", recovery_timeout=2)
N_USERS = 40
LONG_STEP_S = 2.5
LEASE_S = 1.0  # recovery_timeout / 2

POOLS = ["prefork", "threads", "solo", "gevent", "eventlet"]
NEEDS = {"gevent": "gevent", "eventlet": "eventlet"}


def _pool_param(pool: str) -> object:
    package = NEEDS.get(pool)
    if package is not None and importlib.util.find_spec(package) is None:
        return pytest.param(pool, marks=pytest.mark.skip(
            reason=f"the {pool} pool needs the {package!r} package: pip install {package}"))
    return pytest.param(pool)


async def fetch_users() -> list[dict[str, object]]:
    await asyncio.sleep(0.05)  # the event loop really waits, under each pool
    redis_for(__name__).incr("side:fetch")
    return [{"id": i, "email": f"user{i}@example.com"} for i in range(N_USERS)]


def send_email(user: dict[str, object]) -> str:
    redis_for(__name__).hincrby("side:emails", str(user["id"]), 1)
    return f"sent to {user['email']}"


@client.create_function(
    fn_id="load-users", trigger=fanout.TriggerEvent(event="app/weekly-load"),
)
async def load_users(ctx: fanout.Context) -> dict[str, int]:
    users = await ctx.step.run("fetch-users", fetch_users)
    events = [fanout.Event(name="app/email.send", data={"user": u}) for u in users]
    await ctx.step.send_event("fan-out-emails", events)
    return {"count": len(users)}


@client.create_function(fn_id="send-email", trigger=fanout.TriggerEvent(event="app/email.send"))
def send_reminder(ctx: fanout.ContextSync) -> str:
    return ctx.step.run("email-user", send_email, ctx.event.data["user"])


@client.create_function(fn_id="nap", trigger=fanout.TriggerEvent(event="app/nap"))
def nap(ctx: fanout.ContextSync) -> str:
    ctx.step.sleep("rest", "500ms")
    return ctx.step.run("after", lambda: "awake")


def long_work() -> str:
    redis_for(__name__).incr("side:long")
    time.sleep(LONG_STEP_S)
    return "done"


@client.create_function(fn_id="long", trigger=fanout.TriggerEvent(event="app/long"))
def long(ctx: fanout.ContextSync) -> str:
    return ctx.step.run("work", long_work)


def meet(me: str, other: str) -> str:
    """Arrive, then wait (up to 30s) for the other side: only steps that really run
    at the same time both return."""
    r = redis_for(__name__)
    r.set(f"side:here:{me}", 1)
    deadline = time.monotonic() + 30
    while not r.exists(f"side:here:{other}"):
        if time.monotonic() > deadline:
            raise fanout.NonRetriableError(f"{other} never arrived")
        time.sleep(0.05)
    return "met"


@client.create_function(fn_id="meet", trigger=fanout.TriggerEvent(event="app/meet"), retries=0)
def meet_fn(ctx: fanout.ContextSync) -> str:
    return ctx.step.run("meet", meet, ctx.event.data["me"], ctx.event.data["other"])


def burn() -> str:
    """Compute for 3s without yielding (no I/O, no sleep) the first time it runs."""
    if redis_for(__name__).incr("side:burn") == 1:
        deadline = time.monotonic() + 3 * LEASE_S
        n = 0
        while time.monotonic() < deadline:
            n += 1
    return "burnt"


@client.create_function(fn_id="burn", trigger=fanout.TriggerEvent(event="app/burn"))
def burn_fn(ctx: fanout.ContextSync) -> str:
    return ctx.step.run("burn", burn)


def _completed_emails() -> int:
    runs = client.list_runs(fn_id="send-email", limit=1000)
    return sum(1 for x in runs if x.status == "completed")


@pytest.fixture
def db() -> redis.Redis:
    r = redis_for(__name__)
    r.flushdb()
    return r


def stop_cleanly(w: Worker) -> int:
    """SIGTERM (a warm shutdown), then wait; returns the exit code."""
    assert w.proc.poll() is None, f"worker died early:\n{w.log()[-3000:]}"
    w.proc.send_signal(signal.SIGTERM)
    try:
        return w.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        w.kill()
        raise AssertionError(f"worker did not stop within 30s:\n{w.log()[-3000:]}") from None
    finally:
        w.stop()


PROBLEMS = ("Traceback", "BlockingSwitchOutError", "LoopExit", "Error in atexit", "CRITICAL")


@pytest.mark.parametrize("pool", [_pool_param(p) for p in POOLS])
def test_seed_workflow_on_pool(pool: str, db: redis.Redis, log_dir: Path) -> None:
    concurrency = 1 if pool == "solo" else 4
    w = Worker(__name__, pool=pool, concurrency=concurrency, name=f"pool-{pool}", log_dir=log_dir)
    try:
        # A step longer than its lease: renewal keeps it, so it runs exactly once.
        long_eid = client.emit("app/long")
        # The timer thread wakes a sleeping run.
        nap_eid = client.emit("app/nap")
        # The seed workflow: an async loader fans out one event per user.
        eid = client.emit("app/weekly-load")
        loader = wait_run(client, run_of(client, eid, "load-users"), timeout=60)
        assert loader.status == "completed", loader.error
        assert loader.output == {"count": N_USERS}
        sent = loader.steps[1].output
        assert len(set(sent)) == N_USERS
        wait_for(lambda: _completed_emails() == N_USERS, timeout=120)
        emails = {int(k): int(v) for k, v in db.hgetall("side:emails").items()}
        assert emails == {i: 1 for i in range(N_USERS)}
        assert int(db.get("side:fetch") or 0) == 1

        napped = wait_run(client, run_of(client, nap_eid, "nap"), timeout=60)
        assert napped.status == "completed", napped.error
        assert napped.output == "awake"

        if concurrency > 1:  # two steps at once, each waiting for the other
            met = [client.emit("app/meet", {"me": a, "other": b}) for a, b in (("a", "b"), ("b", "a"))]
            for e in met:
                run = wait_run(client, run_of(client, e, "meet"), timeout=60)
                assert run.status == "completed", run.error

        longrun = wait_run(client, run_of(client, long_eid, "long"), timeout=60)
        assert longrun.status == "completed", longrun.error
        assert int(db.get("side:long") or 0) == 1, "the long step ran again: its lease was lost"
        assert "taken over" not in w.log()
    except BaseException:
        w.kill()
        w.stop()
        print(f"\n--- worker log {w.log_path} (tail) ---\n{w.log()[-4000:]}")
        raise
    code = stop_cleanly(w)
    text = w.log()
    found = [p for p in PROBLEMS if p in text]
    assert not found, f"the {pool} worker logged {found} on shutdown:\n{text[-4000:]}"
    assert code == 0, f"the {pool} worker exited with {code}:\n{text[-3000:]}"


@pytest.mark.parametrize("pool", [_pool_param(p) for p in ("prefork", "gevent")])
def test_step_that_never_yields(pool: str, db: redis.Redis, log_dir: Path) -> None:
    """A step that computes for three leases without yielding: on prefork its lease
    is renewed beside it and it runs once; on gevent the renewal cannot run, the
    lease expires, and a second worker takes the run over and runs the step again."""
    w = Worker(__name__, pool=pool, concurrency=2, name=f"burn-{pool}", log_dir=log_dir)
    # The second worker takes only the router queue, where wake-ups and takeovers go,
    # so the first pass (default queue) runs on the pool under test.
    other = Worker(__name__, name="rescuer", concurrency=1, log_dir=log_dir,
                   args=("-Q", "fanout.events"))
    try:
        run = wait_run(client, run_of(client, client.emit("app/burn"), "burn"), timeout=60)
        assert run.status == "completed", run.error
        assert run.output == "burnt"
        ran = int(db.get("side:burn") or 0)
        if pool == "gevent":
            assert ran == 2, "the step kept its lease although it never yielded"
            assert "fanout.step" in other.log(), "the second worker never ran a pass"
        else:
            assert ran == 1, f"the step ran {ran} times: its lease was lost"
            assert "taken over" not in w.log()
    finally:
        w.stop()
        other.stop()
