"""Helpers for testing your own fanout functions.

Fast unit tests: :func:`run_function` runs one function in the test's process
with the same replay engine as a worker, no Redis and no worker, with mocked
steps, skipped sleeps and answered waits (``docs/howto/testing.md``).

Integration tests, two ways, both real Celery workers:

* in-process: ``with fanout.testing.worker(app): ...`` runs a worker thread and
  fanout's timer thread inside the test process. With ``memory://`` as broker
  and Redis URL nothing needs installing; with a real Redis URL it is the real
  thing.
* out of process: start ``celery -A yourproject worker`` yourself (or in a
  fixture) and use :func:`wait_run` the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ._client import Fanout
from ._core.harness import RunResult, run_function, run_function_async
from ._core.ids import run_id_for
from ._core.records import RunInfo
from ._errors import ConfigError
from .embedded import embedded_celery, start_embedded_worker

__all__ = [
    "RunResult",
    "embedded_celery",
    "run_function",
    "run_function_async",
    "run_of",
    "wait_run",
    "worker",
]


@contextmanager
def worker(app: Any, *, concurrency: int = 4) -> Iterator[None]:
    """Run a Celery worker (thread pool) and fanout's timers in this process."""
    with start_embedded_worker(app, concurrency=concurrency):
        yield


def run_of(client: Fanout, event_id: str, function: Callable[..., Any] | str) -> str:
    """The id of the run that ``event_id`` started (or will start) for ``function``."""
    fn = client._function(function)
    return run_id_for(event_id, fn.key)


def wait_run(client: Fanout, run_id: str, *, timeout: float = 30.0) -> RunInfo:
    """Wait until the run has ended (completed, failed, cancelled or skipped)."""
    deadline = time.monotonic() + timeout
    info = client.get_run(run_id)
    while not (info is not None and info.done):
        if time.monotonic() > deadline:
            status = info.status if info else "not created"
            raise ConfigError(f"run {run_id} did not end within {timeout}s (status: {status})")
        time.sleep(0.02)
        info = client.get_run(run_id)
    return info
