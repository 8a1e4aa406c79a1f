"""OpenTelemetry tracing (optional: ``pip install 'celery-fanout[otel]'``).

Call :func:`instrument` once in the module that creates your client (so both
the processes that send events and the workers run it).  It hooks Celery's
signals, so no fanout code path changes:

``fanout.send`` (PRODUCER)
    each publish of a router message: ``emit``/``send_sync``/``invoke`` in your
    code, and ``ctx.step.send_event``/``invoke`` inside a run.  Its context goes
    into the message headers (W3C ``traceparent``).
``fanout.route`` (CONSUMER)
    the router task turning events into runs; child of the send.  A send routed
    in the sending process (``route_in_sender``) makes the same two spans there,
    the route one INTERNAL with ``fanout.routed_in_sender``.
``fanout.run <app:fn>`` (CONSUMER)
    one per pass of a run (one ``fanout.step`` Celery task).  All the passes of
    a run are children of the span that created the run (the route, or the
    replay), so a run reads as a row of passes rather than a deep chain.
``fanout.step <step id>`` (INTERNAL)
    each step executed in the pass, built after the pass from the step records
    it wrote (exact start and end times, attempts, error).

A run's creating context is also kept in Redis (``<prefix>:trace:{run id}``,
with the retention TTL) for passes published by the timer thread (sleeps,
delayed retries, recovery), which have no context of their own.  Together this
makes a fan-out, from the first ``emit`` through every run its steps' events
start, one trace.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from celery import signals

from .._core.run_record import ST, step_records
from . import routing

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.propagators.textmap import Getter
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "fanout tracing needs OpenTelemetry: pip install 'celery-fanout[otel]'"
    ) from exc

TRACER_NAME = "fanout"
_TASKS = ("fanout.route", "fanout.step", "fanout.cron")
_MAX_PENDING = 10_000


class _RequestGetter(Getter[Any]):
    """Reads propagation headers from a Celery task request (headers become attributes)."""

    def get(self, carrier: Any, key: str) -> list[str] | None:
        value = getattr(carrier, key, None)
        if value is None and isinstance(getattr(carrier, "headers", None), Mapping):
            value = carrier.headers.get(key)
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Any) -> list[str]:
        return []


_GETTER = _RequestGetter()


@dataclass
class _Active:
    span: trace.Span
    token: object
    root: otel_context.Context
    task: str
    run_id: str | None = None
    fn_key: str | None = None
    started: float = 0.0


_pass: ContextVar[_Active | None] = ContextVar("fanout_pass", default=None)


def _args(args: Any, kwargs: Any, names: tuple[str, ...]) -> dict[str, Any]:
    out = dict(zip(names, args or (), strict=False))
    out.update(kwargs or {})
    return out


def _has_span(ctx: otel_context.Context) -> bool:
    return trace.get_current_span(ctx).get_span_context().is_valid


class _Instrumentation:
    def __init__(self, provider: trace.TracerProvider | None) -> None:
        from .._version import __version__

        self.tracer = trace.get_tracer(TRACER_NAME, __version__, tracer_provider=provider)
        self._sends: dict[str, trace.Span] = {}
        self._active: dict[str, _Active] = {}
        self._lock = threading.Lock()

    def connect(self) -> None:
        signals.before_task_publish.connect(self.before_publish, weak=False,
                                            dispatch_uid="fanout-otel-before")
        signals.after_task_publish.connect(self.after_publish, weak=False,
                                           dispatch_uid="fanout-otel-after")
        signals.task_prerun.connect(self.prerun, weak=False, dispatch_uid="fanout-otel-prerun")
        signals.task_postrun.connect(self.postrun, weak=False, dispatch_uid="fanout-otel-postrun")

    @contextmanager
    def sender_route(self, ids: Sequence[str], parent_run_id: str | None,
                     target: str | None) -> Iterator[None]:
        """Routing in the sender: the ``fanout.send`` and ``fanout.route`` spans a
        router message and its task would have made, in the sending process."""
        attrs: dict[str, Any] = {"messaging.system": "celery", "fanout.event_count": len(ids),
                                 "fanout.event_ids": [str(i) for i in ids[:20]]}
        if parent_run_id:
            attrs["fanout.parent_run_id"] = parent_run_id
        if target:
            attrs["fanout.target"] = target
        send = self.tracer.start_span("fanout.send", kind=SpanKind.PRODUCER, attributes=attrs)
        send_ctx = trace.set_span_in_context(send)
        route = self.tracer.start_span(
            "fanout.route", context=send_ctx, kind=SpanKind.INTERNAL,
            attributes={"fanout.event_count": len(ids), "fanout.routed_in_sender": True,
                        **({"fanout.target": target} if target else {})})
        token = otel_context.attach(trace.set_span_in_context(route, send_ctx))
        try:
            yield
        finally:
            otel_context.detach(token)
            route.end()
            send.end()

    def disconnect(self) -> None:
        signals.before_task_publish.disconnect(dispatch_uid="fanout-otel-before")
        signals.after_task_publish.disconnect(dispatch_uid="fanout-otel-after")
        signals.task_prerun.disconnect(dispatch_uid="fanout-otel-prerun")
        signals.task_postrun.disconnect(dispatch_uid="fanout-otel-postrun")

    # -- publishing -----------------------------------------------------------------

    def before_publish(self, sender: Any = None, body: Any = None, headers: Any = None,
                       **_: Any) -> None:
        if sender not in _TASKS or not isinstance(headers, dict):
            return
        args, kwargs = (body[0], body[1]) if isinstance(body, (tuple, list)) and len(body) >= 2 else ((), {})
        if sender == "fanout.route":
            a = _args(args, kwargs, ("event_ids",))
            ids = list(a.get("event_ids") or [])
            attrs: dict[str, Any] = {"messaging.system": "celery", "fanout.event_count": len(ids),
                                     "fanout.event_ids": [str(i) for i in ids[:20]]}
            for key in ("parent_run_id", "target"):
                if a.get(key):
                    attrs[f"fanout.{key}"] = str(a[key])
            span = self.tracer.start_span("fanout.send", kind=SpanKind.PRODUCER, attributes=attrs)
            propagate.inject(headers, context=trace.set_span_in_context(span))
            task_id = str(headers.get("id", ""))
            with self._lock:
                if len(self._sends) >= _MAX_PENDING:
                    self._sends.pop(next(iter(self._sends))).end()
                self._sends[task_id] = span
            return
        ctx: otel_context.Context | None = None
        cur = _pass.get()
        if sender == "fanout.step" and cur is not None and cur.task == "fanout.step":
            a = _args(args, kwargs, ("fn", "run_id", "seq", "branch"))
            if a.get("run_id") == cur.run_id:
                ctx = cur.root  # the run's next pass: a sibling, not a child, of this one
        propagate.inject(headers, context=ctx)

    def after_publish(self, sender: Any = None, headers: Any = None, **_: Any) -> None:
        if sender != "fanout.route" or not isinstance(headers, dict):
            return
        with self._lock:
            span = self._sends.pop(str(headers.get("id", "")), None)
        if span is not None:
            span.end()

    # -- executing ------------------------------------------------------------------

    def _runtime(self, task: Any) -> Any:
        from .runtime import get_runtime

        return get_runtime(getattr(task, "app", None))

    def _root_for(self, task: Any, run_id: str, seq: Any, ctx: otel_context.Context) -> otel_context.Context:
        rt = self._runtime(task)
        if rt is None:
            return ctx
        store = rt.store
        try:
            if _has_span(ctx):
                if seq in (0, "0"):
                    carrier: dict[str, str] = {}
                    propagate.inject(carrier, context=ctx)
                    store.save_trace_context(run_id, json.dumps(carrier), int(rt.retention))
                return ctx
            raw = store.trace_context(run_id)
        except Exception:  # noqa: BLE001 - tracing must never break a run
            return ctx
        if not raw:
            return ctx
        return propagate.extract(json.loads(raw))

    def prerun(self, sender: Any = None, task_id: str | None = None, task: Any = None,
               args: Any = None, kwargs: Any = None, **_: Any) -> None:
        name = getattr(task, "name", None)
        if name not in _TASKS:
            return
        ctx = propagate.extract(getattr(task, "request", None), getter=_GETTER)
        attrs: dict[str, Any] = {"messaging.system": "celery", "celery.task_id": str(task_id)}
        run_id = fn_key = None
        if name == "fanout.step":
            a = _args(args, kwargs, ("fn", "run_id", "seq", "branch"))
            run_id, fn_key = str(a.get("run_id")), str(a.get("fn"))
            ctx = self._root_for(task, run_id, a.get("seq"), ctx)
            attrs.update({"fanout.run_id": run_id, "fanout.function": fn_key})
            if a.get("seq") is not None:
                attrs["fanout.pass"] = int(a["seq"])
            if a.get("branch"):
                attrs["fanout.branch"] = str(a["branch"])
            span_name = f"fanout.run {fn_key}"
        elif name == "fanout.route":
            a = _args(args, kwargs, ("event_ids",))
            attrs["fanout.event_count"] = len(a.get("event_ids") or [])
            if a.get("target"):
                attrs["fanout.target"] = str(a["target"])
            span_name = "fanout.route"
        else:
            span_name = "fanout.cron"
        span = self.tracer.start_span(span_name, context=ctx, kind=SpanKind.CONSUMER,
                                      attributes=attrs)
        token = otel_context.attach(trace.set_span_in_context(span, ctx))
        active = _Active(span, token, ctx, name, run_id, fn_key, time.time())
        _pass.set(active)
        with self._lock:
            self._active[str(task_id)] = active

    def postrun(self, sender: Any = None, task_id: str | None = None, task: Any = None,
                state: str | None = None, **_: Any) -> None:
        with self._lock:
            active = self._active.pop(str(task_id), None)
        if active is None:
            return
        try:
            if active.task == "fanout.step" and active.run_id:
                self._step_spans(task, active)
            if state and state not in ("SUCCESS", "RETRY"):
                active.span.set_status(Status(StatusCode.ERROR, f"task {state}"))
        except Exception:  # noqa: BLE001 - tracing must never break a run
            pass
        finally:
            active.span.end()
            try:
                otel_context.detach(active.token)  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001 - a context from another thread
                pass
            _pass.set(None)

    def _step_spans(self, task: Any, active: _Active) -> None:
        rt = self._runtime(task)
        if rt is None or active.run_id is None:
            return
        fields = rt.store.run_fields(active.run_id)
        status = fields.get(ST)
        if status:
            active.span.set_attribute("fanout.run.status", status)
            if status == "failed":
                active.span.set_status(Status(StatusCode.ERROR, "run failed"))
        parent = trace.set_span_in_context(active.span)
        since = active.started - 0.001
        for rec in step_records(fields).values():
            t0, t1 = rec.started_at, rec.ended_at
            if not ((t0 and t0 >= since) or (t1 and t1 >= since)):
                continue
            start = t0 or t1
            assert start is not None
            attrs: dict[str, Any] = {
                "fanout.step_id": rec.id, "fanout.step.kind": rec.kind,
                "fanout.step.status": rec.status, "fanout.step.attempts": int(rec.attempts),
                "fanout.run_id": active.run_id,
            }
            if rec.queued_at and t0:
                attrs["fanout.step.queue_delay_ms"] = round((t0 - rec.queued_at) * 1000, 3)
            span = self.tracer.start_span(f"fanout.step {rec.id}", context=parent,
                                          start_time=int(start * 1e9), attributes=attrs)
            err = rec.error
            if err:
                span.set_status(Status(StatusCode.ERROR, f"{err.get('type')}: {err.get('message')}"))
                span.add_event("exception", {"exception.type": str(err.get("type")),
                                             "exception.message": str(err.get("message"))})
            span.end(end_time=int((t1 or start) * 1e9))


_state: _Instrumentation | None = None
_state_lock = threading.Lock()


def instrument(tracer_provider: trace.TracerProvider | None = None) -> None:
    """Trace fanout's sends, routing, runs and steps (idempotent)."""
    global _state
    with _state_lock:
        if _state is not None:
            return
        _state = _Instrumentation(tracer_provider)
        _state.connect()
        routing.tracing_hook = _state.sender_route


def uninstrument() -> None:
    global _state
    with _state_lock:
        if _state is not None:
            _state.disconnect()
            routing.tracing_hook = None
            _state = None


def is_instrumented() -> bool:
    return _state is not None


__all__ = ["instrument", "is_instrumented", "uninstrument"]
