"""The replay engine: one pass of a function over its memoized steps.

Pure Python: no Celery, no Redis.  A pass calls the handler from the top.  Each
step tool first looks for the step in the memo; a memoized step returns its
saved output (or raises its saved error) without running.  The first step that
is not memoized is *new*: the pass executes it, hands the record to the
:class:`Sink` to save, and lets the handler go on.  When the handler reaches a
second new step, the pass stops there (``Continue``) and the adapter enqueues
the next pass; in checkpoint mode it executes that one too.  When the handler
returns, the run is complete in the same pass.  Sleeps, waits and invokes end
the pass with ``Sleep``/``Wait``; several new steps at once end it with
``Parallel``, and each branch then runs as its own task (``branch`` mode).

The step tools users call live in ``steps.py``; ``docs/concepts/execution-model.md``
walks through a run pass by pass.
"""

from __future__ import annotations

import contextvars
import datetime as _dt
import inspect
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from .._errors import (
    InvokeError,
    MiddlewareError,
    NestedStepError,
    NonDeterminismError,
    NonRetriableError,
    RetryAfterError,
    StepError,
)
from .event import dumps
from .loops import run_coroutine
from .middleware import EMPTY, Stack, StepInfo
from .outcomes import (
    BranchDone,
    Continue,
    DryStop,
    Failed,
    Interrupt,
    LeaseLost,
    Parallel,
    RetryPolicy,
    RetryStep,
    SaveRejected,
    Sink,
    error_info,
)
from .records import StepRecord
from .versions import DIVERGENT_PASSES, divergence_message, report_warning, strict_hint

MAX_STEPS_PER_RUN = 1000
MAX_STEP_OUTPUT_BYTES = 4 * 1024 * 1024
MAX_RUN_STATE_BYTES = 32 * 1024 * 1024
MAX_STEP_ID_LENGTH = 256
FINAL = ("completed", "failed")

current_step: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "fanout_current_step", default=None
)
def utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


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
    branch: str | None = None
    state_bytes: int = 0
    queued_at: float | None = None  # when this pass was handed to the broker
    # Versioning (docs/concepts/versioning.md): a change in the order of steps warns
    # (fails when ``strict``). ``diverged`` and ``gone`` are the guard against
    # nondeterministic step ids (versions.divergence_of): the passes in a row that met
    # new steps while saved ones went unreached, and the steps the last pass left
    # unreached. ``warned`` are the warning kinds the run already recorded; ``markers``
    # the patch markers it was created with; ``patches`` the ones this code declares
    # (None: not checked); ``version`` this code's version. ``dry``: check-deploy's
    # replay, which stops (``DryStop``) at the first step that is not final.
    strict: bool = False
    diverged: int = 0
    gone: frozenset[str] = frozenset()
    dry: bool = False
    #: This pass retries the code after a failure outside steps (lines logged before
    #: the raise are logged again). None: not known, so any ``attempt`` above 0.
    retry_pass: bool | None = None
    warned: frozenset[str] = frozenset()
    markers: frozenset[str] = frozenset()
    patches: frozenset[str] | None = None
    version: str = ""
    logger: Any = None  # the client's logger (set_logger); None: "fanout.run"
    #: Middleware classes (client ones first) and what they are built with.
    middleware: tuple[Any, ...] = ()
    client: Any = None
    function: Any = None


class _ReplayLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The run's logger: silent while the pass replays memoized steps."""

    def __init__(self, logger: logging.Logger, pass_: Pass) -> None:
        super().__init__(logger, {"run_id": pass_.inp.run_id, "fn_id": pass_.inp.fn_id})
        self._pass = pass_

    def isEnabledFor(self, level: int) -> bool:
        return (not self._pass.replaying and not self._pass.inp.dry
                and self.logger.isEnabledFor(level))

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = self.extra or {}
        return f"[{extra.get('fn_id')} {extra.get('run_id')}] {msg}", kwargs


@dataclass
class Op:
    kind: str
    id: str
    memo: StepRecord | None

    @property
    def done(self) -> bool:
        return self.memo is not None and self.memo.status in FINAL


