"""The Prometheus exporter: a ``prometheus_client`` collector over the store's counts.

The counts live in Redis (``fanout/_redis/metrics_store.py``), so every scrape of any
process that can reach the store sees the whole fleet. The collector reads them
on each scrape (one round trip) and yields standard metric families; nothing is
counted in the scraping process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .._errors import ConfigError
from .._redis.metrics_store import HISTOGRAMS, MetricsSnapshot, read_metrics

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from .._redis.store import Store

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_HIST_HELP = {
    "run_duration": "Time from a run's creation to its end, by function",
    "step_duration": "Execution time of one attempt of a run or send_event step",
    "queue_delay": "Time from when a pass of a run could start to when a worker began it",
}


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise ConfigError(
            "the metrics endpoint needs prometheus_client: pip install 'celery-fanout[metrics]'"
        ) from None
    return prometheus_client


class FanoutCollector:
    """A ``prometheus_client`` collector: register it on any registry.

    ``store`` is a Store or a callable returning one (a runtime's store reconnects
    after a fork, so pass ``lambda: runtime.store``).
    """

    def __init__(self, store: Store | Callable[[], Store]) -> None:
        self._store = store

    def store(self) -> Store:
        return self._store() if callable(self._store) else self._store

    def snapshot(self) -> MetricsSnapshot:
        return read_metrics(self.store())

    def describe(self) -> list[Any]:
        return []  # unchecked collector: the families depend on the store's contents

    def collect(self) -> Iterator[Any]:
        _prometheus()
        import prometheus_client.core as core
        snap = self.snapshot()
        fn_labels = ["app", "fn"]
        started = core.CounterMetricFamily(
            "fanout_runs_started", "Runs created (by an event, cron tick, invoke, replay or rerun)",
            labels=fn_labels)
        ended = core.CounterMetricFamily(
            "fanout_runs_ended", "Runs that reached an end, by status (completed, failed, "
            "cancelled, skipped)", labels=[*fn_labels, "status"])
        attempts = core.CounterMetricFamily(
            "fanout_step_attempts", "Executed attempts of run and send_event steps",
            labels=fn_labels)
        failures = core.CounterMetricFamily(
            "fanout_step_failures", "Step attempts that raised (retried or not)", labels=fn_labels)
        events = core.CounterMetricFamily(
            "fanout_events_received", "Events stored by send, emit and send_event, by name",
            labels=["name"])
        for family, name in ((started, "runs_started"), (ended, "runs_ended"),
                             (attempts, "step_attempts"), (failures, "step_failures"),
                             (events, "events")):
            for labels, value in sorted(snap.counters.get(name, {}).items()):
                family.add_metric(list(labels), value)
            yield family
        for name in HISTOGRAMS:
            hist = core.HistogramMetricFamily(
                f"fanout_{name}_seconds", _HIST_HELP[name], labels=fn_labels)
            for labels, series in sorted(snap.histograms.get(name, {}).items()):
                hist.add_metric(list(labels), [(le, float(n)) for le, n in series.cumulative()],
                                series.sum)
            yield hist
        yield core.GaugeMetricFamily(
            "fanout_timers", "Timers armed in the store (sleeps, retries, waits, watchdogs)",
            value=snap.timers)
        yield core.GaugeMetricFamily(
            "fanout_timers_overdue", "Timers already due that no worker has claimed yet",
            value=snap.timers_overdue)
        yield core.GaugeMetricFamily(
            "fanout_timer_oldest_overdue_seconds",
            "How long the oldest overdue timer has been due (0 when none is)",
            value=snap.oldest_overdue_age)
        yield core.GaugeMetricFamily(
            "fanout_metrics_counting", "1 when the store counts runs and steps (0 with "
            "fanout_metrics = False, or on a Redis Cluster older than 7.0)", value=1 if snap.enabled else 0)


def registry_for(store: Store | Callable[[], Store]) -> CollectorRegistry:
    """A registry holding only fanout's collector."""
    reg: CollectorRegistry = _prometheus().CollectorRegistry(auto_describe=False)
    reg.register(FanoutCollector(store))
    return reg


def render(registry: CollectorRegistry) -> bytes:
    """The registry in Prometheus's text format."""
    data: bytes = _prometheus().generate_latest(registry)
    return data


def wsgi_app(store: Store | Callable[[], Store]) -> Callable[..., Any]:
    """A WSGI app serving the metrics at any path (mount it where you like)."""
    app: Callable[..., Any] = _prometheus().make_wsgi_app(registry_for(store))
    return app


def serve(store: Store | Callable[[], Store], *, host: str = "127.0.0.1", port: int = 9808) -> Any:
    """A server for the metrics (``fanout metrics``): call ``serve_forever()``."""
    from .._http.wsgi_server import Server

    return Server(wsgi_app(store), host, port, threads=2, name="fanout-metrics")


__all__ = ["CONTENT_TYPE", "FanoutCollector", "registry_for", "render", "serve", "wsgi_app"]
