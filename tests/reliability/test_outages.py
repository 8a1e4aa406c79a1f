"""A 20 s outage of the store's Redis, then of the broker's, with 50 runs sleeping.

Each service runs in a private ``redis-server`` (AOF on) that the test stops with
SIGTERM and starts again, on the same port, 20 s later, while a real ``celery
worker`` (prefork, 2 processes) holds 50 runs that went to sleep just before; their
wake-ups fall due during the outage.  Afterwards:

* nothing is lost: all 50 runs complete, each step's side effect is there;
* the worker stayed quiet: at most 20 lines from fanout's loggers in the worker log
  from the start of the outage to the end of the test (each loop logs one WARNING
  with a traceback when the outage starts, at most one line a minute while it lasts
  and one INFO when it ends).

The test prints what the outage cost the worker (fanout's lines, tracebacks, bytes of
log and the CPU-seconds of the worker's processes during the outage); these are
figures for the report, not assertions.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest
import redis
from celery import Celery

import fanout
from tests import support
from tests.conftest import start_redis_server
from tests.support import Worker, run_of, wait_for, wait_run

STORE_ENV = "FANOUT_TEST_OUTAGE_STORE"
BROKER_ENV = "FANOUT_TEST_OUTAGE_BROKER"
N = 50
OUTAGE_S = 20.0
NAP_S = 3
MAX_FANOUT_LINES = 20


def build(store_url: str, broker_url: str) -> tuple[Celery, fanout.Fanout]:
    celery_app = Celery("outage")
    celery_app.config_from_object("celeryconfig")
    celery_app.conf.broker_url = broker_url
    fo = fanout.Fanout("outage", celery=celery_app, redis_url=store_url, recovery_timeout=4,
                       retry_backoff=[0.2, 0.4, 0.6])

    def side(step: str, n: int) -> int:
        return int(redis.Redis.from_url(store_url).hincrby(f"side:{step}", str(n), 1))

    @fo.create_function(fn_id="nap", trigger=fanout.TriggerEvent(event="outage/nap"))
    def nap(ctx: fanout.ContextSync) -> int:
        n = int(ctx.event.data["n"])
        ctx.step.run("before", side, "before", n)
        ctx.step.sleep("nap", f"{NAP_S}s")
        ctx.step.run("after", side, "after", n)
        return n

    return celery_app, fo


# The worker imports this module with the private servers' URLs in its environment.
if os.environ.get(STORE_ENV):
    app, client = build(os.environ[STORE_ENV], os.environ[BROKER_ENV])


class PrivateRedis:
    """A private redis-server with AOF on, stopped and started again on its port."""

    def __init__(self) -> None:
        self.proc, self.port, self.dir = start_redis_server(
            "--appendonly", "yes", "--appendfsync", "always"
        )
        self.args = list(self.proc.args)  # type: ignore[arg-type]
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)

    def start_again(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        r = redis.Redis(port=self.port)
        wait_for(lambda: _pings(r), timeout=30)


def _pings(r: redis.Redis) -> bool:
    try:
        return bool(r.ping())
    except redis.RedisError:
        return False


@pytest.fixture()
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    yield server
    server.stop()


def cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of the live processes of a process group (/proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid:  # field 5: pgrp
            total += int(fields[11]) + int(fields[12])  # fields 14, 15: utime, stime
    return total / tick


# A line of fanout's loggers in Celery's worker format: "[time: LEVEL/Process] fanout: ..."
_FANOUT_LINE = re.compile(r"^\[[^\]]*\] fanout: ", re.MULTILINE)


@dataclass
class Cost:
    fanout_lines: int
    tracebacks: int
    log_bytes: int
    cpu_s: float

    def show(self, what: str) -> str:
        return (f"{what} outage of {OUTAGE_S:.0f}s with {N} runs sleeping: {self.fanout_lines} "
                f"fanout log lines, {self.tracebacks} tracebacks, {self.log_bytes / 1e6:.3f} MB "
                f"of worker log, worker CPU {self.cpu_s:.2f}s during the outage")


class Stoppable(Protocol):
    def stop(self) -> None: ...

    def start_again(self) -> None: ...


def outage(which: str, store_url: str, broker_url: str, server: Stoppable,
           log_dir: Path) -> tuple[Cost, str]:
    """Run the scenario; the cost, and the worker log written since the outage began."""
    _, fo = build(store_url, broker_url)
    os.environ[STORE_ENV], os.environ[BROKER_ENV] = store_url, broker_url
    w = Worker(__name__, name=f"w-{which}", log_dir=log_dir,
               env={STORE_ENV: store_url, BROKER_ENV: broker_url})
    try:
        ids = [fo.emit("outage/nap", {"n": i}) for i in range(N)]
        rids = [run_of(fo, eid, "nap") for eid in ids]
        store = redis.Redis.from_url(store_url)
        wait_for(lambda: store.hlen("side:before") >= N, timeout=40)

        def asleep() -> bool:
            infos = [fo.get_run(rid) for rid in rids]
            return all(i is not None and i.status == "sleeping" for i in infos)

        # Every run has gone to sleep: their wake-ups fall due in the outage.
        wait_for(asleep, timeout=20, interval=0.2)
        start_bytes = w.log_path.stat().st_size
        cpu0 = cpu_seconds(w.proc.pid)
        server.stop()
        time.sleep(OUTAGE_S)
        cpu = cpu_seconds(w.proc.pid) - cpu0
        server.start_again()
        runs = [wait_run(fo, rid, timeout=60) for rid in rids]
        assert [r.status for r in runs] == ["completed"] * N, [r.error for r in runs]
        assert sorted(r.output for r in runs) == list(range(N))
        assert set(map(int, store.hgetall("side:after"))) == set(range(N))
        assert w.proc.poll() is None, "the worker died in the outage"
        time.sleep(1.0)  # the loops' "recovered" lines
        text = w.log_path.read_bytes()[start_bytes:].decode(errors="replace")
        cost = Cost(len(_FANOUT_LINE.findall(text)),
                    text.count("Traceback (most recent call last)"), len(text.encode()), cpu)
        print("\n" + cost.show(which))
        return cost, text
    finally:
        w.stop()
        os.environ.pop(STORE_ENV, None)
        os.environ.pop(BROKER_ENV, None)


def test_store_outage_loses_nothing_and_stays_quiet(
    private_redis: PrivateRedis, log_dir: Path
) -> None:
    broker = support.url_for(__name__)
    redis.Redis.from_url(broker).flushdb()
    cost, text = outage("store", private_redis.url, broker, private_redis, log_dir)
    lines = "\n".join(m for m in text.splitlines() if _FANOUT_LINE.match(m))
    assert cost.fanout_lines <= MAX_FANOUT_LINES, lines
    assert "the timer scan" in text and "recovered after an outage of" in text, lines


def test_broker_outage_loses_nothing_and_stays_quiet(
    private_redis: PrivateRedis, log_dir: Path
) -> None:
    store = support.url_for(__name__)
    redis.Redis.from_url(store).flushdb()
    cost, text = outage("broker", store, private_redis.url, private_redis, log_dir)
    lines = "\n".join(m for m in text.splitlines() if _FANOUT_LINE.match(m))
    assert cost.fanout_lines <= MAX_FANOUT_LINES, lines
    assert "the timer scan" in text and "recovered after an outage of" in text, lines


class PrivateRabbit:
    """A private RabbitMQ node (never a shared one): its app stopped and started."""

    def __init__(self) -> None:
        from tests.scenarios.test_rabbitmq import _start_private_node

        self.rabbit, self.proc, self.tmp = _start_private_node()
        self.url = self.rabbit.url("/")

    def stop(self) -> None:
        self.rabbit.ctl("stop_app")

    def start_again(self) -> None:
        self.rabbit.ctl("start_app")
        from tests.scenarios.test_rabbitmq import _reachable

        wait_for(lambda: _reachable(self.rabbit.host, self.rabbit.port), timeout=60)

    def close(self) -> None:
        import shutil

        subprocess.run(["rabbitmqctl", "-n", str(self.rabbit.node), "stop"],
                       capture_output=True, timeout=60)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.mark.slow
def test_rabbitmq_broker_outage_loses_nothing_and_stays_quiet(log_dir: Path) -> None:
    """The same outage with RabbitMQ as the broker (a private node, started for this
    test: over a minute in all, so it runs with FANOUT_SLOW=1)."""
    node = PrivateRabbit()
    try:
        store = support.url_for(__name__)
        redis.Redis.from_url(store).flushdb()
        cost, text = outage("rabbitmq broker", store, node.url, node, log_dir)
        lines = "\n".join(m for m in text.splitlines() if _FANOUT_LINE.match(m))
        assert cost.fanout_lines <= MAX_FANOUT_LINES, lines
        assert "the timer scan" in text and "recovered after an outage of" in text, lines
    finally:
        node.close()
