"""The embedded default: everything in one process, nothing to install by hand.

``memory://`` as the Redis URL gives an in-memory Redis-compatible store
(fakeredis, with Lua); :func:`embedded_celery` gives a Celery app on the
in-memory broker; :func:`start_embedded_worker` runs a worker thread.  It is for
the README example, trying things out and ``fanout dev``: nothing is durable.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ._redis.memory import memory_redis

__all__ = ["embedded_celery", "memory_redis", "start_embedded_worker"]




def embedded_celery(name: str = "fanout-embedded") -> Any:
    """A Celery app on the in-memory broker with fanout's JSON-only settings."""
    from celery import Celery

    app = Celery(name, broker="memory://localhost/", backend=None)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        worker_hijack_root_logger=False,
        broker_transport_options={"polling_interval": 0.01},
    )
    return app


@contextmanager
def start_embedded_worker(app: Any, *, concurrency: int = 4) -> Iterator[None]:
    """Run a Celery worker (thread pool) and fanout's timer thread in this process."""
    from celery.contrib.testing.worker import start_worker

    with start_worker(
        app, pool="threads", concurrency=concurrency, perform_ping_check=False, loglevel="WARNING"
    ):
        from ._celery.runtime import get_runtime

        rt = get_runtime(app)
        if rt is not None:
            rt.timers.start()
        try:
            yield
        finally:
            if rt is not None:
                rt.timers.stop()
