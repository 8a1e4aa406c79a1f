"""The fanout side of every workload.

Environment: ``BENCH_REDIS_URL`` (broker and store), ``BENCH_CHECKPOINT=1`` for
``checkpoint=True``, ``BENCH_RECOVERY_TIMEOUT`` (seconds), ``BENCH_EFFECTS=1`` to
count each step execution in Redis (crash workload), ``BENCH_METRICS=0`` to turn the
store's metrics counting off (``fanout_metrics = False``) and measure what it costs,
``BENCH_STORE_URL`` for a state store other than the broker (``redis+cluster://...``;
the bench's own counters stay on the broker), ``BENCH_RETENTION`` (seconds) for a
retention shorter than the hour ``Fanout(retention=)`` accepts, so ``bench --scale``
can watch memory come back (set on the runtime before its store is built),
``BENCH_FANOUT_LOG=INFO`` for the ``fanout`` logger's INFO lines (an outage's end)
in a worker run at WARNING.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

from celery import Celery

import fanout
from bench.harness import per_process_redis, signal_ready_on_worker_ready

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
EFFECTS = os.environ.get("BENCH_EFFECTS") == "1"
SEND_CHUNK = 5000  # fanout's limit of events per send

app = Celery("bench_fanout")
app.config_from_object("celeryconfig")
app.conf.broker_url = URL
app.conf.worker_hijack_root_logger = False
if os.environ.get("BENCH_METRICS") == "0":
    app.conf.fanout_metrics = False
client = fanout.Fanout(
    "bench",
    celery=app,
    redis_url=os.environ.get("BENCH_STORE_URL") or URL,
    checkpoint=os.environ.get("BENCH_CHECKPOINT") == "1",
    recovery_timeout=float(os.environ.get("BENCH_RECOVERY_TIMEOUT", "60")),
)
if os.environ.get("BENCH_RETENTION"):
    client.runtime.retention = float(os.environ["BENCH_RETENTION"])
signal_ready_on_worker_ready()
if os.environ.get("BENCH_FANOUT_LOG"):
    logging.getLogger("fanout").setLevel(os.environ["BENCH_FANOUT_LOG"])

r = per_process_redis(URL)


def step(name: str, i: int) -> int:
    if EFFECTS:
        r().hincrby(f"bench:fx:{name}", str(i), 1)
    return i


def last(i: int) -> int:
    if EFFECTS:
        r().hincrby("bench:fx:s3", str(i), 1)
    r().incr("bench:done")
    return i


@client.create_function(fn_id="loader", trigger=fanout.TriggerEvent(event="bench/load"))
def loader(ctx: fanout.ContextSync) -> int:
    n = int(ctx.event.data["n"])
    for c, start in enumerate(range(0, n, SEND_CHUNK)):
        ctx.step.send_event(
            f"send-{c}",
            [fanout.Event(name="bench/item", data={"i": i})
             for i in range(start, min(n, start + SEND_CHUNK))],
        )
    return n


@client.create_function(fn_id="item", trigger=fanout.TriggerEvent(event="bench/item"))
def item(ctx: fanout.ContextSync) -> int:
    i = int(ctx.event.data["i"])
    ctx.step.run("s1", step, "s1", i)
    ctx.step.run("s2", step, "s2", i)
    return int(ctx.step.run("s3", last, i))


def noop() -> int:
    return 1


@client.create_function(fn_id="lat1", trigger=fanout.TriggerEvent(event="bench/lat1"))
def lat1(ctx: fanout.ContextSync) -> int:
    return int(ctx.step.run("s1", noop))


@client.create_function(fn_id="lat3", trigger=fanout.TriggerEvent(event="bench/lat3"))
def lat3(ctx: fanout.ContextSync) -> int:
    ctx.step.run("s1", noop)
    ctx.step.run("s2", noop)
    return int(ctx.step.run("s3", noop))


@client.create_function(fn_id="sleeper", trigger=fanout.TriggerEvent(event="bench/sleep"))
def sleeper(ctx: fanout.ContextSync) -> None:
    ctx.step.sleep("s", timedelta(seconds=float(ctx.event.data.get("for", 1))))


@client.create_function(fn_id="waiter", trigger=fanout.TriggerEvent(event="bench/wait"))
def waiter(ctx: fanout.ContextSync) -> Any:
    ev = ctx.step.wait_for_event("w", event="bench/resolve", timeout="10m", match="data.k")
    return ev.data if ev is not None else None
