"""``ctx.step`` at run time: one implementation of the step tools for both kinds of handler.

Each tool does its bookkeeping once and hands the value to ``Pass.deliver``, which
returns it directly to a ``def`` handler or as an awaitable to an ``async def`` one;
a step's own handler may be ``def`` or ``async def`` either way.  What a type checker
sees of these tools is :class:`~fanout._core.step_types.StepSync` in a ``def`` handler
and :class:`~fanout._core.step_types.Step` in an ``async def`` one.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .._errors import ConfigError, InvokeError, NonRetriableError
from .durations import MAX_SECONDS, Duration, parse_duration
from .engine import FINAL, Op, Pass, invoke_async, invoke_sync
from .event import MAX_EVENT_BYTES, Event, prepare_batch
from .ids import derived_event_id
from .middleware import SendEventsResult
from .outcomes import BranchDone, Interrupt, Parallel, Sleep, Wait
from .types import dumping, output_codec

__all__ = ["StepTools"]

MAX_SLEEP_SECONDS = MAX_SECONDS

def _when(value: object) -> float:
    """Epoch seconds of a ``sleep_until`` target; a naive datetime is local time."""
    if isinstance(value, _dt.datetime):
        return value.timestamp()  # naive: local time, as datetime.timestamp() reads it
    if isinstance(value, str):
        try:
            return _when(_dt.datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            raise ConfigError(f"sleep_until: {value!r} is not an ISO 8601 datetime") from None
    raise ConfigError(
        f"sleep_until needs a datetime or an ISO 8601 string, not {type(value).__name__}"
    )


def _serializer(p: Pass) -> Any:
    """The client's ``serializer=`` (None: pydantic)."""
    return getattr(p.inp.client, "serializer", None)


