"""A fan-out whose backlog outlasts the watchdog: late first passes are not offered
twice, lost ones still are.

Every queued run keeps a watchdog timer (5 x recovery timeout: 5 s here) until its
first pass begins.  The backlog below takes well over 5 s to drain with two worker
processes, so the timer of most runs fires while their message still waits in the
broker queue.  The timer scan must defer them (it asks the broker how many messages
wait, and offers a run again only once the queue was seen empty after the run was
created, plus a grace period), not publish a second first pass per run.

Each run takes two passes (the step, then the end), so on RabbitMQ, which has no
priorities, the second pass waits behind the backlog too.  A test-only hook in the
worker counts the passes the timer scan publishes again for queued runs
(``REOFFERS``).  The second test deletes one run's first-pass
message from the broker's Redis list while the run is queued, as a broker restart
would: that run, and only that one, must be offered again and complete.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import fanout
from tests.support import Worker, make_app, redis_for, run_of, wait_for, wait_run

app, client = make_app(__name__, recovery_timeout=1)
REOFFERS = "backlog:reoffers"
N = 240


def install_count_hook() -> None:
    """Count the passes the timer scan offers again to queued runs."""
    from fanout._celery.publisher import Publisher

    orig = Publisher.enqueue

    def enqueue(self: Any, fn_key: str, run_id: str, seq: Any, **kw: Any) -> Any:
        if kw.get("queue") is not None and seq is None and kw.get("branch") is None:
            r = redis_for(__name__)
            # A queued run (not a lease takeover): its pass is offered a second time.
            if r.hget(f"fanout:run:{{{run_id}}}", "st") == b"queued":
                r.hincrby(REOFFERS, run_id, 1)
        return orig(self, fn_key, run_id, seq, **kw)

    Publisher.enqueue = enqueue  # type: ignore[method-assign]


if os.environ.get("FANOUT_TEST_COUNT_REOFFERS") == "1":
    install_count_hook()


@client.create_function(fn_id="slow", trigger=fanout.TriggerEvent(event="backlog/slow"))
def slow(ctx: fanout.ContextSync) -> int:
    import time

    def work() -> int:
        time.sleep(0.05)
        return 1

    return ctx.step.run("work", work)


@pytest.fixture()
def counting_worker(clean_db: redis.Redis, log_dir: Path) -> Iterator[Worker]:
    clean_db.delete(REOFFERS)
    w = Worker(__name__, env={"FANOUT_TEST_COUNT_REOFFERS": "1"}, log_dir=log_dir)
    yield w
    w.stop()


def on_redis_broker() -> bool:
    return not os.environ.get("FANOUT_TEST_BROKER_URL", "").startswith("amqp")


def send_backlog(tag: str) -> list[str]:
    events = [fanout.Event(name="backlog/slow", id=f"{tag}-{k}") for k in range(N)]
    client.send_sync(events)
    return [run_of(client, ev.id or "", "slow") for ev in events]


def broker_waiting(r: redis.Redis) -> int:
    """Messages left in the Redis broker's queues (every priority list)."""
    return sum(int(r.llen(k)) for k in r.scan_iter(match="celery*") if r.type(k) == b"list") \
        + sum(int(r.llen(k)) for k in r.scan_iter(match="fanout.events*")
              if r.type(k) == b"list")


def test_a_backlog_longer_than_the_watchdog_offers_no_first_pass_twice(
    counting_worker: Worker,
) -> None:
    r = redis_for(__name__)
    rids = send_backlog(f"late-{uuid.uuid4().hex[:6]}")
    for rid in rids:
        run = wait_run(client, rid, timeout=240)
        assert run.status == "completed", (rid, run.error)
        assert run.output == 1
    reoffers = r.hgetall(REOFFERS)
    assert reoffers == {}, f"{len(reoffers)} pass(es) offered twice"
    # The backlog did outlast the watchdog: the scan deferred runs whose timer fired.
    assert "not offered again" in counting_worker.log(), "the backlog drained first"
    if on_redis_broker():
        assert broker_waiting(r) == 0


