"""``fanout dev``: a worker, the beat scheduler and the dashboard in one process.

The worker is Celery's own (a thread pool, in this process) and consumes the
app's queues, including fanout's router queue; beat runs with an in-memory
schedule (no ``celerybeat-schedule`` file); the dashboard serves the same
runtime.  With the embedded default (``memory://`` store and broker) nothing is
installed or left behind; with ``--redis`` the app's own Redis is used.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .._dashboard import DashboardServer
from .._ops.locate import Target

log = logging.getLogger("fanout")


@contextmanager
def running_beat(app: Any) -> Iterator[Any]:
    """Celery beat in a daemon thread with an in-memory schedule."""
    from celery.beat import Service

    service = Service(app, scheduler_cls="celery.beat:Scheduler", max_interval=5,
                      remote_control=False)
    thread = threading.Thread(target=service.start, name="fanout-dev-beat", daemon=True)
    thread.start()
    try:
        yield service
    finally:
        service.stop()
        thread.join(timeout=5)


@contextmanager
def dev_services(target: Target, *, host: str = "127.0.0.1", port: int = 8288,
                 token: str | None = None, concurrency: int = 4,
                 beat: bool = True) -> Iterator[DashboardServer]:
    """Start the three services; yields the running dashboard."""
    from ..embedded import start_embedded_worker

    dash = DashboardServer(target, host=host, port=port, token=token)  # fails fast on a bad bind
    try:
        with start_embedded_worker(target.app, concurrency=concurrency):
            with running_beat(target.app) if beat else _nothing():
                dash.start()
                yield dash
    finally:
        dash.shutdown()


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def banner(target: Target, dash: DashboardServer, token: str | None, beat: bool) -> str:
    fns = target.functions()
    lines = [
        f"fanout dev: {target.spec}",
        f"  store      {'embedded, in memory' if target.is_memory else target.redis_url}",
        f"  broker     {target.app.conf.broker_url}",
        f"  worker     in this process (threads), beat {'on' if beat else 'off'}",
        f"  dashboard  {dash.url}" + (f"?token={token}" if token else ""),
        f"  functions  {len(fns)}",
    ]
    lines += [f"    {fn.key}" for fn in fns]
    return "\n".join(lines) + "\n"


def run_dev(target: Target, *, host: str = "127.0.0.1", port: int = 8288,
            token: str | None = None, concurrency: int = 4, beat: bool = True,
            on_ready: Callable[[DashboardServer], None] | None = None) -> None:
    """Run until Ctrl-C or SIGTERM."""
    stop = threading.Event()

    def on_term(_sig: int, _frame: Any) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_term)
    with dev_services(target, host=host, port=port, token=token, concurrency=concurrency,
                      beat=beat) as dash:
        sys.stderr.write(banner(target, dash, token, beat))
        sys.stderr.write("ready. Ctrl-C to stop\n")
        sys.stderr.flush()
        if on_ready is not None:
            on_ready(dash)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        sys.stderr.write("fanout dev: stopping\n")