class Pass:
    """State of one pass; the step tools call into it."""

    def __init__(self, inp: PassInput, sink: Sink, *, is_async: bool) -> None:
        self.inp = inp
        self.sink = sink
        self.is_async = is_async
        self.executed = 0
        self.seen: dict[str, int] = {}
        done = [r for r in inp.memo.values() if r.status in FINAL]
        # Memoized steps the handler must reach before any new step. Parallel branches
        # finish in any order, so they are exempt from this order check.
        self.unvisited = {r.id for r in done if not (r.extra and "group" in r.extra)}
        self.next_seq = max((r.seq for r in inp.memo.values()), default=-1) + 1
        self.replaying = bool(done)
        # A pass that retries (a step, or the handler after an error outside steps)
        # speaks again as soon as every memoized step is replayed, so lines logged
        # before the retried raise appear on every attempt. Other passes stay silent
        # until the first step that is not memoized: the lines before it ran already.
        if inp.branch is None:
            retry_pass = inp.attempt > 0 if inp.retry_pass is None else inp.retry_pass
            self.retrying = retry_pass or any(
                r.status == "retrying" for r in inp.memo.values()
            )
        else:  # a branch task retries only its own step
            own = inp.memo.get(inp.branch)
            self.retrying = own is not None and own.status == "retrying"
        self.to_replay = {r.id for r in done}
        # The step the last pass stopped at, when it is final now (a sleep that ended,
        # a wait its event resolved, an invoke whose child ended, a parallel group that
        # joined): the code after it has never run, so the logger speaks from there.
        last = max(done, key=lambda r: r.seq, default=None)
        self.stopped_step = last.id if last is not None and last.seq == self.next_seq - 1 and (
            last.kind in ("sleep", "wait", "invoke") or (last.extra and "group" in last.extra)
        ) else None
        self.state_bytes = inp.state_bytes
        self.logger = _ReplayLogger(inp.logger or logging.getLogger("fanout.run"), self)
        # Parallel discovery: sync ctx.group.parallel collects here; async handlers
        # gather new steps into ``batch`` for one turn of the event loop.
        self.collecting: list[Op] | None = None
        self.batch: list[Op] = []
        self.reached: set[str] = set()
        self.last_seq = -1
        self.warned: set[str] = set(inp.warned)
        # A branch task must reach its own step; where it stopped instead, if it did not.
        self.branch_reached = False
        self.stopped_at: str | None = None
        # A step tool called inside a running step: the run fails, whatever the step's
        # own code (or the handler around the step) catches.
        self.nested: NestedStepError | None = None
        # The latest end time of the memoized steps read since it was reset (the time a
        # branch of a race finished).
        self.last_end = 0.0
        self.stack: Stack = EMPTY
        # The guard against nondeterministic ids: saved steps (not unreached by the
        # last pass already) that were still unvisited when this pass met a new step.
        self.fresh_unvisited: set[str] = set()
        # check-deploy: the new step met before saved ones (or the step the replay stopped at).
        self.first_new: str | None = None

    def hook(self, name: str, *args: Any, reverse: bool = False) -> None:
        """Call a middleware hook; a hook that raises ends the pass (retriably) with
        an error no ``except Exception`` in the handler can swallow."""
        if self.stack:
            try:
                getattr(self.stack, name)(*args) if name in ("memo_done", "executed") else \
                    self.stack.call(name, *args, reverse=reverse)
            except MiddlewareError as exc:
                raise Interrupt(_middleware_failed(exc)) from exc

    def transformed(self, value: Any, error: BaseException | None, step: StepInfo | None) -> Any:
        if not self.stack:
            return value
        try:
            return self.stack.output(value, error, step)
        except MiddlewareError as exc:
            raise Interrupt(_middleware_failed(exc)) from exc

    # -- op discovery ------------------------------------------------------------

    def open(self, kind: str, step_id: str) -> Op:
        running = current_step.get()
        if running is not None:
            self.nested = NestedStepError(
                f"Nested steps are not supported: ctx.step.{kind}({step_id!r}) was called "
                f"inside the running step {running!r}; call step tools from the function "
                "handler itself, one after the other"
            )
            raise Interrupt(Failed(error_info(self.nested), False))
        if not isinstance(step_id, str) or not step_id:
            raise NonRetriableError(f"step id must be a non-empty string, not {step_id!r}")
        if len(step_id) > MAX_STEP_ID_LENGTH:
            raise NonRetriableError(
                f"step id {step_id[:40]!r}... is longer than {MAX_STEP_ID_LENGTH} characters"
            )
        n = self.seen.get(step_id, 0)
        self.seen[step_id] = n + 1
        sid = step_id if n == 0 else f"{step_id}:{n}"
        if sid == self.inp.branch:
            self.branch_reached = True
        rec = self.inp.memo.get(sid)
        if rec is not None and rec.kind != kind:
            raise NonDeterminismError(
                f"step {sid!r} was memoized as ctx.step.{rec.kind} by an earlier pass, but the "
                f"handler now calls ctx.step.{kind} with that id: a saved ctx.step.{rec.kind} "
                f"result cannot answer ctx.step.{kind}. Give the new step an id of its own "
                f"(for example {step_id + '-' + kind!r}); see docs/concepts/versioning.md"
            )
        self.reached.add(sid)
        if rec is not None and rec.status in FINAL:
            self.unvisited.discard(sid)
            if not (rec.extra and "group" in rec.extra):
                if rec.seq < self.last_seq:
                    self.warn("order", f"the memoized step {sid!r} was reached after a step "
                              "that ran later than it: the steps were reordered since this run "
                              "began; each returns its saved result", step=sid)
                self.last_seq = max(self.last_seq, rec.seq)
            self.to_replay.discard(sid)
            if (self.retrying and not self.to_replay) or sid == self.stopped_step:
                self.replaying = False
        else:
            # The first step that is not final: code from here on has not run in an
            # earlier pass, so the run's logger speaks again.
            self.replaying = False
            if self.inp.dry:  # check-deploy: what follows would run; stop the replay here
                if rec is None:
                    self.check_order(Op(kind, sid, rec))
                raise Interrupt(DryStop(sid, rec is None))
        return Op(kind, sid, rec)

    def check_order(self, op: Op) -> None:
        if not self.unvisited:
            return
        if op.memo is not None and (op.memo.extra or {}).get("race"):
            return  # a race's loser runs beside the steps after the race
        if self.inp.strict:
            raise NonDeterminismError(
                f"the handler reached the new step {op.id!r} before the memoized step(s) "
                f"{sorted(self.unvisited)!r}: the order of steps changed since this run began"
                + strict_hint()
            )
        if self.inp.branch is None:
            fresh = self.unvisited - self.inp.gone
            if fresh and self.inp.diverged + 1 >= DIVERGENT_PASSES:
                raise NonDeterminismError(
                    divergence_message(op.id, fresh, self.inp.diverged + 1))
            self.fresh_unvisited |= fresh
        self.first_new = self.first_new or op.id
        self.warn(
            "order", f"the handler reached the new step {op.id!r} before the memoized step(s) "
            f"{sorted(self.unvisited)!r}: the steps changed since this run began; memoized "
            "steps still return their saved results wherever they are reached",
            step=op.id, memoized=sorted(self.unvisited),
        )

    def divergent(self) -> bool:
        """Whether this pass met a new step while saved steps went unreached (steps the
        last pass had not left unreached already): one pass of the guard's count."""
        return bool(self.fresh_unvisited & self.unvisited)

    def warn(self, kind: str, message: str, **detail: Any) -> None:
        """Record a versioning warning on the run (once per run and kind) and log it."""
        if kind not in self.warned:
            self.warned.add(kind)
            report_warning(self.sink, self.inp.fn_id, self.inp.run_id, self.inp.version,
                           kind, message, detail)

    def admit(self, op: Op) -> None:
        """Decide that ``op`` (not final) executes in this pass, or stop the pass before it."""
        self.check_order(op)
        branch = self.inp.branch
        if branch is not None:
            if op.id != branch:  # a branch task executes its own step and nothing else
                self.stopped_at = self.stopped_at or op.id
                raise Interrupt(BranchDone(branch))
            return
        if op.memo is not None and op.memo.status == "queued":
            raise Interrupt(Parallel((), (op.id,)))  # its branch task is in flight
        if self.executed and not self.inp.checkpoint:
            raise Interrupt(Continue(op.id))
        if op.memo is None and self.next_seq >= MAX_STEPS_PER_RUN:
            raise NonRetriableError(f"the run reached the limit of {MAX_STEPS_PER_RUN} steps")
        if self.executed:
            self.flush()  # checkpoint mode: each result is saved before the next step starts
        self.hook("memo_done")

    def plan_parallel(self, ops: list[Op], *, race: bool = False, go_on: bool = False) -> None:
        """Stop the pass with a parallel plan for ``ops`` (new or already in flight).
        In a ``race`` each branch rejoins the run as soon as it ends; ``go_on``: the run's
        next pass is queued at once (a decided race's losers run beside it)."""
        if not go_on:  # a race's losers run beside the run: not a change in its steps
            for op in ops:
                self.check_order(op)
        if self.inp.branch is not None:
            self.stopped_at = self.stopped_at or ops[0].id
            raise Interrupt(BranchDone(self.inp.branch))
        new = [op for op in ops if op.memo is None]
        if self.next_seq + len(new) > MAX_STEPS_PER_RUN:
            raise NonRetriableError(
                f"a parallel group of {len(new)} new steps would take the run past the limit "
                f"of {MAX_STEPS_PER_RUN} steps"
            )
        now = time.time()
        group = tuple(op.id for op in ops if not op.done)
        extra: dict[str, Any] = {"group": group, "race": True} if race else {"group": group}
        for op in new:
            self.save(self.new_record(op, status="queued", queued_at=now, extra=extra))
        raise Interrupt(Parallel(tuple(op.id for op in new), group, go_on))

    # -- records ----------------------------------------------------------------------

    def new_record(self, op: Op, **kw: Any) -> StepRecord:
        prev = op.memo
        if prev is not None:
            kw.setdefault("extra", prev.extra)
            kw.setdefault("queued_at", prev.queued_at or self.inp.queued_at)
        else:
            kw.setdefault("queued_at", self.inp.queued_at)
        rec = StepRecord(
            id=op.id,
            kind=op.kind,
            attempts=prev.attempts if prev else 0,
            seq=prev.seq if prev else self.next_seq,
            **kw,
        )
        if prev is None:
            self.next_seq += 1
            op.memo = rec
        return rec

    def memo_value(self, rec: StepRecord) -> Any:
        self.last_end = max(self.last_end, rec.ended_at or 0.0)
        if rec.status == "failed":
            err = rec.error or {}
            etype, msg = str(err.get("type", "Error")), str(err.get("message", ""))
            stack, quiet = err.get("stack"), err.get("quiet") is True
            stack = stack if isinstance(stack, str) else None
            if rec.kind == "invoke":
                raise InvokeError(
                    f"invoked function failed (step {rec.id!r}): {etype}: {msg}",
                    step_id=rec.id, name=etype, error_message=msg, stack=stack, quiet=quiet,
                )
            raise StepError(rec.id, etype, msg, stack, quiet=quiet)
        return rec.output

    def deliver(self, thunk: Callable[[], Any]) -> Any:
        """Return ``thunk()`` to a sync handler, or an awaitable of it to an async one."""
        if not self.is_async:
            return thunk()

        async def _value() -> Any:
            return thunk()

        return _value()

    def record(self, op: Op, started: float, outcome: tuple[bool, Any]) -> Any:
        """Memoize the outcome of a step just executed; return its value or raise."""
        if self.nested is not None:  # the step caught the signal of a nested step tool
            raise Interrupt(Failed(error_info(self.nested), False))
        ok, value = outcome
        prev = op.memo
        rec = self.new_record(op, started_at=started, ended_at=time.time())
        try:
            self.hook("executed")
        except Interrupt as intr:
            # after_execution raised: save the step's result first, then end the pass.
            try:
                self._record(op, rec, prev, ok, value)
            except Interrupt:
                pass
            except Exception:  # noqa: BLE001 - the step's own error, saved with it
                pass
            self.flush()
            raise intr from None
        return self._record(op, rec, prev, ok, value)

    def _record(self, op: Op, rec: StepRecord, prev: StepRecord | None, ok: bool,
                value: Any) -> Any:
        stored: Any = _SAME
        rec.attempts = (prev.attempts if prev else 0) + 1
        if prev is not None and prev.status == "retrying":  # keep the failed attempts
            rec.history = prev.with_attempt()
            rec.max_attempts = self.inp.policy.retries + 1
        if ok:
            try:
                text = dumps(value)
            except (TypeError, ValueError) as bad:
                ok, value = False, NonRetriableError(
                    f"step {op.id!r} returned a value that is not JSON-serializable "
                    f"({type(value).__name__}): {bad}"
                )
            else:
                if len(text) > MAX_STEP_OUTPUT_BYTES:
                    ok, value = False, NonRetriableError(
                        f"step {op.id!r} returned {len(text)} bytes of JSON; "
                        f"the limit is {MAX_STEP_OUTPUT_BYTES} bytes (4 MiB)"
                    )
                else:
                    rec.status, rec.output = "completed", json.loads(text)
                    if self.stack:
                        stored = self.transformed(rec.output, None, StepInfo(op.id, op.kind))
        if not ok:
            exc: BaseException = value
            if self.stack:
                self.transformed(None, exc, StepInfo(op.id, op.kind))
            rec.error = error_info(exc)
            policy = self.inp.policy
            rec.max_attempts = policy.retries + 1
            if isinstance(exc, NonRetriableError) or rec.attempts > policy.retries:
                rec.status = "failed"
            else:
                if isinstance(exc, RetryAfterError):
                    delay = exc.delay_seconds(utcnow())
                else:
                    delay = policy.delay(rec.attempts)
                rec.status, rec.retry_at = "retrying", time.time() + delay
                self._report_failure(rec)
                self.save(rec)
                raise Interrupt(RetryStep(op.id, delay))
            self._report_failure(rec)
        return self.finish(op, rec, executed=True, stored=stored)

    def _report_failure(self, rec: StepRecord) -> None:
        """Tell the sink (if it listens) that an attempt of a step failed."""
        self.sink.step_failed(rec, self.inp.policy.retries + 1)

    def finish(self, op: Op, rec: StepRecord, *, executed: bool = False, stored: Any = None) -> Any:
        """Save a final record, count it, and return its value (or raise its error).

        The record of a step this pass executed may be *deferred*: handed to the sink,
        which writes it with the end of the pass (one Redis round trip fewer per step),
        or earlier, before anything else leaves the process (:meth:`flush`).
        """
        # A middleware's transform_output changes what is saved, not what this pass
        # hands back to the handler (an encrypted output stays readable here).
        out_rec = rec if stored is None or stored is _SAME else replace(rec, output=stored)
        if executed and self.inp.branch is None:
            self._account(out_rec)
            self.sink.defer_step(out_rec)
        else:
            winner = self.save(out_rec)
            if winner is not None and winner is not out_rec:
                rec = winner  # another pass saved this step first: read it as a memo
                self.hook("transform_input", None, self.inp.function, {rec.id: rec})
            elif winner is not None:
                rec = winner if out_rec is rec else rec
        if executed:
            self.executed += 1
        op.memo = rec
        self.inp.memo[op.id] = rec
        if self.inp.branch == op.id:
            raise Interrupt(BranchDone(op.id))
        return self.memo_value(rec)

    def _account(self, rec: StepRecord) -> None:
        self.state_bytes += len(dumps(rec.to_json()))
        if self.state_bytes > MAX_RUN_STATE_BYTES and rec.status in FINAL:
            raise NonRetriableError(
                f"the run's state reached {self.state_bytes} bytes; the limit is "
                f"{MAX_RUN_STATE_BYTES} bytes (32 MiB)"
            )

    def save(self, rec: StepRecord) -> StepRecord | None:
        self._account(rec)
        try:
            self.flush()
            return self.sink.save_step(rec)
        except SaveRejected as exc:
            raise Interrupt(LeaseLost(cancelled=exc.cancelled)) from None

    def flush(self) -> None:
        """Write deferred step records now (before a side effect or the next step)."""
        try:
            self.sink.flush()
        except SaveRejected as exc:
            raise Interrupt(LeaseLost(cancelled=exc.cancelled)) from None


_SAME: Any = object()


def _middleware_failed(exc: MiddlewareError) -> Failed:
    """A hook's failure ends the pass; retried unless the hook raised a
    NonRetriableError (a key that cannot decrypt, say)."""
    cause = exc.__cause__
    if isinstance(cause, NonRetriableError):
        return Failed(error_info(cause), False)
    return Failed(error_info(exc), True)


def invoke_sync(op: Op, handler: Callable[..., Any], args: tuple[Any, ...]) -> tuple[bool, Any]:
    token = current_step.set(op.id)
    try:
        value = handler(*args)
        if inspect.isawaitable(value):
            value = run_coroutine(value)
        return True, value
    except Exception as exc:  # noqa: BLE001 - a step's error is data
        return False, exc
    finally:
        current_step.reset(token)


async def invoke_async(
    op: Op, handler: Callable[..., Any], args: tuple[Any, ...]
) -> tuple[bool, Any]:
    token = current_step.set(op.id)
    try:
        value = handler(*args)
        if inspect.isawaitable(value):
            value = await value
        return True, value
    except Exception as exc:  # noqa: BLE001
        return False, exc
    finally:
        current_step.reset(token)


def is_async_handler(handler: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004
    )
