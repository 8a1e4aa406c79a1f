"""Prometheus metrics for the whole fleet of workers, read from the store.

Counts are kept in Redis by the scripts every pass already runs, so one scrape of
any process that reaches the store sees every worker on every machine. Requires
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
from ._ops.metrics import CONTENT_TYPE, FanoutCollector, registry_for, render
from ._ops.metrics import wsgi_app as _wsgi_app
from ._redis.metrics import MetricsSnapshot, read_metrics
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


__all__ = ["MetricsSnapshot", "collector", "generate", "register", "snapshot", "wsgi_app"]
