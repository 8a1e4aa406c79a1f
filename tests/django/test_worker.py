"""End to end with a real `celery -A tests.django.testproj worker` subprocess.

The worker finds ``shop/fanout_functions.py`` through the app config (Django is
set up by Celery's Django fix-up, as in any project), and its timer thread runs
the outbox sweeper.  The tests commit for real (transactional tests), and some
emit from a separate process that crashes or meets an outage at commit.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import pytest

pytest.importorskip("django", reason="Django is not installed (pip install django)")

import redis
from django.db import transaction
from django.test import Client
from django.utils import timezone

import fanout
from fanout._core.event import dumps
from fanout.django import client as fanout_client
from fanout.django import emit
from fanout.django.conf import get_settings
from fanout.django.models import OutboxEvent
from tests.django.conftest import subprocess_env
from tests.django.shop.models import Order
from tests.support import ROOT, Worker, run_of, url_for, wait_for, wait_run

pytestmark = pytest.mark.django_db(transaction=True)

FN = "confirm-order"
SWEPT = "the outbox sweeper published"


class Boom(Exception):
    pass


def confirmed_run(event_id: str) -> fanout.RunInfo:
    info = wait_run(fanout_client(), run_of(fanout_client(), event_id, FN), timeout=30)
    assert info.status == "completed", info.error
    return info


def side_effects(r: redis.Redis, event_id: str) -> int:
    return int(r.get(f"side:confirm:{event_id}") or 0)


def gone(event_id: str) -> bool:
    return not OutboxEvent.objects.filter(event_id=event_id).exists()


def dead_redis_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"  # nothing listens there once the socket is closed


def run_emitter(mode: str, **env: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.django.emitter", mode],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **subprocess_env(**env)},
        capture_output=True,
        text=True,
        timeout=90,
    )
    lines = proc.stdout.splitlines()
    assert lines, f"the emitter printed nothing; stderr:\n{proc.stderr[-3000:]}"
    return proc, json.loads(lines[0])


def test_view_commit_then_the_workers_run_the_function(
    django_worker: Worker, fanout_redis: redis.Redis, client: Client
) -> None:
    response = client.post("/orders/", {"total": "12.50"})
    assert response.status_code == 201
    body = response.json()
    info = confirmed_run(body["event_id"])
    assert info.output == {"order_id": body["order_id"], "total": "12.50"}
    assert [s.step_id for s in info.steps] == ["load-order", "mark-confirmed", "count"]
    assert info.event_ids == [body["event_id"]]
    assert Order.objects.get(pk=body["order_id"]).status == "confirmed"
    assert side_effects(fanout_redis, body["event_id"]) == 1
    assert gone(body["event_id"])


def test_rollback_means_no_event_and_no_run(django_worker: Worker) -> None:
    with pytest.raises(Boom), transaction.atomic():
        order = Order.objects.create(total="1.00")
        eid = emit("shop/order.created", {"order_id": order.pk, "total": "1.00"})
        raise Boom
    assert not Order.objects.exists() and not OutboxEvent.objects.exists()
    conf = get_settings()
    time.sleep(conf.sweep_grace + 4 * conf.sweep_interval)  # the sweeper had its chances
    assert fanout_client().runtime.store.load_events([eid]) == [None]
    assert fanout_client().list_runs(event_id=eid) == []


@pytest.mark.parametrize("down", ["redis", "broker"])
def test_an_outage_at_commit_is_repaired_by_the_sweeper(
    down: str, django_worker: Worker, fanout_redis: redis.Redis
) -> None:
    live = url_for("tests.django")
    urls = {"FANOUT_DJANGO_REDIS_URL": live, "FANOUT_DJANGO_BROKER_URL": live}
    urls["FANOUT_DJANGO_REDIS_URL" if down == "redis" else "FANOUT_DJANGO_BROKER_URL"] = dead_redis_url()
    log_before = len(django_worker.log())
    # The row is due for the sweeper 8 s after it was written, not 2 s: the failed
    # publish (the broker's retries) and the emitter's exit must not outrun it.
    proc, out = run_emitter("outage", FANOUT_DJANGO_SWEEP_GRACE="8", **urls)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[-1] == "committed"
    eid = out["event_id"]
    row = OutboxEvent.objects.get(event_id=eid)
    assert row.attempts == 1 and row.last_error.startswith("PublishError"), row.last_error
    if down == "redis":
        assert fanout_client().runtime.store.load_events([eid]) == [None]
    info = confirmed_run(eid)
    assert info.output == {"order_id": out["order_id"], "total": "9.99"}
    wait_for(lambda: gone(eid), timeout=10)
    assert SWEPT in django_worker.log()[log_before:]
    assert side_effects(fanout_redis, eid) == 1


def test_a_process_killed_between_commit_and_publish(
    django_worker: Worker, fanout_redis: redis.Redis
) -> None:
    log_before = len(django_worker.log())
    proc, out = run_emitter("crash")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert "committed" not in proc.stdout
    eid = out["event_id"]
    assert Order.objects.filter(pk=out["order_id"]).exists(), "the transaction did not commit"
    row = OutboxEvent.objects.get(event_id=eid)
    assert row.attempts == 0, "somebody tried to publish before the kill"
    info = confirmed_run(eid)
    assert info.output == {"order_id": out["order_id"], "total": "9.99"}
    assert Order.objects.get(pk=out["order_id"]).status == "confirmed"
    wait_for(lambda: gone(eid), timeout=10)
    assert SWEPT in django_worker.log()[log_before:]


def test_the_same_row_published_twice_starts_one_run(
    django_worker: Worker, fanout_redis: redis.Redis, client: Client
) -> None:
    eid = client.post("/orders/", {"total": "2.00"}).json()["event_id"]
    first = confirmed_run(eid)
    runs_before = len(fanout_client().list_runs(fn_id=FN, limit=1000))
    # The row comes back, as if the delete after the first publish had been lost.
    (event,) = fanout_client().runtime.store.load_events([eid])
    assert event is not None
    OutboxEvent.objects.create(
        event_id=eid,
        name=event["name"],
        payload=dumps(event),
        next_attempt_at=timezone.now() - _dt.timedelta(seconds=1),
    )
    wait_for(lambda: gone(eid), timeout=15)  # the sweeper published it again
    time.sleep(1.0)  # time for the duplicate to be routed
    runs = fanout_client().list_runs(event_id=eid)
    assert [r.run_id for r in runs] == [first.run_id]
    assert len(fanout_client().list_runs(fn_id=FN, limit=1000)) == runs_before, "a second run"
    assert fanout_client().get_run(first.run_id).status == "completed"  # type: ignore[union-attr]
    assert side_effects(fanout_redis, eid) == 1
