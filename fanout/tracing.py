"""OpenTelemetry tracing for fanout (``pip install 'celery-fanout[otel]'``).

Call :func:`instrument` once where your client is created, so both the
processes that send events and the workers run it::

    import fanout.tracing
    fanout.tracing.instrument()          # uses the global tracer provider

Spans: ``fanout.send`` (emit / send_event), ``fanout.route``, ``fanout.run``
(one per pass) and ``fanout.step``; context travels in Celery message headers,
so a fan-out from one run is one trace.
"""

from ._celery.tracing import instrument, is_instrumented, uninstrument

__all__ = ["instrument", "is_instrumented", "uninstrument"]
