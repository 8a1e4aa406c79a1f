"""The Celery adapter: fanout's tasks and signals, and the state they share.

One :class:`Runtime` per Celery app, shared by every :class:`fanout.Fanout`
client created on it (:func:`get_runtime` finds it).  It registers:

* ``fanout.step(fn, run_id, seq, branch)``: one pass of a run (``passes.py``:
  replay, execute the next step, end the pass by its outcome), or one parallel
  branch (``branches.py``);
* ``fanout.route(event_ids, ...)``: the router (``routing.py``), bound to the
  ``fanout.events`` exchange;
* ``fanout.cron``: cron ticks from Celery beat (``cron.py``).

Publishing is in ``publishing.py``, run endings in ``endings.py``, flow control
in ``flow_runtime.py``, leases and the timer thread in ``timers.py``; the methods
here that name them are the entry points the other modules call.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from celery import Celery, signals
from kombu import Exchange, Queue  # type: ignore[attr-defined]

from .._core.event import Event, dumps
from .._core.function import FunctionDef
from .._core.records import StepRecord
from .._core.run_record import new_run_fields, step_field
from .._core.triggers import SubscriberIndex
from .._errors import ConfigError, InvokeError
from .._redis.history import History
from .._redis.store import Store, StoreError, connect
from . import endings, passes, publishing
from .branches import execute_branch
from .flow_runtime import FlowRuntime
from .passes import MAX_TAKEOVERS
from .pausing import Pausing
from .publisher import Publisher
from .publishing import FIRST_PASS_PRIORITY
from .runlog import take_failed
from .timers import Leases, TimerThread, check_stuck

log = logging.getLogger("fanout")

__all__ = [
    "FIRST_PASS_PRIORITY", "MAX_TAKEOVERS", "Runtime", "check_serializers", "delivery_warnings",
    "get_runtime", "runtime_for",
]

EVENTS_EXCHANGE = "fanout.events"
ROUTER_QUEUE = "fanout.events"

_runtimes: dict[int, Runtime] = {}
_runtimes_lock = threading.Lock()


def check_serializers(app: Celery) -> None:
    """Refuse an app that would move fanout's messages with pickle."""
    conf = app.conf
    bad = []
    for key in ("task_serializer", "result_serializer"):
        if str(conf.get(key) or "json").lower() in ("pickle", "yaml"):
            bad.append(f"{key}={conf.get(key)!r}")
    accept = conf.get("accept_content") or ["json"]
    if any(str(a).lower() in ("pickle", "application/x-python-serialize", "yaml") for a in accept):
        bad.append(f"accept_content={list(accept)!r}")
    if bad:
        raise ConfigError(
            "fanout requires JSON-only serialization, but the Celery app has "
            + ", ".join(bad)
            + ". Set task_serializer='json', result_serializer='json' and "
            "accept_content=['json'] (or app.config_from_object('fanout.celeryconfig'))."
        )


def delivery_warnings(app: Celery) -> list[str]:
    """What in the app's delivery settings weakens fanout's at-least-once guarantee."""
    conf = app.conf
    found = []
    try:
        prefetch = int(conf.get("worker_prefetch_multiplier") or 0)
    except (TypeError, ValueError):
        prefetch = 0
    if prefetch > 1:
        found.append(
            f"worker_prefetch_multiplier={prefetch}: a killed worker's prefetched passes wait "
            "for fanout's watchdog; set worker_prefetch_multiplier = 1"
        )
    if not conf.get("task_acks_late"):
        found.append(
            "task_acks_late is off: a pass whose worker dies is not delivered again and waits "
            "for fanout's watchdog; set task_acks_late = True"
        )
    return found