class StepTools:
    """``ctx.step``: the step tools. In an ``async def`` handler each returns an awaitable."""

    def __init__(self, pass_: Pass) -> None:
        self._p = pass_

    # -- run ----------------------------------------------------------------------------

    def run(
        self, step_id: str, handler: Callable[..., Any], *args: Any, output_type: Any = None
    ) -> Any:
        """Run ``handler(*args)`` once, durably; return its (JSON) result, or with
        ``output_type`` (a pydantic model, a dataclass, ``list[Model]``...) its result
        stored as JSON and returned as that type."""
        p = self._p
        if not callable(handler):
            raise NonRetriableError(f"ctx.step.run({step_id!r}, ...): handler is not callable")
        dump, load = output_codec(output_type, f"step {step_id!r}", _serializer(p))
        op = p.open("run", step_id)
        if op.done:
            rec = op.memo
            return p.deliver(lambda: load(p.memo_value(rec)))  # type: ignore[arg-type]
        if p.collecting is not None and op.id != p.inp.branch:
            p.collecting.append(op)
            raise Planned()
        handler = dumping(handler, dump)
        if p.is_async:
            return self._run_async(op, handler, args, load)
        p.admit(op)
        return load(p.record(op, time.time(), invoke_sync(op, handler, args)))

    async def _run_async(self, op: Op, handler: Callable[..., Any], args: tuple[Any, ...],
                         load: Callable[[Any], Any]) -> Any:
        p = self._p
        await _settle(p, op)
        p.admit(op)
        started = time.time()
        return load(p.record(op, started, await invoke_async(op, handler, args)))

    # -- send_event ---------------------------------------------------------------------

    def send_event(self, step_id: str, events: Event | Iterable[Event]) -> Any:
        """Send one or more events as a memoized step; returns their ids."""
        p = self._p
        op = p.open("send_event", step_id)
        if op.done:
            rec = op.memo
            return p.deliver(lambda: p.memo_value(rec))  # type: ignore[arg-type]
        run_id = p.inp.run_id
        prepared = prepare_batch(
            events, id_for=lambda i: derived_event_id(run_id, op.id, i),
            max_bytes=getattr(p.sink, "max_event_bytes", MAX_EVENT_BYTES),
        )

        def send() -> tuple[bool, Any]:
            try:
                p.flush()
                batch = prepared
                if p.stack:
                    events_ = [ev for ev, _text in batch]
                    p.hook("before_send_events", events_)
                    batch = prepare_batch(events_)  # ids are set: only re-serialized
                ids = p.sink.send_events(op.id, batch)
                if p.stack:
                    p.hook("after_send_events", SendEventsResult(ids), reverse=True)
                return True, ids
            except Exception as exc:  # noqa: BLE001
                return False, exc

        if p.collecting is not None and op.id != p.inp.branch:
            p.collecting.append(op)
            raise Planned()
        if p.is_async:

            async def _send_async() -> Any:
                await _settle(p, op)
                p.admit(op)
                return p.record(op, time.time(), send())

            return _send_async()
        p.admit(op)
        return p.record(op, time.time(), send())

    # -- sleep ----------------------------------------------------------------------------

    def sleep(self, step_id: str, duration: Duration) -> Any:
        """Pause the run for ``duration`` without holding a worker.

        ``duration``: an int of milliseconds (as in inngest-py), a timedelta, or a
        string such as ``"30s"`` or ``"1h30m"``.
        """
        seconds = parse_duration(duration, "sleep duration")
        return self._sleep(step_id, lambda: time.time() + seconds)

    def sleep_until(self, step_id: str, when: _dt.datetime | str) -> Any:
        """Pause the run until ``when``: a datetime (a naive one is local time, as in
        inngest-py) or an ISO 8601 string."""
        until = _when(when)
        if until - time.time() > MAX_SLEEP_SECONDS:
            raise ConfigError(f"sleep_until {when!r} is more than a year away")
        return self._sleep(step_id, lambda: until)

    def _sleep(self, step_id: str, until: Callable[[], float]) -> Any:
        p = self._p
        op = self._pausing("sleep", step_id)
        if op.done:
            return p.deliver(lambda: None)

        def body() -> Any:
            rec = op.memo
            if rec is not None and rec.status == "sleeping":
                due = float((rec.extra or {}).get("until", 0))
                if due <= time.time() + 0.05:
                    done = p.new_record(op, status="completed", started_at=rec.started_at,
                                        ended_at=time.time(), extra=rec.extra)
                    return p.finish(op, done)
                raise Interrupt(Sleep(op.id, due))
            p.check_order(op)
            due = until()
            p.save(p.new_record(op, status="sleeping", started_at=time.time(),
                                extra={"until": due}))
            raise Interrupt(Sleep(op.id, due))

        return self._alone(op, body) if p.is_async else body()

    # -- wait_for_event --------------------------------------------------------------------

    def wait_for_event(
        self,
        step_id: str,
        *,
        event: str,
        timeout: Duration,
        if_exp: str | None = None,
        match: str | None = None,
        lookback: Duration | None = None,
    ) -> Any:
        """Wait for an event named ``event``; returns it, or None after ``timeout``.

        ``timeout`` and ``lookback`` are durations: an int of milliseconds (as in
        inngest-py), a timedelta, or a string such as ``"30s"``.
        """
        p = self._p
        seconds = parse_duration(timeout, "wait_for_event timeout")
        back = parse_duration(lookback, "wait_for_event lookback") if lookback is not None else 0.0
        if not isinstance(event, str) or not event:
            raise ConfigError("wait_for_event needs the event name to wait for")
        if if_exp is not None:
            from .expr import compile_expression

            compile_expression(if_exp, variables=("event", "async"), what="wait_for_event if_exp")
        if match is not None and (not isinstance(match, str) or not match):
            raise ConfigError("wait_for_event match must be a field path such as 'data.user_id'")
        op = self._pausing("wait", step_id)
        if op.done:
            done = op.memo
            return p.deliver(lambda: _as_event(done.output))  # type: ignore[union-attr]

        def body() -> Any:
            rec = op.memo
            if rec is not None and rec.status == "waiting":
                return _as_event(self._waited(op, rec.extra or {}))
            p.check_order(op)
            now = time.time()
            spec = {"event": event, "match": match, "if_exp": if_exp, "until": now + seconds,
                    "since": now - back}
            waiting = p.new_record(op, status="waiting", started_at=now, extra=spec)
            p.flush()
            found = p.sink.register_wait(op.id, {**spec, "seq": waiting.seq})
            if found is not None:
                waiting.status, waiting.output, waiting.ended_at = "completed", found, now
                return _as_event(p.finish(op, waiting))
            return _as_event(self._park(op, waiting))

        return self._alone(op, body) if p.is_async else body()

    def _waited(self, op: Op, extra: Mapping[str, Any]) -> Any:
        """A memoized wait that is still open: time out, or stop the pass again."""
        p = self._p
        until = float(extra.get("until", 0))
        if until <= time.time():
            rec = p.new_record(op, status="completed", output=None, ended_at=time.time(),
                               started_at=op.memo.started_at if op.memo else None, extra=dict(extra))
            if op.kind == "invoke":
                rec.status = "failed"
                rec.error = {"type": "InvokeTimeoutError",
                             "message": "timed out waiting for the invoked function to complete"}
            else:
                p.sink.drop_wait(op.id, str(extra.get("event", "")))
            return p.finish(op, rec)
        raise Interrupt(Wait(op.id, until))

    def _park(self, op: Op, rec: Any) -> Any:
        """Save a waiting record; if it was resolved meanwhile, go on with the result."""
        p = self._p
        stored = p.save(rec)
        if stored is not None and stored.status in FINAL:
            return p.finish(op, stored)
        raise Interrupt(Wait(op.id, float((rec.extra or {})["until"])))

    # -- invoke --------------------------------------------------------------------------------

    def invoke(
        self,
        step_id: str,
        *,
        function: Any,
        data: Mapping[str, Any] | None = None,
        timeout: Duration | None = None,
        output_type: Any = None,
    ) -> Any:
        """Run another function as a child run and return its output (validated as
        ``output_type`` when given).

        ``timeout``: an int of milliseconds (as in inngest-py), a timedelta, or a
        string such as ``"10m"``; without it the parent waits up to a year.

        A child that fails, times out or is unknown raises ``InvokeError``, a
        ``StepError`` (as in inngest-py) whose ``name``, ``message`` and ``stack`` are
        the child's error's (``InvokeTimeoutError`` after ``timeout``), and a
        ``NonRetriableError``: the child keeps its own retries, the parent does not
        multiply them.
        """
        p = self._p
        seconds = parse_duration(timeout, "invoke timeout") if timeout is not None else MAX_SLEEP_SECONDS
        _dump, load = output_codec(output_type, f"invoke {step_id!r}", _serializer(p))
        op = self._pausing("invoke", step_id)
        if op.done:
            done = op.memo
            return p.deliver(lambda: load(p.memo_value(done)))  # type: ignore[arg-type]

        def body() -> Any:
            return load(started())

        def started() -> Any:
            if p.inp.branch is not None and op.id != p.inp.branch:
                p.stopped_at = p.stopped_at or op.id
                raise Interrupt(_branch_done(p))
            rec = op.memo
            # A branch of a parallel group: the branch task starts it and waits for it.
            planned = {k: v for k, v in ((rec.extra or {}) if rec else {}).items()
                       if k in ("group", "race")}
            if planned and p.inp.branch is None:
                raise Interrupt(Parallel((), (op.id,)))
            if rec is not None and rec.status == "waiting":
                return self._waited(op, rec.extra or {})
            p.check_order(op)
            now = time.time()
            waiting = p.new_record(op, status="waiting", started_at=now,
                                   extra={**planned, "until": now + seconds})
            p.flush()
            try:
                child = p.sink.start_invoke(op.id, function, dict(data or {}), waiting.seq)
            except InvokeError as exc:
                waiting.status, waiting.ended_at = "failed", now
                waiting.extra = planned or None
                waiting.error = {"type": "InvokeError", "message": str(exc)}
                return p.finish(op, waiting)
            waiting.extra = {**planned, "child": child, "until": now + seconds}
            return self._park(op, waiting)

        if p.is_async:

            async def _invoke_async() -> Any:
                await _settle(p, op)  # with sibling steps, it becomes a parallel branch
                return body()

            return _invoke_async()
        return body()

    def invoke_by_id(
        self,
        step_id: str,
        *,
        function_id: str,
        app_id: str | None = None,
        data: Mapping[str, Any] | None = None,
        timeout: Duration | None = None,
        output_type: Any = None,
    ) -> Any:
        """:meth:`invoke` by the function's id: one of this client, or with ``app_id``
        one of another client (another app id) declared on the same Celery app, so
        served by the same workers."""
        if not isinstance(function_id, str) or not function_id:
            raise ConfigError("invoke_by_id needs function_id, the id given to create_function")
        if app_id is not None and (not isinstance(app_id, str) or not app_id):
            raise ConfigError("invoke_by_id: app_id must be a client's app id (a string)")
        ref = f"{app_id}:{function_id}" if app_id else function_id
        return self.invoke(step_id, function=ref, data=data, timeout=timeout,
                           output_type=output_type)

    def _pausing(self, kind: str, step_id: str) -> Op:
        p = self._p
        op = p.open(kind, step_id)
        if not op.done and kind == "invoke" and op.id == p.inp.branch:
            return op  # this branch task starts the invoke
        if not op.done and p.collecting is not None:
            if kind == "invoke":
                p.collecting.append(op)
                raise Planned()
            raise NonRetriableError(
                f"ctx.step.{kind}({step_id!r}) inside ctx.group.parallel: parallel branches "
                "may only use ctx.step.run, ctx.step.send_event and ctx.step.invoke"
            )
        if not op.done and p.inp.branch is not None:
            if kind == "invoke" and p.is_async:
                return op  # a sibling in asyncio.gather: decided once the batch settles
            p.stopped_at = p.stopped_at or op.id
            raise Interrupt(_branch_done(p))
        return op

    async def _alone(self, op: Op, body: Callable[[], Any]) -> Any:
        """A pausing step in an async handler: it must not be awaited together with
        other new steps (asyncio.gather), which would become parallel branches."""
        p = self._p
        batch = p.batch
        batch.append(op)
        await asyncio.sleep(0)
        if p.batch is batch:
            p.batch = []
        _refuse_pausing(batch)
        return body()


