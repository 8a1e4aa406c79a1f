"""Installing fanout on a Celery app: the runtime, the tasks, the worker's signals.

:func:`runtime_for` makes the one :class:`Runtime` of an app (or returns it): it
registers the tasks (``tasks.py``), the periodic jobs every worker runs (the
history pruning, the stuck-run watchdog) and the worker signals that check the
app's settings, start and stop the timer thread, and send the buffered histogram
observations as a process leaves.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, signals

from .._errors import ConfigError
from .._redis.declared import REFRESH_S
from .._redis.history import History
from . import endings, history_copy, routing, tasks
from .runtime import Runtime, _runtimes, _runtimes_lock

log = logging.getLogger("fanout")


def runtime_for(
    app: Celery, redis_url: str, *, recovery_timeout: float, retention: float
) -> Runtime:
    with _runtimes_lock:
        rt = _runtimes.get(id(app))
        if rt is None or rt.app is not app:
            rt = Runtime(app, redis_url, recovery_timeout=recovery_timeout, retention=retention)
            _install(rt)
            _runtimes[id(app)] = rt
        elif rt.redis_url != redis_url:
            raise ConfigError(
                f"two fanout clients on one Celery app use different Redis URLs "
                f"({rt.redis_url!r} and {redis_url!r})"
            )
        return rt


def _install(rt: Runtime) -> None:
    tasks.register(rt)
    # Routing in the sender, and what every worker declares for it (declared.py).
    rt.publisher.sender = routing.SenderRouting(rt)
    rt.timers.add_periodic("fanout-declared", lambda: register_declared(rt), REFRESH_S,
                           at_start=True)
    # Trim history indexes past the retention about once an hour in each worker.
    rt.timers.add_periodic(
        "fanout-history-prune", lambda: History(rt.store).prune(), 3600.0, at_start=False
    )
    # Index the runs created before the status, version and search indexes, once per
    # store (a lock and a done-mark in the store: every later start does nothing).
    rt.timers.add_periodic(
        "fanout-history-reindex", lambda: History(rt.store).reindex(), 86400.0, at_start=True
    )
    # The watchdog: fail runs that nothing will move (seen stuck twice, a minute apart).
    rt.timers.add_periodic(
        "fanout-stuck-runs", lambda: endings.check_stuck(rt, min_age=60.0), 60.0,
        at_start=False,
    )
    _Signals(rt).connect()


def register_declared(rt: Runtime) -> int:
    """Write this worker's functions to the registry senders check before routing
    their own events; returns how many stale entries it dropped."""
    sender = rt.publisher.sender
    entries = sender.entries() if isinstance(sender, routing.SenderRouting) else set()
    return rt.store.declared.register(sorted(entries))


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


_DEPLOYMENT_GUIDE = "https://github.com/fanout-dev/celery-fanout/blob/main/docs/howto/deployment.md#a-redis-broker-beside-the-store"


def _redis_place(url: str) -> tuple[str, str] | None:
    """``(server, database)`` of a Redis URL (broker or store), None for anything else."""
    from urllib.parse import parse_qsl, urlsplit

    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        query = dict(parse_qsl(parts.query))
        if scheme in ("unix", "redis+socket"):
            return f"unix:{parts.path}", query.get("db") or query.get("virtual_host") or "0"
        if scheme not in ("redis", "rediss", "redis+cluster", "rediss+cluster"):
            return None
        host = (parts.hostname or "localhost").lower()
        host = "localhost" if host in ("127.0.0.1", "::1", "localhost") else host
        return f"{host}:{parts.port or 6379}", parts.path.strip("/") or query.get("db") or "0"
    except ValueError:
        return None


def shared_redis_warning(app: Celery, store_url: str) -> str | None:
    """A warning when the Celery broker and fanout's store share a Redis server."""
    from kombu.utils.url import maybe_sanitize_url

    conf = app.conf
    brokers = conf.broker_write_url or conf.broker_url or ""
    store = _redis_place(store_url)
    if store is None or not isinstance(brokers, str):
        return None
    for broker_url in brokers.split(";"):
        broker = _redis_place(broker_url.strip())
        if broker is None or broker[0] != store[0]:
            continue
        where = "database" if broker[1] == store[1] else "server"
        return (f"the Celery broker ({maybe_sanitize_url(broker_url.strip())}) and fanout's "
                f"store ({maybe_sanitize_url(store_url)}) share one Redis {where}: a full or "
                "evicting Redis then stops both, and the store needs maxmemory-policy "
                "noeviction, which a broker backlog fills. Give the broker its own Redis "
                f"server or RabbitMQ: {_DEPLOYMENT_GUIDE}")
    return None


