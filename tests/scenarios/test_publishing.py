"""fanout publishes its own task messages (``fanout/_celery/publisher.py``) without
``Task.apply_async``; what users configure for Celery's publishing still applies:
``task_routes``, the publish signals, and messages a stock Celery worker runs."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery, signals
from kombu import Queue

import fanout
from tests.support import Worker, run_of, url_for, wait_run

app = Celery("test_publishing")
app.config_from_object("celeryconfig")
app.conf.broker_url = os.environ.get("FANOUT_TEST_BROKER_URL") or url_for(__name__)
app.conf.task_queues = [Queue("celery"), Queue("fanout-steps")]
app.conf.task_routes = {"fanout.step": {"queue": "fanout-steps"}}
app.conf.fanout_first_pass_priority = None
client = fanout.Fanout("tests", celery=app, redis_url=url_for(__name__))

pytestmark = pytest.mark.skipif(
    not str(app.conf.broker_url).startswith("redis"), reason="reads the Redis broker's lists"
)


@client.create_function(fn_id="one", trigger=fanout.TriggerEvent(event="pub/one"))
def one(ctx: fanout.ContextSync) -> int:
    return int(ctx.step.run("s", lambda: 7))


def test_task_routes_and_publish_signals_apply(clean_db: redis.Redis) -> None:
    seen: list[dict[str, Any]] = []

    def before(sender: str, headers: dict[str, Any], routing_key: str, **_: Any) -> None:
        seen.append({"task": sender, "key": routing_key, "id": headers["id"]})

    signals.before_task_publish.connect(before, weak=False)
    try:
        client._rt.publisher.enqueue("tests:one", "r1", 0)
    finally:
        signals.before_task_publish.disconnect(before)
    assert seen and seen[0]["task"] == "fanout.step" and seen[0]["key"] == "fanout-steps"
    raw = clean_db.lpop("fanout-steps")
    assert raw is not None and clean_db.llen(app.conf.task_default_queue) == 0
    msg = json.loads(raw)
    assert msg["headers"]["task"] == "fanout.step"
    assert msg["headers"]["id"] == seen[0]["id"]
    assert msg["headers"]["argsrepr"] == "fn=tests:one run=r1 pass=0"
    assert msg["content-type"] == "application/json"


@pytest.fixture()
def steps_worker(clean_db: redis.Redis, log_dir: Path) -> Iterator[Worker]:
    w = Worker(__name__, log_dir=log_dir)
    yield w
    w.stop()


def test_a_worker_runs_the_routed_passes(steps_worker: Worker) -> None:
    """A plain ``celery worker`` (no ``-Q``) consumes the app's queues, the router's
    included (fanout adds it to ``task_queues``), and the routed passes run."""
    eid = client.emit("pub/one", {})
    run = wait_run(client, run_of(client, eid, "one"))
    assert run.status == "completed" and run.output == 7
    assert "fanout-steps" in steps_worker.log()  # the worker's banner lists the queue
