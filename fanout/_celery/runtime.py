"""The state fanout keeps for one Celery app: plain state, no behaviour of its own.

One :class:`Runtime` per Celery app, shared by every :class:`fanout.Fanout` client
created on it (:func:`get_runtime` finds it; ``install.runtime_for`` makes it).  It
holds the app, the settings, the store (reconnected after a fork), the publisher,
the declared functions with their indexes, and the objects a worker process runs
in the background (lease renewal, timers, the paused set, cron), none of which
imports this module.  The modules above take the runtime as their first argument
and call the one below them directly: ``publisher.py``, then ``slots.py`` and
``endings.py``, then ``admission.py``, ``gates.py`` and ``pausing.py``, then
``sink.py`` and ``passes.py``, then ``routing.py``, then ``tasks.py`` and
``install.py`` (``docs/internals.md``).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from celery import Celery
from kombu import Exchange, Queue  # type: ignore[attr-defined]

from .._core.flow import Cancel
from .._core.function import FunctionDef
from .._core.lifecycle import MAX_TAKEOVERS
from .._core.triggers import SubscriberIndex
from .._errors import ConfigError, InvokeError
from .._redis.event_series import DEFAULT_CAP as DEFAULT_EVENT_NAMES
from .._redis.store import Store, connect
from .cron import CronService
from .leases import Leases
from .paused import Paused
from .publisher import Publisher
from .timers import TimerThread

__all__ = ["EVENTS_EXCHANGE", "MAX_TAKEOVERS", "ROUTER_QUEUE", "Runtime", "get_runtime"]

EVENTS_EXCHANGE = "fanout.events"
ROUTER_QUEUE = "fanout.events"

_runtimes: dict[int, Runtime] = {}
_runtimes_lock = threading.Lock()


class Runtime:
    """State shared by all clients of one Celery app."""

    def __init__(self, app: Celery, redis_url: str, *, recovery_timeout: float, retention: float):
        self.app = app
        self.redis_url = redis_url
        self.recovery_timeout = float(recovery_timeout)
        self.lease_s = max(1.0, self.recovery_timeout / 2)
        self.retention = retention
        self.functions: dict[str, FunctionDef] = {}
        self.index = SubscriberIndex()
        #: Cancel-on-event declarations by event name: (function, index, Cancel).
        self.cancel_index: dict[str, list[tuple[FunctionDef, int, Cancel]]] = {}
        self._store: Store | None = None
        self._store_pid = 0
        self.exchange = Exchange(EVENTS_EXCHANGE, type="direct", durable=True)  # type: ignore[no-untyped-call]
        self.router_queue = Queue(  # type: ignore[no-untyped-call]
            ROUTER_QUEUE, exchange=self.exchange, routing_key="fanout.route", durable=True
        )
        self.publisher = Publisher(app, self.router_queue, lambda: self.store)
        self.leases = Leases(lambda: self.store, self.lease_s)
        self.timers = TimerThread(lambda: self.store, self.publisher, self.lease_s)
        self.paused = Paused(lambda: self.store)
        self.cron = CronService(app, self.functions, lambda: self.store, self.publisher)

    @property
    def store(self) -> Store:
        """The store, reconnected after a fork (prefork children get their own sockets)."""
        pid = os.getpid()
        if self._store is None or self._store_pid != pid:
            self._store = Store(
                connect(self.redis_url), retention=self.retention,
                watchdog=5 * self.recovery_timeout, metrics=_metrics_setting(self.app),
                metrics_interval=_metrics_interval(self.app),
                metrics_event_names=_metrics_event_names(self.app),
            )
            self._store_pid = pid
        return self._store

    def store_if_here(self) -> Store | None:
        """This process's store if it was built here (None after a fork, or unused)."""
        return self._store if self._store_pid == os.getpid() else None

    def add_function(self, fn: FunctionDef) -> None:
        if fn.key in self.functions:
            raise ConfigError(f"function {fn.fn_id!r} is already declared in app {fn.app_id!r}")
        self.functions[fn.key] = fn
        for trig in fn.event_triggers:
            self.index.add(fn, trig)
        for i, c in enumerate(fn.flow.cancel):
            self.cancel_index.setdefault(c.event, []).append((fn, i, c))

    def resolve_function(self, ref: Any, app_id: str) -> FunctionDef:
        """A FunctionDef from a decorated handler, a FunctionDef, or an id string."""
        fn = getattr(ref, "fanout_function", ref)
        if isinstance(fn, FunctionDef) and fn.key in self.functions:
            return fn
        if isinstance(ref, str):
            # A bare id names a function of the invoking client first, then a full key.
            found = self.functions.get(f"{app_id}:{ref}") or self.functions.get(ref)
            if found is not None:
                return found
        raise InvokeError(f"cannot invoke {ref!r}: it is not a function declared on this app")


def _metrics_setting(app: Celery) -> bool | None:
    """The Celery setting ``fanout_metrics``: False stops counting in the store;
    unset (None) counts everywhere but on a Redis Cluster."""
    value = app.conf.get("fanout_metrics")
    if value is not None and not isinstance(value, bool):
        raise ConfigError(f"fanout_metrics must be True, False or unset, not {value!r}")
    return value


def _metrics_interval(app: Celery) -> float:
    """The Celery setting ``fanout_metrics_interval``: how often (seconds) each
    process sends its buffered histogram observations to the store; 1 by default."""
    value = app.conf.get("fanout_metrics_interval")
    if value is None:
        return 1.0
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(
            f"fanout_metrics_interval must be a number of seconds above 0, not {value!r}"
        )
    return float(value)


def get_runtime(app: Any) -> Runtime | None:
    """The runtime fanout keeps for ``app`` (a Celery app), or ``None`` when no fanout
    client was created on it."""
    with _runtimes_lock:
        rt = _runtimes.get(id(app))
    return rt if rt is not None and rt.app is app else None


def stop_background_threads() -> None:
    """Stop every runtime's background threads in this process (the paused-functions
    refresh, the timer scan): for a process about to stop its Redis before it exits,
    such as a test session with a private server, so no thread reports an outage."""
    with _runtimes_lock:
        runtimes = list(_runtimes.values())
    for rt in runtimes:
        rt.paused.stop()
        rt.timers.stop(wait=False)


def _metrics_event_names(app: Celery) -> int:
    """The Celery setting ``fanout_metrics_event_names``: how many distinct event
    names get a metrics series of their own (fleet-wide); later names count as
    ``other``.  1000 by default."""
    value = app.conf.get("fanout_metrics_event_names")
    if value is None:
        return DEFAULT_EVENT_NAMES
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(
            f"fanout_metrics_event_names must be a whole number of names (0 or more), not {value!r}"
        )
    return value
