"""Run your fanout functions inside a Django test.

:func:`worker` starts a Celery worker (thread pool) and fanout's timer thread
in the test process, on the project's own client, so the functions from every
``fanout_functions.py`` run for real.  With test settings like::

    FANOUT = {**FANOUT, "REDIS_URL": "memory://"}   # needs fakeredis[lua]
    CELERY_BROKER_URL = "memory://"

everything stays in the process; with a real Redis it works the same way.

The worker's threads use their own database connections, so they see only
committed data, and ``on_commit`` (where ``emit`` publishes) only fires when a
test really commits: use transactional tests (``@pytest.mark.django_db(transaction=True)``
or ``TransactionTestCase``).  The ``fanout_worker`` pytest fixture does so::

    # conftest.py
    pytest_plugins = ["fanout.django.testing"]

    # test_orders.py
    def test_order_created(client, fanout_worker):
        response = client.post("/orders/", {"total": "12.50"})
        runs = fanout_worker.wait(response.json()["event_id"])
        assert [r.status for r in runs] == ["completed"]
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from .._client import Fanout
from .._ids import run_id_for
from .._records import RunInfo
from ..embedded import start_embedded_worker
from ._project import client

__all__ = ["FanoutTestWorker", "worker"]


class FanoutTestWorker:
    """The handle :func:`worker` yields: wait for an event's runs, flush the outbox."""

    def __init__(self, fanout_client: Fanout, timeout: float) -> None:
        self.client = fanout_client
        self.timeout = timeout

    def runs(self, event_id: str) -> list[RunInfo | None]:
        """The runs ``event_id`` starts (None for one not created yet); [] if unpublished."""
        rt = self.client.runtime
        (event,) = rt.store.load_events([event_id])
        if event is None:
            return []
        return [self.client.get_run(run_id_for(event_id, fn.key)) for fn in rt.index.match(event)]

    def wait(self, event_id: str, *, timeout: float | None = None) -> list[RunInfo]:
        """Wait until every function ``event_id`` triggers has finished; returns the runs.

        Raises ``AssertionError`` (with what is missing) after ``timeout`` seconds.
        An event that matches no function returns ``[]`` once it is published.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            runs = self.runs(event_id)
            published = self.client.runtime.store.load_events([event_id])[0] is not None
            if published and all(r is not None and r.done for r in runs):
                return [r for r in runs if r is not None]
            if time.monotonic() >= deadline:
                if not published:
                    state = "the event was never published (is it still in the outbox?)"
                else:
                    state = ", ".join(
                        f"{r.fn_id}: {r.status}" if r is not None else "a run not created yet"
                        for r in runs
                    )
                raise AssertionError(f"runs of event {event_id} not finished: {state}")
            time.sleep(0.02)

    def flush_outbox(self) -> int:
        """Publish every outbox row now, due or not; returns how many were published."""
        from .sweeper import sweep

        total = 0
        while True:
            result = sweep(due_only=False)
            total += result.published
            if result.failed or result.seen == 0:
                return total


@contextmanager
def worker(*, concurrency: int = 2, timeout: float = 30.0) -> Iterator[FanoutTestWorker]:
    """Run an in-process worker for the project's client while the block runs."""
    fanout_client = client()
    app = fanout_client.celery
    if str(app.conf.broker_url or "").startswith("memory://"):
        options = dict(app.conf.broker_transport_options or {})
        options.setdefault("polling_interval", 0.01)
        app.conf.broker_transport_options = options
    with start_embedded_worker(app, concurrency=concurrency):
        yield FanoutTestWorker(fanout_client, timeout)


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is optional at run time
    pass
else:

    @pytest.fixture
    def fanout_worker(transactional_db: None) -> Iterator[FanoutTestWorker]:
        """An in-process worker for one transactional test (needs pytest-django)."""
        with worker() as w:
            yield w
