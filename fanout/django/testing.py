"""Run your fanout functions inside a Django test.

A Celery worker (thread pool) and fanout's timer thread run in the test
process, on the project's own client, so the functions from every
``fanout_functions.py`` run for real.  With test settings like::

    FANOUT = {**FANOUT, "REDIS_URL": "memory://"}   # needs fakeredis[lua]
    CELERY_BROKER_URL = "memory://"

everything stays in the process; with a real Redis it works the same way.

The worker's threads use their own database connections, so they see only
committed data, and ``on_commit`` (where ``emit`` publishes) only fires when a
test really commits: use transactional tests (``@pytest.mark.django_db(transaction=True)``
or ``TransactionTestCase``).  With pytest-django, the ``fanout_worker`` fixture
does that for you::

    # conftest.py (or: addopts = -p fanout.django.testing)
    pytest_plugins = ["fanout.django.testing"]

    # test_orders.py
    def test_order_created(client, fanout_worker):
        response = client.post("/orders/", {"total": "12.50"})
        runs = fanout_worker.wait(response.json()["event_id"])
        assert [r.status for r in runs] == ["completed"]

Without pytest, ``with worker() as w: ...`` does the same for one block (it
starts and stops the Celery worker each time; :func:`shared_worker` keeps one
running across blocks).  Run only one in-process worker at a time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .._client import Fanout
from .._core.ids import run_id_for
from .._core.records import RunInfo
from ._project import client

__all__ = ["FanoutTestWorker", "shared_worker", "worker"]


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


def _prepare(app: Any) -> None:
    if str(app.conf.broker_url or "").startswith("memory://"):
        options = dict(app.conf.broker_transport_options or {})
        options.setdefault("polling_interval", 0.01)
        app.conf.broker_transport_options = options


@contextmanager
def _celery_worker(app: Any, concurrency: int) -> Iterator[None]:
    """A Celery worker (thread pool) in this process, unless the session one runs."""
    global _session_app
    if _session_app is app:
        yield
        return
    from celery.contrib.testing.worker import start_worker

    _prepare(app)
    with start_worker(
        app,
        pool="threads",
        concurrency=concurrency,
        perform_ping_check=False,
        loglevel="WARNING",
        shutdown_timeout=30,
    ):
        yield


@contextmanager
def _timers(fanout_client: Fanout) -> Iterator[None]:
    """fanout's timer thread (retries, sleeps, the outbox sweeper) for the block."""
    rt = fanout_client.runtime
    rt.timers.start()
    try:
        yield
    finally:
        rt.timers.stop()


@contextmanager
def worker(*, concurrency: int = 2, timeout: float = 30.0) -> Iterator[FanoutTestWorker]:
    """Run an in-process worker for the project's client while the block runs."""
    fanout_client = client()
    with _celery_worker(fanout_client.celery, concurrency), _timers(fanout_client):
        yield FanoutTestWorker(fanout_client, timeout)


_session_app: Any = None


@contextmanager
def shared_worker(*, concurrency: int = 2) -> Iterator[Any]:
    """Keep the project's Celery worker running in this process for a while (a test
    session, a module); :func:`worker` and ``fanout_worker`` reuse it meanwhile
    and only start fanout's timer thread.  Yields the Celery app."""
    global _session_app
    app = client().celery
    with _celery_worker(app, concurrency):
        _session_app = app
        try:
            yield app
        finally:
            _session_app = None


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is optional at run time
    pass
else:

    @pytest.fixture(scope="session")
    def fanout_celery_worker(django_db_setup: None) -> Iterator[Any]:
        """The Celery worker behind ``fanout_worker``: started once, stopped at the end."""
        with shared_worker() as app:
            yield app

    @pytest.fixture
    def fanout_worker(
        transactional_db: None, fanout_celery_worker: Any
    ) -> Iterator[FanoutTestWorker]:
        """An in-process worker for one transactional test (needs pytest-django).

        The Celery worker is shared by the session; fanout's timer thread (and with
        it the outbox sweeper) runs only during the test.
        """
        fanout_client = client()
        with _timers(fanout_client):
            yield FanoutTestWorker(fanout_client, 30.0)
