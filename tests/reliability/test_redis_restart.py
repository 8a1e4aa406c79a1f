"""Redis restarts mid-fan-out with AOF on: nothing is lost, workers reconnect.

A private redis-server (``appendonly yes``, ``appendfsync always``) is the state
store.  A loader fans out 300 events; once part of the child runs are done,
redis-server is SIGKILLed and started again on the same port and directory (it
replays its AOF).  Every run must complete; steps may run again (at-least-once)
but none may be missing, and the worker must still be alive.

* ``store``: the broker is another Redis that stays up (default suite).  While the
  store is down, step messages are retried a few seconds later instead of being
  acknowledged as failed, and every queued run keeps a watchdog timer in Redis;
* ``store+broker``: the restarted Redis is the Celery broker too (``FANOUT_SLOW=1``).
  Known to fail now and then, for two reasons outside this test: Celery 5.7 /
  kombu 5.7 can wedge the worker when its Redis broker connection drops
  ("Unrecoverable error: AttributeError('NoneType' object has no attribute
  'hostname')", then the worker stays up but consumes nothing; celery/celery#10205).
  A message the Redis broker loses at the crash only delays its run until the
  run's watchdog timer fires (``test_lost_message.py``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

import fanout
from tests import support
from tests.conftest import start_redis_server
from tests.support import Worker, run_of, wait_for, wait_run

URL_ENV = "FANOUT_TEST_AOF_URL"
BROKER_ENV = "FANOUT_TEST_AOF_BROKER"
N = 300
FN_LOADER = "aof-loader"
FN_CHILD = "aof-child"


def _side() -> redis.Redis:
    return redis.Redis.from_url(os.environ[URL_ENV])


def build(url: str, broker_url: str) -> tuple[Celery, fanout.Fanout]:
    celery_app = Celery("aof")
    celery_app.config_from_object("celeryconfig")
    celery_app.conf.broker_url = broker_url
    fo = fanout.Fanout("aof", celery=celery_app, redis_url=url, recovery_timeout=4,
                       retry_backoff=[0.2, 0.4, 0.6])

    def count(step: str, n: int) -> int:
        return int(_side().hincrby(f"side:{step}", str(n), 1))

    @fo.create_function(fn_id=FN_LOADER, trigger=fanout.TriggerEvent(event="aof/load"))
    def loader(ctx: fanout.ContextSync) -> int:
        events = [fanout.Event(name="aof/child", data={"n": i}) for i in range(N)]
        ctx.step.send_event("fan-out", events)
        return N

    @fo.create_function(fn_id=FN_CHILD, trigger=fanout.TriggerEvent(event="aof/child"))
    def child(ctx: fanout.ContextSync) -> int:
        n = int(ctx.event.data["n"])
        ctx.step.run("a", count, "a", n)
        ctx.step.run("b", count, "b", n)
        return n

    return celery_app, fo


# The worker imports this module with the private server's URL in its environment.
if os.environ.get(URL_ENV):
    app, client = build(os.environ[URL_ENV], os.environ.get(BROKER_ENV) or os.environ[URL_ENV])


def describe_stuck(fo: fanout.Fanout, r: redis.Redis, event_ids: list[str]) -> str:
    """Where the unfinished child runs are: status, pass number, lease and timer."""
    store = fo.runtime.store
    lines, by_state = [], {}
    for eid in event_ids:
        rid = run_of(fo, eid, FN_CHILD)
        f = store.run_fields(rid)
        if f.get("st") == "completed":
            continue
        timer = r.zscore(store.timer_key(rid), rid)
        key = (f.get("st"), f.get("seq"), bool(f.get("t0")), bool(f.get("lease")), timer is not None)
        by_state[key] = by_state.get(key, 0) + 1
        if len(lines) < 5:
            steps = sorted(k for k in f if k.startswith("s:"))
            lines.append(f"  {rid}: st={f.get('st')} seq={f.get('seq')} t0={f.get('t0')} "
                         f"lease={f.get('lease')!r} lu={f.get('lu')} timer={timer} steps={steps}")
    summary = [f"  {n} run(s) with (st, seq, started, leased, timer armed) = {k}"
               for k, n in sorted(by_state.items(), key=str)]
    return "\n".join(summary + lines + [f"  timers {sum(r.zcard(k) for k in store.keys.timer_keys)}"])


class AofRedis:
    def __init__(self) -> None:
        self.proc, self.port, self.dir = start_redis_server(
            "--appendonly", "yes", "--appendfsync", "always"
        )
        self.args = list(self.proc.args)  # type: ignore[arg-type]
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def start_again(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        r = redis.Redis(port=self.port)
        wait_for(lambda: _pings(r), timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def _pings(r: redis.Redis) -> bool:
    try:
        return bool(r.ping())
    except redis.RedisError:  # down, or still loading its AOF
        return False


@pytest.fixture()
def aof_redis() -> Iterator[AofRedis]:
    server = AofRedis()
    yield server
    server.stop()


SLOW = pytest.mark.skipif(os.environ.get("FANOUT_SLOW") != "1", reason="FANOUT_SLOW=1 runs it")


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param("store"),
        pytest.param("store+broker", marks=[
            pytest.mark.slow, SLOW,
            pytest.mark.xfail(strict=False, reason="celery/celery#10205: the worker can wedge "
                              "when its Redis broker restarts (see the module docstring)"),
        ]),
    ],
)
def test_redis_restart_with_aof_loses_nothing(
    mode: str, aof_redis: AofRedis, log_dir: Path
) -> None:
    broker = aof_redis.url if mode == "store+broker" else support.url_for(__name__)
    os.environ[URL_ENV] = aof_redis.url
    try:
        _, fo = build(aof_redis.url, broker)
        r = redis.Redis.from_url(aof_redis.url)
        assert r.config_get("appendfsync")["appendfsync"] == "always"
        if broker != aof_redis.url:
            redis.Redis.from_url(broker).flushdb()
        w = Worker(__name__, env={URL_ENV: aof_redis.url, BROKER_ENV: broker}, log_dir=log_dir)
        try:
            eid = fo.emit("aof/load")
            wait_for(lambda: r.hlen("side:b") >= N // 5, timeout=60)
            before = r.hlen("side:b")
            aof_redis.kill()
            time.sleep(1.5)  # workers see the connection drop
            aof_redis.start_again()
            restarted = time.monotonic()
            loader = wait_run(fo, run_of(fo, eid, FN_LOADER), timeout=60)
            assert loader.status == "completed", loader.error
            assert before < N, "the fan-out finished before Redis went down; nothing tested"

            def all_done() -> bool:
                return r.hlen("side:b") >= N

            ids = loader.steps[0].output
            try:
                wait_for(all_done, timeout=25)
            except AssertionError:
                raise AssertionError(
                    f"runs lost after the Redis restart:\n{describe_stuck(fo, r, ids)}\n"
                    f"worker log tail:\n{w.log()[-3000:]}"
                ) from None
            assert len(ids) == N
            runs = [wait_run(fo, run_of(fo, i, FN_CHILD), timeout=60) for i in ids]
            assert [x.status for x in runs] == ["completed"] * N
            assert sorted(x.output for x in runs) == list(range(N))
            a = {int(k): int(v) for k, v in r.hgetall("side:a").items()}
            b = {int(k): int(v) for k, v in r.hgetall("side:b").items()}
            assert set(a) == set(b) == set(range(N))
            dupes = sum(v - 1 for v in a.values()) + sum(v - 1 for v in b.values())
            assert w.proc.poll() is None, "the worker died with Redis"
            print(f"\nRedis restarted after {before}/{N} runs; all done "
                  f"{time.monotonic() - restarted:.1f}s later; {dupes} step re-execution(s)")
        finally:
            w.stop()
    finally:
        os.environ.pop(URL_ENV, None)
