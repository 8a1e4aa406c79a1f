"""OpenTelemetry tracing through real Celery messages (Redis broker and store, a
worker in this process so an in-memory exporter sees every span): a fan-out
from one run, including a retried child step, is one trace."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed")

from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

import fanout  # noqa: E402
from fanout._celery import tracing as _tracing  # noqa: E402
from fanout.embedded import start_embedded_worker  # noqa: E402
from tests.support import make_app, redis_for, run_of, wait_for, wait_run  # noqa: E402

app, client = make_app(__name__, app_id="traced")
N_CHILDREN = 3


@client.create_function(fn_id="parent", trigger=fanout.TriggerEvent(event="trace/start"))
def parent(ctx: fanout.ContextSync) -> int:
    n = ctx.step.run("prepare", lambda: N_CHILDREN)
    ctx.step.send_event("fan-out", [fanout.Event(name="trace/child", data={"i": i})
                                    for i in range(n)])
    ctx.step.run("after", lambda: "ok")
    return n


def flaky(i: int) -> int:
    # The first attempt of each child's step fails: its retry is published by the
    # timer thread, which has no trace context of its own.
    if redis_for(__name__).incr(f"side:flaky:{i}") == 1:
        raise RuntimeError(f"transient failure {i}")
    return i * 10


@client.create_function(fn_id="child", trigger=fanout.TriggerEvent(event="trace/child"))
def child(ctx: fanout.ContextSync) -> int:
    return int(ctx.step.run("work", flaky, ctx.event.data["i"]))


@pytest.fixture(scope="module")
def exporter(clean_db: object) -> Iterator[InMemorySpanExporter]:
    exp = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exp))
    _tracing.instrument(provider)
    try:
        with start_embedded_worker(app, concurrency=4):
            yield exp
    finally:
        _tracing.uninstrument()


def _by_name(spans: list[ReadableSpan], prefix: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith(prefix)]


def test_fan_out_from_one_run_is_one_trace(exporter: InMemorySpanExporter) -> None:
    tracer = TracerProvider().get_tracer("test")  # a caller's own span, e.g. a web request
    exporter.clear()
    with tracer.start_as_current_span("POST /orders") as request_span:
        eid = client.emit("trace/start", {"order": 1})
    trace_id = request_span.get_span_context().trace_id
    run = wait_run(client, run_of(client, eid, "parent"))
    assert run.status == "completed"
    children = wait_for(lambda: [r for e in run.steps[1].output
                                 for r in client.list_runs(event_id=e)], timeout=30)
    for c in children:
        assert wait_run(client, c.run_id).status == "completed"

    def all_spans() -> list[ReadableSpan] | None:
        spans = list(exporter.get_finished_spans())
        ok = len(_by_name(spans, "fanout.step work")) >= 2 * N_CHILDREN
        return spans if ok and len(_by_name(spans, "fanout.run traced:child")) >= 2 * N_CHILDREN else None

    spans = wait_for(all_spans, timeout=20)
    mine = [s for s in spans if s.context.trace_id == trace_id]
    names = sorted({s.name for s in mine})
    # emit, route, run and step spans, all in the caller's trace
    for expected in ("fanout.send", "fanout.route", "fanout.run traced:parent",
                     "fanout.run traced:child", "fanout.step prepare", "fanout.step fan-out",
                     "fanout.step after", "fanout.step work"):
        assert expected in names, (expected, names)
    stray = [s.name for s in spans if s.context.trace_id != trace_id]
    assert stray == [], f"spans outside the trace: {stray}"
    # The fan-out: one send from the parent's step, routed once, starting 3 child runs.
    sends = _by_name(mine, "fanout.send")
    assert len(sends) == 2  # the emit, and the parent's send_event
    routes = _by_name(mine, "fanout.route")
    assert len(routes) == 2
    child_runs = {s.attributes["fanout.run_id"] for s in _by_name(mine, "fanout.run traced:child")}
    assert child_runs == {c.run_id for c in children}
    # Each child's failed attempt and its retry (published by the timer thread).
    works = _by_name(mine, "fanout.step work")
    failed = [s for s in works if s.status.status_code == trace.StatusCode.ERROR]
    assert len(failed) == N_CHILDREN
    assert all("transient failure" in (s.status.description or "") for s in failed)
    # Parent links: step spans sit in their pass; passes of a run share one parent.
    by_id = {s.context.span_id: s for s in mine}
    for s in _by_name(mine, "fanout.step"):
        assert s.parent is not None and by_id[s.parent.span_id].name.startswith("fanout.run")
    for rid in child_runs:
        passes = [s for s in mine if s.attributes and s.attributes.get("fanout.run_id") == rid
                  and s.name.startswith("fanout.run")]
        assert len({p.parent.span_id for p in passes if p.parent}) == 1, rid
    # The child runs hang under the parent's send_event, which is inside the parent's pass.

    def ancestors(span: ReadableSpan) -> list[str]:
        out = []
        while span.parent is not None and span.parent.span_id in by_id:
            span = by_id[span.parent.span_id]
            out.append(span.name)
        return out

    assert [ancestors(r) for r in routes] == [
        ["fanout.send"], ["fanout.send", "fanout.run traced:parent", "fanout.route", "fanout.send"]]
    child_route = routes[1]
    assert child_route.attributes["fanout.event_count"] == N_CHILDREN


def test_uninstrumented_sends_carry_no_context(exporter: InMemorySpanExporter) -> None:
    _tracing.uninstrument()
    try:
        exporter.clear()
        eid = client.emit("trace/other")
        assert eid
        assert not _tracing.is_instrumented()
        assert list(exporter.get_finished_spans()) == []
    finally:
        _tracing.instrument(exporter_provider(exporter))


def exporter_provider(exp: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exp))
    return provider
