"""The replay engine: one pass of a function over its memoized steps.

Pure Python: no Celery, no Redis.  A pass calls the handler from the top.  Each
step tool first looks for the step in the memo; a memoized step returns its
saved output (or raises its saved ``StepError``) without running.  The first
step that is not memoized is *new*: the pass executes it, hands the record to
the :class:`Sink` to save, and lets the handler go on.  When the handler reaches
a second new step, the pass stops there (``Continue``) and the adapter enqueues
the next pass; in checkpoint mode it executes that one too.  When the handler
returns, the run is complete in the same pass.

See ``docs/concepts/execution-model.md`` for a walk-through, pass by pass.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ._errors import (
    ConfigError,
    EventError,
    ExpressionError,
    FanoutError,
    NestedStepError,
    NonDeterminismError,
    NonRetriableError,
    RetryAfterError,
    StepError,
)
from ._event import Event, dumps, prepare_batch
from ._ids import derived_event_id
from ._records import StepRecord

MAX_STEPS_PER_RUN = 1000
MAX_STEP_OUTPUT_BYTES = 4 * 1024 * 1024
MAX_STEP_ID_LENGTH = 256

_current_step: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "fanout_current_step", default=None
)
_loops = threading.local()


def thread_loop() -> asyncio.AbstractEventLoop:
    """This thread's event loop for async handlers (created once, reused)."""
    loop: asyncio.AbstractEventLoop | None = getattr(_loops, "loop", None)
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        _loops.loop = loop
    return loop


def run_coroutine(coro: Any) -> Any:
    """Run a coroutine to completion from synchronous code."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return thread_loop().run_until_complete(coro)
    raise NonRetriableError(
        "an async step handler was called from a sync function handler running inside an "
        "event loop; declare the function handler with 'async def'"
    )


# --------------------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class Completed:
    output: Any


@dataclass(frozen=True)
class Failed:
    """The pass failed outside any step, or a step failure reached the top."""

    error: dict[str, Any]
    retriable: bool
    retry_after: float | None = None


@dataclass(frozen=True)
class Continue:
    """A step was executed; ``next_step`` is new and runs in the next pass."""

    next_step: str


@dataclass(frozen=True)
class RetryStep:
    step_id: str
    delay: float


@dataclass(frozen=True)
class LeaseLost:
    """Another worker owns the run now; this pass stops without side effects."""


Outcome = Completed | Failed | Continue | RetryStep | LeaseLost


class _Interrupt(BaseException):
    """Stops the handler at a step boundary. A BaseException so ``except Exception``
    in user code does not swallow it."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__()
        self.outcome = outcome


class SaveRejected(Exception):
    """Raised by a :class:`Sink` when the run's lease is no longer ours."""


class Sink(Protocol):
    """What a pass needs from the outside world."""

    def save_step(self, record: StepRecord) -> StepRecord | None:
        """Persist ``record``; return the record already saved for that step, if any
        (the first completed record wins), or raise :class:`SaveRejected`."""
        ...

    def send_events(self, step_id: str, events: list[tuple[Event, str]]) -> list[str]: ...


# --------------------------------------------------------------------------- retry policy


