"""The step tools (``ctx.step``), parallel groups (``ctx.group``) and ``Context``.

One code path serves sync and async handlers: each tool does its bookkeeping
once and hands the value to ``Pass.deliver``, which returns it directly to a
``def`` handler or as an awaitable to an ``async def`` one.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import functools
import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .._errors import ConfigError, InvokeError, NonRetriableError
from .engine import (
    FINAL,
    BranchDone,
    Interrupt,
    Op,
    Pass,
    Sleep,
    Wait,
    invoke_async,
    invoke_sync,
)
from .event import Event, prepare_batch
from .ids import derived_event_id
from .middleware import SendEventsResult
from .step_types import SyncGroup, SyncStep

MAX_SLEEP_SECONDS = 366 * 86400
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(value: object, what: str = "duration") -> float:
    """Seconds from a number, a timedelta or a string such as ``"30m"``, ``"1h30m"``."""
    if isinstance(value, bool):
        raise ConfigError(f"{what} must be seconds, a timedelta or a string like '30m'")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, _dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        pos, seconds = 0, 0.0
        for m in _DURATION.finditer(text):
            if m.start() != pos:
                break
            seconds += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
        if not text or pos != len(text):
            raise ConfigError(
                f"invalid {what} {value!r}: use a number of seconds, a timedelta, or a string "
                "of amounts with units ms, s, m, h, d, w (for example '30m' or '1h30m')"
            )
    else:
        raise ConfigError(
            f"{what} must be seconds, a timedelta or a string like '30m', "
            f"not {type(value).__name__}"
        )
    if seconds != seconds or seconds < 0:
        raise ConfigError(f"{what} must not be negative: {value!r}")
    if seconds > MAX_SLEEP_SECONDS:
        raise ConfigError(f"{what} {value!r} is longer than the limit of one year")
    return seconds


def _when(value: object) -> float:
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            raise ConfigError(f"sleep_until needs an aware datetime (with tzinfo), not {value!r}")
        return value.timestamp()
    if isinstance(value, str):
        try:
            return _when(_dt.datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            raise ConfigError(f"sleep_until: {value!r} is not an ISO 8601 datetime") from None
    raise ConfigError(f"sleep_until needs a datetime, not {type(value).__name__}")


def _path(data: Mapping[str, Any], path: str) -> Any:
    cur: Any = data
    for part in path.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


_MISSING = object()


def wait_bucket(match: str | None, event: Mapping[str, Any]) -> str | None:
    """The index bucket of a wait (``match`` path and the trigger's value), so the
    router looks only at waits whose ``match`` value equals the incoming event's.
    None when the wait has no ``match`` (or the trigger lacks the field)."""
    if not match:
        return None
    value = _path(event, match)
    if value is _MISSING:
        return None
    from .event import dumps

    digest = hashlib.blake2b(dumps(value).encode(), digest_size=10).hexdigest()
    return f"{match}={digest}"


@functools.lru_cache(maxsize=512)
def _wait_expr(source: str) -> Any:
    from .expr import compile_expression

    try:
        return compile_expression(source, variables=("event", "async"))
    except ValueError:
        return None


def wait_matches(spec: Mapping[str, Any], trigger: Mapping[str, Any], candidate: Mapping[str, Any]) -> bool:
    """Whether ``candidate`` satisfies a wait's ``match`` and ``if_exp`` (never raises)."""
    match = spec.get("match")
    if match:
        mine = _path(trigger, match)
        if mine is _MISSING or mine != _path(candidate, match):
            return False
    expr = spec.get("if_exp")
    if expr:
        compiled = _wait_expr(expr)
        if compiled is None:
            return False
        return bool(compiled.matches({"event": dict(trigger), "async": dict(candidate)}))
    return True


class Step:
    """``ctx.step``: the step tools. In an ``async def`` handler each returns an awaitable."""

    def __init__(self, pass_: Pass) -> None:
        self._p = pass_

    # -- run ----------------------------------------------------------------------------

    def run(self, step_id: str, handler: Callable[..., Any], *args: Any) -> Any:
        """Run ``handler(*args)`` once, durably; return its (JSON) result."""
        p = self._p
        if not callable(handler):
            raise NonRetriableError(f"ctx.step.run({step_id!r}, ...): handler is not callable")
        op = p.open("run", step_id)
        if op.done:
            rec = op.memo
            return p.deliver(lambda: p.memo_value(rec))  # type: ignore[arg-type]
        if p.collecting is not None and op.id != p.inp.branch:
            p.collecting.append(op)
            raise _Planned()
        if p.is_async:
            return self._run_async(op, handler, args)
        p.admit(op)
        return p.record(op, time.time(), invoke_sync(op, handler, args))

    async def _run_async(self, op: Op, handler: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        p = self._p
        await _settle(p, op)
        p.admit(op)
        started = time.time()
        return p.record(op, started, await invoke_async(op, handler, args))

    # -- send_event ---------------------------------------------------------------------

    def send_event(self, step_id: str, events: Event | Iterable[Event]) -> Any:
        """Send one or more events as a memoized step; returns their ids."""
        p = self._p
        op = p.open("send_event", step_id)
        if op.done:
            rec = op.memo
            return p.deliver(lambda: p.memo_value(rec))  # type: ignore[arg-type]
        run_id = p.inp.run_id
        prepared = prepare_batch(events, id_for=lambda i: derived_event_id(run_id, op.id, i))

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
            raise _Planned()
        if p.is_async:

            async def _send_async() -> Any:
                await _settle(p, op)
                p.admit(op)
                return p.record(op, time.time(), send())

            return _send_async()
        p.admit(op)
        return p.record(op, time.time(), send())

    # -- sleep ----------------------------------------------------------------------------

    def sleep(self, step_id: str, duration: float | _dt.timedelta | str) -> Any:
        """Pause the run for ``duration`` without holding a worker."""
        seconds = parse_duration(duration, "sleep duration")
        return self._sleep(step_id, lambda: time.time() + seconds)

    def sleep_until(self, step_id: str, when: _dt.datetime | str) -> Any:
        """Pause the run until ``when`` (an aware datetime)."""
        until = _when(when)
        if until - time.time() > MAX_SLEEP_SECONDS:
            raise ConfigError(f"sleep_until {when!r} is more than a year away")
        return self._sleep(step_id, lambda: until)

    def _sleep(self, step_id: str, until: Callable[[], float]) -> Any:
        p = self._p
        op = self._pausing("sleep", step_id)
        if op.done:
            return p.deliver(lambda: None)
        rec = op.memo
        if rec is not None and rec.status == "sleeping":
            due = float((rec.extra or {}).get("until", 0))
            if due <= time.time() + 0.05:
                done = p.new_record(op, status="completed", started_at=rec.started_at,
                                    ended_at=time.time(), extra=rec.extra)
                return p.deliver(lambda: p.finish(op, done))
            raise Interrupt(Sleep(op.id, due))
        p.check_order(op)
        due = until()
        p.save(p.new_record(op, status="sleeping", started_at=time.time(), extra={"until": due}))
        raise Interrupt(Sleep(op.id, due))

    # -- wait_for_event --------------------------------------------------------------------

    def wait_for_event(
        self,
        step_id: str,
        *,
        event: str,
        timeout: float | _dt.timedelta | str,
        if_exp: str | None = None,
        match: str | None = None,
        lookback: float | _dt.timedelta | str | None = None,
    ) -> Any:
        """Wait for an event named ``event``; returns it, or None after ``timeout``."""
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
            rec = op.memo
            return p.deliver(lambda: _as_event(rec.output))  # type: ignore[union-attr]
        rec = op.memo
        if rec is not None and rec.status == "waiting":
            return p.deliver(lambda: _as_event(self._waited(op, rec.extra or {})))
        p.check_order(op)
        now = time.time()
        spec = {"event": event, "match": match, "if_exp": if_exp, "until": now + seconds,
                "since": now - back}
        waiting = p.new_record(op, status="waiting", started_at=now, extra=spec)
        p.flush()
        found = p.sink.register_wait(op.id, {**spec, "seq": waiting.seq})
        if found is not None:
            waiting.status, waiting.output, waiting.ended_at = "completed", found, now
            return p.deliver(lambda: _as_event(p.finish(op, waiting)))
        return p.deliver(lambda: _as_event(self._park(op, waiting)))

    def _waited(self, op: Op, extra: Mapping[str, Any]) -> Any:
        """A memoized wait that is still open: time out, or stop the pass again."""
        p = self._p
        until = float(extra.get("until", 0))
        if until <= time.time():
            rec = p.new_record(op, status="completed", output=None, ended_at=time.time(),
                               started_at=op.memo.started_at if op.memo else None, extra=dict(extra))
            if op.kind == "invoke":
                rec.status = "failed"
                rec.error = {"type": "InvokeError", "message": "the invoked function timed out"}
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
        timeout: float | _dt.timedelta | str | None = None,
    ) -> Any:
        """Run another function as a child run and return its output.

        A child that fails, times out or is unknown raises ``InvokeError`` (a
        ``NonRetriableError``): the child keeps its own retries, the parent does not
        multiply them.
        """
        p = self._p
        seconds = parse_duration(timeout, "invoke timeout") if timeout is not None else MAX_SLEEP_SECONDS
        op = self._pausing("invoke", step_id)
        if op.done:
            rec = op.memo
            return p.deliver(lambda: p.memo_value(rec))  # type: ignore[arg-type]
        rec = op.memo
        if rec is not None and rec.status == "waiting":
            return p.deliver(lambda: self._waited(op, rec.extra or {}))
        p.check_order(op)
        now = time.time()
        waiting = p.new_record(op, status="waiting", started_at=now, extra={"until": now + seconds})
        p.flush()
        try:
            child = p.sink.start_invoke(op.id, function, dict(data or {}), waiting.seq)
        except InvokeError as exc:
            waiting.status, waiting.ended_at, waiting.extra = "failed", now, None
            waiting.error = {"type": "InvokeError", "message": str(exc)}
            return p.deliver(lambda: p.finish(op, waiting))
        waiting.extra = {"child": child, "until": now + seconds}
        return p.deliver(lambda: self._park(op, waiting))

    def _pausing(self, kind: str, step_id: str) -> Op:
        p = self._p
        op = p.open(kind, step_id)
        if not op.done and p.collecting is not None:
            raise NonRetriableError(
                f"ctx.step.{kind}({step_id!r}) inside ctx.group.parallel: parallel branches "
                "may only use ctx.step.run and ctx.step.send_event"
            )
        if not op.done and p.inp.branch is not None:
            raise Interrupt(_branch_done(p))
        return op


def _branch_done(p: Pass) -> Any:
    return BranchDone(p.inp.branch or "")


def _as_event(raw: Any) -> Event | None:
    return None if raw is None else Event.from_wire(raw)


class _Planned(BaseException):
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
    branch = p.inp.branch
    if branch is not None:
        if op.id == branch:
            return
        if not any(o.id == branch for o in batch):
            raise Interrupt(_branch_done(p))
        await asyncio.get_running_loop().create_future()  # parked until the pass ends
    if batch[0] is op:
        p.plan_parallel(batch)
    await asyncio.get_running_loop().create_future()


class Group:
    """``ctx.group``: run steps in parallel, each branch as its own task."""

    def __init__(self, pass_: Pass) -> None:
        self._p = pass_

    def parallel(self, callables: Sequence[Callable[[], Any]]) -> Any:
        """Call each callable (each makes one step) and return their results as a tuple."""
        p = self._p
        fns = tuple(callables)
        if not all(callable(c) for c in fns):
            raise NonRetriableError("ctx.group.parallel takes a sequence of callables")
        if p.is_async:

            async def _gather() -> tuple[Any, ...]:
                return tuple(await asyncio.gather(*(c() for c in fns)))

            return _gather()
        planned: list[Op] = []
        results: list[Any] = []
        outer, p.collecting = p.collecting, planned
        try:
            for c in fns:
                try:
                    results.append(c())
                except _Planned:
                    results.append(None)
        finally:
            p.collecting = outer
        if planned:
            p.plan_parallel(planned)
        return tuple(results)


class Context:
    """What a handler receives: the event(s), ids, the attempt, a logger, ``step`` and ``group``."""

    def __init__(self, pass_: Pass) -> None:
        inp = pass_.inp
        self.event: Event = Event.from_wire(inp.event)
        self.events: list[Event] = [Event.from_wire(e) for e in inp.events]
        self.run_id: str = inp.run_id
        self.fn_id: str = inp.fn_id
        self.attempt: int = inp.attempt
        self.logger: logging.LoggerAdapter = pass_.logger  # type: ignore[type-arg]
        # One Step and one Group serve both kinds of handler; what a type checker sees
        # is the sync view here and the async one in AsyncContext (step_types.py).
        self.step: SyncStep = Step(pass_)
        self.group: SyncGroup = Group(pass_)

    def __repr__(self) -> str:
        return f"<fanout.Context fn={self.fn_id!r} run={self.run_id!r} attempt={self.attempt}>"
