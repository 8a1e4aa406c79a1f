"""The hand-written Celery baseline: ``group`` of ``chain(s1, s2, s3)``.

Same at-least-once settings as fanout (the shipped ``celeryconfig``: acks_late,
reject_on_worker_lost, prefetch 1, JSON); no result backend — the last task of
each chain counts completions in Redis (``INCR bench:done``), as fanout's does.
"""

from __future__ import annotations

import os

from celery import Celery, chain, group

from bench.harness import per_process_redis, signal_ready_on_worker_ready

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
EFFECTS = os.environ.get("BENCH_EFFECTS") == "1"

app = Celery("bench_celery")
app.config_from_object("celeryconfig")
app.conf.broker_url = URL
app.conf.worker_hijack_root_logger = False
signal_ready_on_worker_ready()

r = per_process_redis(URL)


@app.task(name="bench.s1")
def s1(i: int) -> int:
    if EFFECTS:
        r().hincrby("bench:fx:s1", str(i), 1)
    return i


@app.task(name="bench.s2")
def s2(i: int) -> int:
    if EFFECTS:
        r().hincrby("bench:fx:s2", str(i), 1)
    return i


@app.task(name="bench.s3")
def s3(i: int) -> int:
    if EFFECTS:
        r().hincrby("bench:fx:s3", str(i), 1)
    r().incr("bench:done")
    return i


@app.task(name="bench.loader")
def loader(n: int) -> int:
    group(chain(s1.si(i), s2.si(i), s3.si(i)) for i in range(n)).apply_async()
    return n


@app.task(name="bench.all3")
def all3(i: int) -> int:
    """The three steps in one task: nothing is saved between them (a worker lost in
    the middle runs all three again). The floor of any design that runs a run as
    one Celery task."""
    return s3.run(s2.run(s1.run(i)))


@app.task(name="bench.loader1")
def loader1(n: int) -> int:
    group(all3.si(i) for i in range(n)).apply_async()
    return n


@app.task(name="bench.ping")
def ping(key: str) -> None:
    r().set(key, 1)


@app.task(name="bench.noop")
def noop() -> None:
    return None