_PAUSING = ("sleep", "wait")  # an invoke may be a parallel branch


def _refuse_pausing(batch: Sequence[Op]) -> None:
    pausing = [o for o in batch if o.kind in _PAUSING]
    if len(batch) > 1 and pausing:
        o = pausing[0]
        kind = {"wait": "wait_for_event"}.get(o.kind, o.kind)
        others = [b.id for b in batch if b is not o]
        raise NonRetriableError(
            f"ctx.step.{kind}({o.id!r}) was awaited together with the new step(s) {others!r} "
            "(asyncio.gather or ctx.group.parallel): parallel branches may only use "
            "ctx.step.run, ctx.step.send_event and ctx.step.invoke; await it before or "
            "after the group"
        )


def _branch_done(p: Pass) -> Any:
    return BranchDone(p.inp.branch or "")


def _as_event(raw: Any) -> Event | None:
    return None if raw is None else Event.from_wire(raw)


class Planned(BaseException):
    """A step found new while ``ctx.group.parallel`` collects its branches."""


async def _settle(p: Pass, op: Op) -> None:
    """Let sibling coroutines of an ``asyncio.gather`` announce their steps, then
    decide: one new step executes here; several become a parallel plan."""
    batch = p.batch
    batch.append(op)
    await asyncio.sleep(0)
    if p.batch is batch:
        p.batch = []
    if len(batch) == 1:
        return
    _refuse_pausing(batch)
    branch = p.inp.branch
    if branch is not None:
        if op.id == branch:
            return
        if not any(o.id == branch for o in batch):
            p.stopped_at = p.stopped_at or batch[0].id
            raise Interrupt(_branch_done(p))
        await asyncio.get_running_loop().create_future()  # parked until the pass ends
    if batch[0] is op:
        p.plan_parallel(batch)
    await asyncio.get_running_loop().create_future()