def _first_pass_of(r: redis.Redis, run_id: str) -> tuple[bytes, bytes] | None:
    """(list key, raw message) of the run's first pass waiting in the Redis broker."""
    for key in r.scan_iter(match="celery*"):
        if r.type(key) != b"list":
            continue
        for raw in r.lrange(key, 0, -1):
            msg = json.loads(raw)
            args = json.loads(base64.b64decode(msg["body"]))[0]
            if len(args) >= 3 and args[1] == run_id and args[2] == 0:
                return key, raw
    return None


@pytest.mark.skipif(not on_redis_broker(), reason="deletes a message from a Redis list")
def test_a_first_pass_the_broker_loses_is_still_offered_again(counting_worker: Worker) -> None:
    r = redis_for(__name__)
    rids = send_backlog(f"lost-{uuid.uuid4().hex[:6]}")
    victim = rids[-1]  # the last of the backlog: its message waits longest
    key, raw = wait_for(lambda: _first_pass_of(r, victim), timeout=60, interval=0.2)
    assert r.lrem(key, 1, raw) == 1, "the message left the queue before it could be deleted"
    for rid in rids:
        run = wait_run(client, rid, timeout=240)
        assert run.status == "completed", (rid, run.error)
    reoffers = {k.decode(): int(v) for k, v in r.hgetall(REOFFERS).items()}
    assert reoffers.get(victim, 0) >= 1, reoffers
    assert set(reoffers) == {victim}, f"runs offered twice besides the lost one: {reoffers}"


def test_the_backlog_with_rabbitmq_as_broker(tmp_path: Path) -> None:
    """The first test again with RabbitMQ as the broker (a private vhost), in a pytest
    subprocess, as ``tests/scenarios/test_rabbitmq.py`` runs the foundation scenarios."""
    if not on_redis_broker():
        pytest.skip("already running with RabbitMQ as the broker")
    import subprocess
    import sys
    from urllib.parse import urlsplit

    from tests.scenarios.test_rabbitmq import DEFAULT_URL, Rabbit, _reachable
    from tests.support import ROOT

    parts = urlsplit(os.environ.get("FANOUT_TEST_AMQP_URL", DEFAULT_URL))
    host, port = parts.hostname or "127.0.0.1", parts.port or 5672
    if not _reachable(host, port):
        pytest.skip(f"RabbitMQ is not reachable on {host}:{port}")
    rabbit = Rabbit(host, port, None, parts.username or "guest", parts.password or "guest")
    try:
        rabbit.ctl("list_vhosts")
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"RabbitMQ is reachable but rabbitmqctl cannot manage it: {exc}")
    vhost = f"fanout-test-{uuid.uuid4().hex[:12]}"
    rabbit.ctl("add_vhost", vhost)
    rabbit.ctl("set_permissions", "-p", vhost, rabbit.user, ".*", ".*", ".*")
    try:
        env = {k: v for k, v in os.environ.items() if k != "FANOUT_TEST_REDIS_BASE"}
        env["FANOUT_TEST_BROKER_URL"] = rabbit.url(vhost)
        env["PYTHONPATH"] = str(ROOT)
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
             f"{__file__}::test_a_backlog_longer_than_the_watchdog_offers_no_first_pass_twice"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
        )
        tail = (proc.stdout + proc.stderr)[-6000:]
        assert proc.returncode == 0, f"the backlog test failed with RabbitMQ:\n{tail}"
        assert "1 passed" in proc.stdout.strip().splitlines()[-1], tail
        # Nothing left in the vhost's queues once every run completed.
        left = [line.split("\t") for line in
                rabbit.ctl("list_queues", "-p", vhost, "name", "messages").splitlines()]
        counts = {row[0]: row[1].strip() for row in left if row[-1].strip().isdigit()}
        assert counts and set(counts.values()) == {"0"}, left
    finally:
        rabbit.ctl("delete_vhost", vhost)