class _Signals:
    """The worker signals of one runtime."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.copier: Any = None

    def connect(self) -> None:
        # A dispatch_uid per runtime: Celery before 5.7 keys a bound method by its function
        # alone, so a second runtime in the process (a second app) would not be connected.
        uid = f"fanout.runtime.{id(self.rt)}"
        signals.worker_init.connect(self._on_worker_init, weak=False, dispatch_uid=f"{uid}.init")
        signals.worker_ready.connect(self._on_worker_ready, weak=False,
                                     dispatch_uid=f"{uid}.ready")
        signals.worker_shutting_down.connect(self._on_worker_stopping, weak=False,
                                             dispatch_uid=f"{uid}.stopping")
        signals.worker_shutdown.connect(self._on_worker_stop, weak=False,
                                        dispatch_uid=f"{uid}.stop")
        # A prefork child leaves with os._exit (no atexit): send its buffered
        # histogram observations as it goes.
        signals.worker_process_shutdown.connect(self._flush_observations, weak=False,
                                                dispatch_uid=f"{uid}.child-stop")

    def _mine(self, sender: Any) -> bool:
        app = getattr(sender, "app", None)
        return app is None or app is self.rt.app

    def _flush_observations(self, **_: Any) -> None:
        store = self.rt.store_if_here()
        if store is not None and store.observations:
            store.observations.close()

    def _on_worker_init(self, sender: Any = None, **_: Any) -> None:
        if self._mine(sender):
            try:
                check_serializers(self.rt.app)
            except ConfigError as exc:
                # Celery logs and ignores exceptions raised by signal handlers; a
                # worker that would move fanout's messages with pickle must not start.
                log.critical("fanout: %s", exc)
                raise SystemExit(f"fanout: {exc}") from None
            for warning in delivery_warnings(self.rt.app):
                log.warning("fanout: %s (or use app.config_from_object('fanout.celeryconfig'))",
                            warning)

    def _on_worker_ready(self, sender: Any = None, **_: Any) -> None:
        if self._mine(sender):
            # Here, not at worker_init: Celery's logging is set up by now, so this is a
            # WARNING record in the worker's log format.
            shared = shared_redis_warning(self.rt.app, self.rt.redis_url)
            if shared:
                log.warning("fanout: %s", shared)
            try:
                register_declared(self.rt)  # before the first message is taken
            except Exception as exc:  # noqa: BLE001 - the periodic job writes it again
                log.warning("fanout: could not register this worker's functions: %s", exc)
            self.rt.timers.start()
            # The PostgreSQL history store's copier (fanout_history_url), in the main
            # process only: a thread of its own, never in a pass.
            try:
                self.copier = history_copy.copier_for(self.rt)
            except ConfigError as exc:
                log.error("fanout: the history store is off: %s", exc)
                self.copier = None
            if self.copier is not None:
                self.copier.start()
            self._resume_bulk_jobs()

    def _resume_bulk_jobs(self) -> None:
        """Send the unfinished bulk jobs again: their message may have died with a
        worker (the extra deliveries stop at their first batch counted already)."""
        from .bulk_jobs import resend_unfinished

        try:
            n = resend_unfinished(self.rt)
        except Exception:  # noqa: BLE001 - the worker starts anyway; say why
            log.warning("fanout: could not resume the unfinished bulk jobs", exc_info=True)
            return
        if n:
            log.info("fanout: resumed %d unfinished bulk job(s)", n)

    def _on_worker_stopping(self, **_: Any) -> None:
        # Sent from the worker's signal handler, which under the gevent and eventlet
        # pools runs in the event loop itself, where waiting for a thread (a
        # greenlet there) cannot switch away: only ask the threads to stop.
        self.rt.timers.stop(wait=False)
        if self.copier is not None:
            self.copier.stop(wait=False)

    def _on_worker_stop(self, sender: Any = None, **_: Any) -> None:
        # Sent once the pool has stopped, from the worker's main flow: wait there
        # for a scan in progress to end.
        if self._mine(sender):
            self.rt.timers.stop()
            if self.copier is not None:
                self.copier.stop()
            self._flush_observations()
