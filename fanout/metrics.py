"""Prometheus metrics for the whole fleet of workers, read from the store.

Counts are kept in Redis, so one scrape of any process that reaches the store sees
every worker on every machine: the counters by the scripts every pass already runs,
the duration histograms by each worker process, which sends its observations once a
second (``fanout_metrics_interval``). Requires
``pip install 'celery-fanout[metrics]'`` (``prometheus_client``)::

    import fanout.metrics

    app = fanout.metrics.wsgi_app(client)          # mount under /metrics in any WSGI server
    fanout.metrics.register(client)                # or add to prometheus_client's REGISTRY

The dashboard serves the same at ``/metrics``; ``fanout metrics --port 9808`` serves
it alone. docs/howto/observability.md lists the metrics and queries for Grafana.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._client import Fanout
from ._errors import ConfigError
from ._ops.prometheus import CONTENT_TYPE, FanoutCollector, registry_for, render
from ._ops.prometheus import wsgi_app as _wsgi_app
from ._redis.metrics_store import MetricsSnapshot, read_metrics
from ._redis.store import Store


def _store_of(source: Any) -> Callable[[], Store]:
    if isinstance(source, Fanout):
        rt = source.runtime
        return lambda: rt.store
    from ._celery.runtime import get_runtime

    rt_ = get_runtime(source)
    if rt_ is None:
        raise ConfigError(
            f"{source!r} is neither a fanout.Fanout client nor a Celery app with one; "
            "pass the client you created with fanout.Fanout(...)"
        )
    return lambda: rt_.store


def collector(source: Any) -> FanoutCollector:
    """A ``prometheus_client`` collector for a client (or its Celery app)."""
    return FanoutCollector(_store_of(source))


def register(source: Any, registry: Any = None) -> FanoutCollector:
    """Register fanout's collector on ``registry`` (prometheus_client's default
    ``REGISTRY`` when None), so an existing ``/metrics`` endpoint includes it."""
    found = collector(source)
    if registry is None:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    registry.register(found)
    return found


def wsgi_app(source: Any) -> Callable[..., Any]:
    """A WSGI app answering every request with fanout's metrics."""
    return _wsgi_app(_store_of(source))


def generate(source: Any) -> tuple[bytes, str]:
    """(body, content type) of one scrape, for any web framework's view."""
    return render(registry_for(_store_of(source))), CONTENT_TYPE


def snapshot(source: Any) -> MetricsSnapshot:
    """The counts as plain Python values (no prometheus_client needed)."""
    return read_metrics(_store_of(source)())


__all__ = ["MetricsSnapshot", "collector", "generate", "instrument_otel", "register", "snapshot",
           "wsgi_app"]


def instrument_otel(source: Any, meter_provider: Any = None) -> list[Any]:
    """The same counts as OpenTelemetry observable instruments (``otel`` extra), read
    from the store when a reader collects: ``fanout.runs.started``,
    ``fanout.runs.ended`` (with ``status``), ``fanout.step.attempts``,
    ``fanout.step.failures`` and ``fanout.events.received`` (with ``event``) as counters
    with ``app`` and ``function`` attributes; ``fanout.timers``,
    ``fanout.timers.overdue`` and ``fanout.timers.oldest_overdue_age`` (s) as gauges;
    each histogram as ``<name>.count`` and ``<name>.sum`` (s) counters (OpenTelemetry has
    no observable histogram). Returns the instruments."""
    try:
        from opentelemetry import metrics as otel
    except ImportError:
        raise ConfigError(
            "OpenTelemetry metrics need the otel extra: pip install 'celery-fanout[otel]'"
        ) from None
    import threading
    import time

    store = _store_of(source)
    meter = (meter_provider or otel.get_meter_provider()).get_meter("fanout")
    lock = threading.Lock()
    cached: list[Any] = [0.0, None]

    def snap() -> MetricsSnapshot:
        with lock:  # one store read per collection, however many instruments ask
            if cached[1] is None or time.monotonic() - cached[0] > 1.0:
                cached[:] = [time.monotonic(), read_metrics(store())]
            return cached[1]  # type: ignore[no-any-return]

    def counter_cb(name: str, keys: tuple[str, ...]) -> Callable[[Any], list[Any]]:
        def observe(_options: Any) -> list[Any]:
            return [otel.Observation(v, dict(zip(keys, labels, strict=False)))
                    for labels, v in snap().counters.get(name, {}).items()]
        return observe

    def hist_cb(name: str, part: str) -> Callable[[Any], list[Any]]:
        def observe(_options: Any) -> list[Any]:
            out = []
            for (app, fn), h in snap().histograms.get(name, {}).items():
                value = h.sum if part == "sum" else sum(h.buckets.values())
                out.append(otel.Observation(value, {"app": app, "function": fn}))
            return out
        return observe

    def gauge_cb(attr: str) -> Callable[[Any], list[Any]]:
        return lambda _options: [otel.Observation(getattr(snap(), attr))]

    fn_keys = ("app", "function")
    made = [
        meter.create_observable_counter("fanout.runs.started",
                                        [counter_cb("runs_started", fn_keys)], unit="{run}"),
        meter.create_observable_counter("fanout.runs.ended",
                                        [counter_cb("runs_ended", (*fn_keys, "status"))],
                                        unit="{run}"),
        meter.create_observable_counter("fanout.step.attempts",
                                        [counter_cb("step_attempts", fn_keys)], unit="{attempt}"),
        meter.create_observable_counter("fanout.step.failures",
                                        [counter_cb("step_failures", fn_keys)], unit="{attempt}"),
        meter.create_observable_counter("fanout.events.received",
                                        [counter_cb("events", ("event",))], unit="{event}"),
        meter.create_observable_gauge("fanout.timers", [gauge_cb("timers")], unit="{timer}"),
        meter.create_observable_gauge("fanout.timers.overdue", [gauge_cb("timers_overdue")],
                                      unit="{timer}"),
        meter.create_observable_gauge("fanout.timers.oldest_overdue_age",
                                      [gauge_cb("oldest_overdue_age")], unit="s"),
    ]
    for name in ("run_duration", "step_duration", "queue_delay"):
        dotted = "fanout." + name.replace("_", ".")
        made.append(meter.create_observable_counter(f"{dotted}.count", [hist_cb(name, "count")]))
        made.append(meter.create_observable_counter(f"{dotted}.sum", [hist_cb(name, "sum")],
                                                    unit="s"))
    return made