class Runtime:
    """State and tasks shared by all clients of one Celery app."""

    def __init__(self, app: Celery, redis_url: str, *, recovery_timeout: float, retention: float):
        self.app = app
        self.redis_url = redis_url
        self.functions: dict[str, FunctionDef] = {}
        self.index = SubscriberIndex()
        self.recovery_timeout = float(recovery_timeout)
        self.lease_s = max(1.0, self.recovery_timeout / 2)
        self.retention = retention
        self._store: Store | None = None
        self._store_pid = 0
        self.leases = Leases(self)
        self.timers = TimerThread(self)
        self.flow = FlowRuntime(self)
        self.pausing = Pausing(self)
        self.publisher = Publisher(app)
        self.exchange = Exchange(EVENTS_EXCHANGE, type="direct", durable=True)  # type: ignore[no-untyped-call]
        self.router_queue = Queue(  # type: ignore[no-untyped-call]
            ROUTER_QUEUE, exchange=self.exchange, routing_key="fanout.route", durable=True
        )
        self._register_tasks()
        # Trim history indexes past the retention about once an hour in each worker.
        self.add_periodic(
            "fanout-history-prune", lambda: History(self.store).prune(), 3600.0, at_start=False
        )
        # The watchdog: fail runs that nothing will move (seen stuck twice, a minute apart).
        self.add_periodic(
            "fanout-stuck-runs", lambda: check_stuck(self, min_age=60.0), 60.0, at_start=False
        )
        # A dispatch_uid per runtime: Celery before 5.7 keys a bound method by its function
        # alone, so a second runtime in the process (a second app) would not be connected.
        uid = f"fanout.runtime.{id(self)}"
        signals.worker_init.connect(self._on_worker_init, weak=False, dispatch_uid=f"{uid}.init")
        signals.worker_ready.connect(self._on_worker_ready, weak=False, dispatch_uid=f"{uid}.ready")
        signals.worker_shutting_down.connect(self._on_worker_stopping, weak=False,
                                             dispatch_uid=f"{uid}.stopping")
        signals.worker_shutdown.connect(self._on_worker_stop, weak=False,
                                        dispatch_uid=f"{uid}.stop")
        # A prefork child leaves with os._exit (no atexit): send its buffered
        # histogram observations as it goes.
        signals.worker_process_shutdown.connect(self._flush_observations, weak=False,
                                                dispatch_uid=f"{uid}.child-stop")
        from .cron import install_cron

        self.cron = install_cron(self)

    # -- plumbing ------------------------------------------------------------------

    @property
    def store(self) -> Store:
        """The store, reconnected after a fork (prefork children get their own sockets)."""
        pid = os.getpid()
        if self._store is None or self._store_pid != pid:
            self._store = Store(
                connect(self.redis_url), retention=self.retention,
                watchdog=5 * self.recovery_timeout, metrics=self.metrics_setting(),
                metrics_interval=self.metrics_interval(),
            )
            self._store_pid = pid
        return self._store

    def metrics_setting(self) -> bool | None:
        """The Celery setting ``fanout_metrics``: False stops counting in the store;
        unset (None) counts everywhere but on a Redis Cluster."""
        value = self.app.conf.get("fanout_metrics")
        if value is not None and not isinstance(value, bool):
            raise ConfigError(f"fanout_metrics must be True, False or unset, not {value!r}")
        return value

    def metrics_interval(self) -> float:
        """The Celery setting ``fanout_metrics_interval``: how often (seconds) each
        process sends its buffered histogram observations to the store; 1 by default."""
        value = self.app.conf.get("fanout_metrics_interval")
        if value is None:
            return 1.0
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigError(
                f"fanout_metrics_interval must be a number of seconds above 0, not {value!r}"
            )
        return float(value)

    def _flush_observations(self, **_: Any) -> None:
        store = self._store
        if store is not None and self._store_pid == os.getpid() and store.observations:
            store.observations.close()

    @staticmethod
    def parse_json(text: str) -> Any:
        import json

        return json.loads(text)

    def add_function(self, fn: FunctionDef) -> None:
        if fn.key in self.functions:
            raise ConfigError(f"function {fn.fn_id!r} is already declared in app {fn.app_id!r}")
        self.functions[fn.key] = fn
        for trig in fn.event_triggers:
            self.index.add(fn, trig)
        self.flow.add_function(fn)

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

    def add_periodic(
        self, name: str, fn: Callable[[], Any], interval: float, *, at_start: bool = True
    ) -> None:
        """Run ``fn()`` about every ``interval`` seconds in each worker's timer thread
        (for example the Django outbox sweeper). Errors are logged, never raised."""
        self.timers.add_periodic(name, fn, interval, at_start=at_start)

    def start_scanner(self) -> None:
        self.timers.start()

    def stop_scanner(self) -> None:
        self.timers.stop()

    def _register_tasks(self) -> None:
        app, rt = self.app, self
        opts: dict[str, Any] = dict(
            acks_late=True, reject_on_worker_lost=True, ignore_result=True, serializer="json",
            shared=False,
        )

        # While Redis is unreachable a message is put back (a retry a few seconds
        # later) rather than acknowledged as failed; the run's timer in Redis is the
        # second line of defence.
        @app.task(name="fanout.step", bind=True, **opts)  # type: ignore[untyped-decorator]
        def step(
            task: Any, fn: str, run_id: str, seq: int | None = None, branch: str | None = None
        ) -> None:
            take_failed()
            try:
                if branch is None:
                    rt.execute_pass(fn, run_id, seq)
                else:
                    rt.execute_branch(fn, run_id, branch)
            except StoreError as exc:
                log.warning("fanout: Redis error in run %s, retrying the message: %s", run_id, exc)
                raise task.retry(exc=exc, countdown=2, max_retries=None) from None
            failed = take_failed()
            # The run's end is recorded: report the task as failed, so Flower, `celery
            # events` and task_failure hooks see it. Celery acks a task that raised.
            if failed is not None and rt.app.conf.get("fanout_task_failure", True):
                raise failed

        @app.task(name="fanout.route", bind=True, **opts)  # type: ignore[untyped-decorator]
        def route(
            task: Any,
            event_ids: list[str],
            parent_run_id: str | None = None,
            target: str | None = None,
            batch_id: str | None = None,
            invoker: dict[str, Any] | None = None,
        ) -> None:
            from .routing import route as do_route

            try:
                do_route(rt, event_ids, parent_run_id=parent_run_id, target=target,
                         invoker=invoker, batch_id=batch_id)
            except StoreError as exc:
                log.warning("fanout: Redis error while routing, retrying the message: %s", exc)
                raise task.retry(exc=exc, countdown=2, max_retries=None) from None

        queues = app.conf.task_queues
        if queues is None:
            default = Queue(app.conf.task_default_queue)  # type: ignore[no-untyped-call]
            app.conf.task_queues = [default, self.router_queue]
        elif not any(q.name == ROUTER_QUEUE for q in queues):
            app.conf.task_queues = [*queues, self.router_queue]

    def _mine(self, sender: Any) -> bool:
        app = getattr(sender, "app", None)
        return app is None or app is self.app

    def _on_worker_init(self, sender: Any = None, **_: Any) -> None:
        if self._mine(sender):
            try:
                check_serializers(self.app)
            except ConfigError as exc:
                # Celery logs and ignores exceptions raised by signal handlers; a
                # worker that would move fanout's messages with pickle must not start.
                log.critical("fanout: %s", exc)
                raise SystemExit(f"fanout: {exc}") from None
            for warning in delivery_warnings(self.app):
                log.warning("fanout: %s (or use app.config_from_object('fanout.celeryconfig'))",
                            warning)

    def _on_worker_ready(self, sender: Any = None, **_: Any) -> None:
        if self._mine(sender):
            self.timers.start()

    def _on_worker_stopping(self, **_: Any) -> None:
        # Sent from the worker's signal handler, which under the gevent and eventlet
        # pools runs in the event loop itself, where waiting for a thread (a
        # greenlet there) cannot switch away: only ask the threads to stop.
        self.timers.stop(wait=False)

    def _on_worker_stop(self, sender: Any = None, **_: Any) -> None:
        # Sent once the pool has stopped, from the worker's main flow: wait there
        # for a scan in progress to end.
        if self._mine(sender):
            self.timers.stop()
            self._flush_observations()

    # -- publishing (publishing.py) ----------------------------------------------------

    def publish(
        self,
        events: Sequence[tuple[Event, str]],
        *,
        parent_run_id: str | None = None,
        target: str | None = None,
        invoker: dict[str, Any] | None = None,
    ) -> list[str]:
        """Store the events and publish one router message; never waits for a worker."""
        return publishing.publish(self, events, parent_run_id=parent_run_id, target=target,
                                  invoker=invoker)

    def publish_route(
        self,
        ids: list[str],
        *,
        parent_run_id: str | None = None,
        target: str | None = None,
        invoker: dict[str, Any] | None = None,
        batch_id: str | None = None,
        producer: Any = None,
    ) -> None:
        publishing.publish_route(self, ids, parent_run_id=parent_run_id, target=target,
                                 invoker=invoker, batch_id=batch_id, producer=producer)

    def enqueue(
        self, fn_key: str, run_id: str, seq: int | None, *, branch: str | None = None,
        producer: Any = None, queue: Any = None,
    ) -> None:
        """Publish one ``fanout.step`` message (ids only); see :func:`publishing.enqueue`."""
        publishing.enqueue(self, fn_key, run_id, seq, branch=branch, producer=producer,
                           queue=queue)

    @functools.cached_property
    def first_pass_priority(self) -> int | None:
        """The message priority of a run's first pass (:func:`publishing.first_pass_priority`)."""
        return publishing.first_pass_priority(self.app)

    # -- passes (passes.py) and parallel branches (branches.py) ---------------------------

    def execute_pass(self, fn_key: str, run_id: str, seq: int | None) -> None:
        passes.execute_pass(self, fn_key, run_id, seq)

    def execute_branch(self, fn_key: str, run_id: str, step_id: str) -> None:
        execute_branch(self, fn_key, run_id, step_id)

    # -- runs: starting here, ending in endings.py ---------------------------------------

    def finish(
        self, run_id: str, token: str, status: str, output: Any, error: dict[str, Any] | None,
        fields: dict[str, str] | None = None, steps: dict[str, str] | None = None,
    ) -> None:
        """End a run (writing the pass's deferred step records with it); release what it
        held, emit system events, tell an invoking parent."""
        endings.finish(self, run_id, token, status, output, error, fields, steps)

    def start_run(
        self,
        fn: FunctionDef,
        event: dict[str, Any],
        *,
        run_id: str,
        parent_run_id: str | None = None,
        steps: Sequence[StepRecord] = (),
        extra_fields: dict[str, Any] | None = None,
    ) -> bool:
        """Create a run directly (no router) with optional memoized steps; enqueue it.

        Used for replays and reruns. Returns False if ``run_id`` already exists.
        """
        fields = new_run_fields(
            fn.fn_id, fn.app_id, fn.key, event,
            event_ids=[event.get("id")] if event.get("id") else [], created=repr(time.time()),
            parent_run_id=parent_run_id, creation=fn.creation_fields(),
        )
        for rec in steps:
            fields[step_field(rec.id)] = dumps(rec.to_json())
        fields.update(extra_fields or {})
        now = time.time()
        if fn.flow.at_start:  # priority, start deadline, cancel listeners (no admission gates)
            self.flow.decorate(fn, event, fields, now)
        ((_rid, created, enqueue),) = self.store.create_runs([(run_id, fn.key, fields)])
        if created:
            self.flow.listen(fn, run_id, event, fields, now)
        if enqueue:
            self.enqueue(fn.key, run_id, 0)
        return created

    def cancel(self, run_id: str, reason: str = "cancelled by request") -> str:
        """Cancel a run between steps; returns 'cancelled', 'flagged', 'ended' or 'missing'."""
        return endings.cancel(self, run_id, reason)


def get_runtime(app: Any) -> Runtime | None:
    """The runtime fanout keeps for ``app`` (a Celery app), or ``None`` when no fanout
    client was created on it."""
    with _runtimes_lock:
        rt = _runtimes.get(id(app))
    return rt if rt is not None and rt.app is app else None


def runtime_for(
    app: Celery, redis_url: str, *, recovery_timeout: float, retention: float
) -> Runtime:
    with _runtimes_lock:
        rt = _runtimes.get(id(app))
        if rt is None or rt.app is not app:
            rt = Runtime(app, redis_url, recovery_timeout=recovery_timeout, retention=retention)
            _runtimes[id(app)] = rt
        elif rt.redis_url != redis_url:
            raise ConfigError(
                f"two fanout clients on one Celery app use different Redis URLs "
                f"({rt.redis_url!r} and {redis_url!r})"
            )
        return rt
