"""The store's counts as OpenTelemetry instruments: a real worker runs a small
fan-out and a failing run; an SDK reader collecting from fanout.metrics.instrument_otel
sees the same numbers as the store."""

from __future__ import annotations

from typing import Any

import pytest

import fanout
import fanout.metrics
from fanout._redis.metrics_store import Histogram
from tests.support import make_app, run_of, wait_for, wait_run

app, client = make_app(__name__, app_id="otm")


@client.create_function(fn_id="greet", trigger=fanout.TriggerEvent(event="otm/user"))
def greet(ctx: fanout.ContextSync) -> str:
    return str(ctx.step.run("hello", lambda: "hi"))


@client.create_function(fn_id="doomed", trigger=fanout.TriggerEvent(event="otm/doomed"),
                        retries=0)
def doomed(ctx: fanout.ContextSync) -> None:
    def fail() -> None:
        raise fanout.NonRetriableError("no")

    ctx.step.run("fail", fail)


def _points(reader: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out.setdefault(m.name, []).extend(m.data.data_points)
    return out


def test_otel_instruments_report_the_store_counts(worker: object) -> None:
    pytest.importorskip("opentelemetry.sdk.metrics")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    ids = client.send_sync([fanout.Event(name="otm/user", data={"i": i}) for i in range(4)])
    for eid in ids:
        wait_run(client, run_of(client, eid, "greet"))
    (bad,) = client.send_sync(fanout.Event(name="otm/doomed"))
    assert wait_run(client, run_of(client, bad, "doomed")).status == "failed"

    # The worker processes send their histogram observations once a second.
    wait_for(lambda: fanout.metrics.snapshot(client).histograms["run_duration"]
             .get(("otm", "greet"), Histogram()).count == 4, timeout=10)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    fanout.metrics.instrument_otel(client, provider)
    points = _points(reader)

    def value(name: str, **attrs: str) -> float:
        return sum(p.value for p in points.get(name, [])
                   if all(p.attributes.get(k) == v for k, v in attrs.items()))

    assert value("fanout.runs.started", app="otm", function="greet") == 4
    assert value("fanout.runs.ended", app="otm", function="greet", status="completed") == 4
    assert value("fanout.runs.ended", app="otm", function="doomed", status="failed") == 1
    assert value("fanout.step.failures", app="otm", function="doomed") == 1
    assert value("fanout.events.received", event="otm/user") == 4
    assert value("fanout.run.duration.count", app="otm", function="greet") == 4
    assert "fanout.timers" in points
    snap = fanout.metrics.snapshot(client)
    assert snap.counter("runs_started", "otm", "greet") == 4  # the same numbers
    provider.shutdown()