INNGEST_BACKOFF: tuple[float, ...] = (15, 30, 60, 120, 300, 600, 1200, 2400, 3600, 7200)


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` further attempts after the first; ``backoff[i]`` seconds before attempt i+2."""

    retries: int = 4
    backoff: tuple[float, ...] = INNGEST_BACKOFF

    def delay(self, failed_attempts: int) -> float:
        table = self.backoff or (0.0,)
        return float(table[min(failed_attempts - 1, len(table) - 1)])


def error_info(exc: BaseException) -> dict[str, Any]:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {"type": type(exc).__name__, "message": str(exc), "stack": tb[-4000:]}


# --------------------------------------------------------------------------- the pass


@dataclass
class PassInput:
    run_id: str
    fn_id: str
    event: dict[str, Any]
    events: list[dict[str, Any]]
    attempt: int
    memo: dict[str, StepRecord]
    checkpoint: bool = False
    policy: RetryPolicy = field(default_factory=RetryPolicy)


class _ReplayLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The run's logger: silent while the pass replays memoized steps."""

    def __init__(self, logger: logging.Logger, pass_: Pass) -> None:
        super().__init__(logger, {"run_id": pass_.inp.run_id, "fn_id": pass_.inp.fn_id})
        self._pass = pass_

    def isEnabledFor(self, level: int) -> bool:
        return not self._pass.replaying and self.logger.isEnabledFor(level)

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{self.extra['fn_id']} {self.extra['run_id']}] {msg}", kwargs  # type: ignore[index]


@dataclass
class _Op:
    kind: str
    id: str
    memo: StepRecord | None


class Pass:
    """State of one pass; step tools call into it."""

    def __init__(self, inp: PassInput, sink: Sink, *, is_async: bool) -> None:
        self.inp = inp
        self.sink = sink
        self.is_async = is_async
        self.executed = 0
        self.seen: dict[str, int] = {}
        done = [r for r in inp.memo.values() if r.status in ("completed", "failed")]
        self.unvisited = {r.id for r in done}
        self.next_seq = max((r.seq for r in inp.memo.values()), default=-1) + 1
        self.replaying = bool(done)
        self.logger = _ReplayLogger(logging.getLogger("fanout.run"), self)

    # -- op discovery ------------------------------------------------------------

    def open(self, kind: str, step_id: str) -> _Op:
        if _current_step.get() is not None:
            raise NestedStepError(
                f"ctx.step.{kind}({step_id!r}) was called inside the running step "
                f"{_current_step.get()!r}; step tools may only be called from the function "
                "handler itself"
            )
        if not isinstance(step_id, str) or not step_id:
            raise NonRetriableError(f"step id must be a non-empty string, not {step_id!r}")
        if len(step_id) > MAX_STEP_ID_LENGTH:
            raise NonRetriableError(f"step id {step_id[:40]!r}... is over {MAX_STEP_ID_LENGTH} chars")
        n = self.seen.get(step_id, 0)
        self.seen[step_id] = n + 1
        sid = step_id if n == 0 else f"{step_id}:{n}"
        rec = self.inp.memo.get(sid)
        if rec is not None and rec.status in ("completed", "failed"):
            if rec.kind != kind:
                raise NonDeterminismError(
                    f"step {sid!r} was memoized as ctx.step.{rec.kind} but the handler now calls "
                    f"ctx.step.{kind} with that id; the code changed under a running run"
                )
            self.unvisited.discard(sid)
            if not self.unvisited:
                self.replaying = False
            return _Op(kind, sid, rec)
        self.replaying = False
        return _Op(kind, sid, rec)

    def admit(self, op: _Op) -> None:
        """Decide that ``op`` (new) executes in this pass, or stop the pass before it."""
        if self.unvisited:
            raise NonDeterminismError(
                f"the handler reached the new step {op.id!r} before the memoized step(s) "
                f"{sorted(self.unvisited)!r}: the order of steps changed since this run began "
                "(a step id renamed, reordered or removed between deploys). Steps must be "
                "called in the same order on every pass; see the execution-model docs."
            )
        if self.executed and not self.inp.checkpoint:
            raise _Interrupt(Continue(op.id))
        if self.next_seq >= MAX_STEPS_PER_RUN:
            raise NonRetriableError(f"the run reached the limit of {MAX_STEPS_PER_RUN} steps")

    # -- results ------------------------------------------------------------------

    def memo_value(self, rec: StepRecord) -> Any:
        if rec.status == "failed":
            err = rec.error or {}
            raise StepError(rec.id, str(err.get("type", "Error")), str(err.get("message", "")))
        return rec.output

    def deliver(self, thunk: Callable[[], Any]) -> Any:
        """Return ``thunk()`` to a sync handler, or an awaitable of it to an async one."""
        if not self.is_async:
            return thunk()

        async def _value() -> Any:
            return thunk()

        return _value()

    def record(self, op: _Op, started: float, outcome: tuple[bool, Any]) -> Any:
        """Memoize the outcome of a step just executed; return its value or raise."""
        ok, value = outcome
        prev = op.memo
        attempts = (prev.attempts if prev else 0) + 1
        rec = StepRecord(
            id=op.id,
            kind=op.kind,
            attempts=attempts,
            seq=prev.seq if prev else self.next_seq,
            queued_at=prev.queued_at if prev and prev.queued_at else None,
            started_at=started,
            ended_at=time.time(),
        )
        if prev is None:
            self.next_seq += 1
        if ok:
            try:
                text = dumps(value)
            except (TypeError, ValueError) as exc:
                ok, value = False, NonRetriableError(
                    f"step {op.id!r} returned a value that is not JSON-serializable "
                    f"({type(value).__name__}): {exc}"
                )
            else:
                if len(text) > MAX_STEP_OUTPUT_BYTES:
                    ok, value = False, NonRetriableError(
                        f"step {op.id!r} returned {len(text)} bytes of JSON; "
                        f"the limit is {MAX_STEP_OUTPUT_BYTES} bytes (4 MiB)"
                    )
                else:
                    rec.status, rec.output = "completed", json.loads(text)
        if not ok:
            exc: BaseException = value
            rec.error = error_info(exc)
            policy = self.inp.policy
            final = isinstance(exc, NonRetriableError) or attempts > policy.retries
            if final:
                rec.status = "failed"
            else:
                if isinstance(exc, RetryAfterError):
                    delay = exc.delay_seconds(_utcnow())
                else:
                    delay = policy.delay(attempts)
                rec.status, rec.retry_at = "retrying", time.time() + delay
                self._save(rec)
                raise _Interrupt(RetryStep(op.id, delay))
        rec = self._save(rec) or rec
        self.executed += 1
        self.inp.memo[op.id] = rec
        return self.memo_value(rec)

    def _save(self, rec: StepRecord) -> StepRecord | None:
        try:
            return self.sink.save_step(rec)
        except SaveRejected:
            raise _Interrupt(LeaseLost()) from None


def _utcnow() -> Any:
    import datetime as _dt

    return _dt.datetime.now(_dt.timezone.utc)


def _invoke_sync(op: _Op, handler: Callable[..., Any], args: tuple[Any, ...]) -> tuple[bool, Any]:
    token = _current_step.set(op.id)
    try:
        value = handler(*args)
        if inspect.isawaitable(value):
            value = run_coroutine(value)
        return True, value
    except Exception as exc:  # noqa: BLE001 - a step's error is data
        return False, exc
    finally:
        _current_step.reset(token)


async def _invoke_async(
    op: _Op, handler: Callable[..., Any], args: tuple[Any, ...]
) -> tuple[bool, Any]:
    token = _current_step.set(op.id)
    try:
        value = handler(*args)
        if inspect.isawaitable(value):
            value = await value
        return True, value
    except Exception as exc:  # noqa: BLE001
        return False, exc
    finally:
        _current_step.reset(token)


# --------------------------------------------------------------------------- user API


class Step:
    """``ctx.step``: the step tools. In an ``async def`` handler each returns an awaitable."""

    def __init__(self, pass_: Pass) -> None:
        self._p = pass_

    def run(self, step_id: str, handler: Callable[..., Any], *args: Any) -> Any:
        """Run ``handler(*args)`` once, durably; return its (JSON) result."""
        p = self._p
        if not callable(handler):
            raise NonRetriableError(f"ctx.step.run({step_id!r}, ...): handler is not callable")
        op = p.open("run", step_id)
        if op.memo is not None and op.memo.status in ("completed", "failed"):
            rec = op.memo
            return p.deliver(lambda: p.memo_value(rec))
        p.admit(op)
        started = time.time()
        if p.is_async:

            async def _run_async() -> Any:
                return p.record(op, started, await _invoke_async(op, handler, args))

            return _run_async()
        return p.record(op, started, _invoke_sync(op, handler, args))

    def send_event(self, step_id: str, events: Event | Iterable[Event]) -> Any:
        """Send one or more events as a memoized step; returns their ids."""
        p = self._p
        op = p.open("send_event", step_id)
        if op.memo is not None and op.memo.status in ("completed", "failed"):
            rec = op.memo
            return p.deliver(lambda: p.memo_value(rec))
        run_id = p.inp.run_id
        prepared = prepare_batch(events, id_for=lambda i: derived_event_id(run_id, op.id, i))
        p.admit(op)
        started = time.time()

        def _send() -> Any:
            try:
                outcome: tuple[bool, Any] = (True, p.sink.send_events(op.id, prepared))
            except Exception as exc:  # noqa: BLE001
                outcome = (False, exc)
            return p.record(op, started, outcome)

        return p.deliver(_send)


class Context:
    """What a handler receives: the event(s), ids, the attempt, a logger, and ``step``."""

    def __init__(self, pass_: Pass) -> None:
        inp = pass_.inp
        self.event: Event = Event.from_wire(inp.event)
        self.events: list[Event] = [Event.from_wire(e) for e in inp.events]
        self.run_id: str = inp.run_id
        self.fn_id: str = inp.fn_id
        self.attempt: int = inp.attempt
        self.logger: logging.LoggerAdapter = pass_.logger  # type: ignore[type-arg]
        self.step = Step(pass_)

    def __repr__(self) -> str:
        return f"<fanout.Context fn={self.fn_id!r} run={self.run_id!r} attempt={self.attempt}>"


# --------------------------------------------------------------------------- driver


_NON_RETRIABLE_INPUT = (EventError, ConfigError, ExpressionError)


def run_pass(
    handler: Callable[[Context], Any], inp: PassInput, sink: Sink, *, is_async: bool
) -> Outcome:
    """Run one pass of ``handler`` and say what should happen next."""
    p = Pass(inp, sink, is_async=is_async)
    ctx = Context(p)
    try:
        if is_async:
            result = run_coroutine(handler(ctx))
        else:
            result = handler(ctx)
            if inspect.isawaitable(result):
                result = run_coroutine(result)
    except _Interrupt as intr:
        return intr.outcome
    except RetryAfterError as exc:
        return Failed(error_info(exc), True, exc.delay_seconds(_utcnow()))
    except (NonRetriableError, StepError, *_NON_RETRIABLE_INPUT) as exc:
        return Failed(error_info(exc), False)
    except Exception as exc:  # noqa: BLE001
        return Failed(error_info(exc), True)
    if p.unvisited:
        names = sorted(p.unvisited)
        return Failed(
            error_info(
                NonDeterminismError(
                    f"the handler returned without reaching the memoized step(s) {names!r}; "
                    "the code changed under a running run"
                )
            ),
            False,
        )
    try:
        text = dumps(result)
    except (TypeError, ValueError) as exc:
        err = NonRetriableError(
            f"the function returned a value that is not JSON-serializable "
            f"({type(result).__name__}): {exc}"
        )
        return Failed(error_info(err), False)
    return Completed(json.loads(text))


def is_async_handler(handler: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)
    )


def memo_from_json(raw: Mapping[str, Any]) -> dict[str, StepRecord]:
    return {k: StepRecord.from_json(v) for k, v in raw.items()}


__all__ = [
    "Completed",
    "Context",
    "Continue",
    "Failed",
    "FanoutError",
    "LeaseLost",
    "Outcome",
    "PassInput",
    "RetryPolicy",
    "RetryStep",
    "SaveRejected",
    "Sink",
    "Step",
    "is_async_handler",
    "run_pass",
]
