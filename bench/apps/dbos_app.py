"""The DBOS 3.x side of workload A: a queue of 3-step workflows, fanned out by a
loader workflow.  Run as a worker process: ``python -m bench.apps.dbos_app``.

Environment: ``BENCH_DBOS_URL`` (PostgreSQL system database), ``BENCH_REDIS_URL``
(completion counter, as for the other systems), ``BENCH_DBOS_THREADS`` (workflows
each process runs at once), ``BENCH_DBOS_POLL`` (queue polling interval, s),
``BENCH_DBOS_EXECUTOR`` (this process's executor id).
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import redis
from dbos import DBOS, DBOSConfig

DB_URL = os.environ.get("BENCH_DBOS_URL", "postgresql://postgres@127.0.0.1:5432/fanout_bench")
URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUE = "bench"

config: DBOSConfig = {
    "name": "fanout-bench",
    "system_database_url": DB_URL,
    "executor_id": os.environ.get("BENCH_DBOS_EXECUTOR", "bench-0"),
    "log_level": "WARNING",
}
_r = redis.Redis.from_url(URL)


@DBOS.step()
def noop_step(i: int) -> int:
    return i


@DBOS.step()
def last_step(i: int) -> int:
    _r.incr("bench:done")
    return i


@DBOS.workflow()
def item_wf(i: int) -> int:
    noop_step(i)
    noop_step(i)
    return last_step(i)


@DBOS.workflow()
def loader_wf(n: int) -> int:
    for i in range(n):
        DBOS.enqueue_workflow(QUEUE, item_wf, i)
    return n


def main() -> None:
    DBOS(config=config)
    DBOS.launch()
    DBOS.register_queue(
        QUEUE,
        worker_concurrency=int(os.environ.get("BENCH_DBOS_THREADS", "4")),
        polling_interval_sec=float(os.environ.get("BENCH_DBOS_POLL", "0.05")),
    )
    ready = os.environ.get("BENCH_READY_FILE")
    if ready:
        Path(ready).touch()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    DBOS.destroy()


def enqueue_loader(n: int, db_url: str = DB_URL) -> None:
    """From the driver: enqueue the loader workflow (a client; it runs nothing itself)."""
    from dbos import DBOSClient, EnqueueOptions

    client = DBOSClient(system_database_url=db_url)
    try:
        client.enqueue(EnqueueOptions(queue_name=QUEUE, workflow_name="loader_wf"), n)
    finally:
        client.destroy()


if __name__ == "__main__":
    main()
