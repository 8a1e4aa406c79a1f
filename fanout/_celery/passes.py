"""One pass of a run: take the lease, run the engine, end the pass by its outcome.

:func:`execute_pass` is the body of the ``fanout.step`` task.  The engine
(:func:`fanout._core.driver.run_pass`) says what happened as an
:data:`~fanout._core.engine.Outcome`; :func:`conclude` looks the outcome's type up
in :data:`ARMS`, and each arm ends the pass in Redis (one ``end_pass`` or
``finish_run`` that also writes the step records the pass deferred) and publishes
what comes next.  Parallel branches are in :mod:`.branches`, run endings in
:mod:`.endings`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._core.driver import run_pass
from .._core.engine import PassInput, memo_from_fields
from .._core.event import dumps
from .._core.function import FunctionDef
from .._core.ids import new_token
from .._core.outcomes import (
    Completed,
    Continue,
    Failed,
    LeaseLost,
    Outcome,
    Parallel,
    RetryStep,
    Sleep,
    Wait,
    error_info,
)
from .._core.run_record import (
    ATTEMPT,
    CREATED,
    ERROR,
    EVENT,
    EVENTS,
    LEASE,
    MAX_ATTEMPTS,
    QUEUED_AT,
    TAKEOVERS,
)
from .._core.versions import code_changed, markers_of, pass_fields, warned_kinds
from .endings import cancel_reason
from .runlog import attempt_failed, run_started
from .sink import PassSink

if TYPE_CHECKING:
    from .runtime import Runtime

log = logging.getLogger("fanout")

MAX_TAKEOVERS = 5


def function_for(rt: Runtime, fn_key: str, run_id: str) -> FunctionDef | None:
    """The function a message names, or None (logged; the run's timer offers it again)."""
    fn = rt.functions.get(fn_key)
    if fn is None:
        log.error(
            "fanout: run %s belongs to function %s, which this worker does not declare; "
            "its timer will offer it again",
            run_id,
            fn_key,
        )
        rt.store.arm(run_id, time.time() + rt.recovery_timeout)
    return fn


def pass_input(rt: Runtime, fn: FunctionDef, run_id: str, fields: dict[str, str],
               branch: str | None = None) -> PassInput:
    """What the engine needs from the run's hash for one pass or branch."""
    memo = memo_from_fields(fields)
    event = rt.parse_json(fields.get(EVENT, "{}"))
    events = rt.parse_json(fields[EVENTS]) if EVENTS in fields else [event]
    attempt = int(fields.get(ATTEMPT, "0"))
    retrying = [r.attempts for r in memo.values() if r.status == "retrying"]
    return PassInput(
        run_id=run_id, fn_id=fn.fn_id, event=event, events=events,
        attempt=max([attempt, *retrying]), memo=memo, checkpoint=fn.checkpoint,
        policy=fn.policy, branch=branch, strict=fn.strict_order,
        code_changed=code_changed(fn.version, fields),
        warned=warned_kinds(fields), markers=markers_of(fields),
        patches=frozenset(fn.patches), version=fn.version,
        logger=fn.logger_of() if fn.logger_of is not None else None,
        queued_at=float(fields.get(QUEUED_AT) or fields.get(CREATED) or 0) or None,
        state_bytes=sum(len(k) + len(v) for k, v in fields.items()),
        middleware=fn.middleware, client=fn.client, function=fn,
    )


def run_engine(fn: FunctionDef, inp: PassInput, sink: PassSink) -> Outcome:
    try:
        return run_pass(fn.handler, inp, sink, is_async=fn.is_async)
    except Exception as exc:  # an engine fault: retry the pass, never lose the run
        log.exception("fanout: internal error in a pass of run %s", inp.run_id)
        return Failed(error_info(exc), True)


def execute_pass(rt: Runtime, fn_key: str, run_id: str, seq: int | None) -> None:
    if rt.pausing.maybe_park(fn_key, run_id, seq):
        return
    fn = function_for(rt, fn_key, run_id)
    if fn is None:
        return
    store = rt.store
    token = new_token()
    lease_ms = int((time.time() + rt.lease_s) * 1000)
    head, fields = store.begin_pass(run_id, token, lease_ms, seq)
    if head == "cancel":  # cancelled while a worker that has since died held it
        rt.finish(run_id, "", "cancelled", None, cancel_reason(rt, run_id))
        return
    if head != "ok":
        return
    rt.leases.hold(run_id, LEASE, token, lease_ms)
    hold = None
    try:
        if int(fields.get(TAKEOVERS, "0")) > MAX_TAKEOVERS:
            rt.finish(run_id, token, "failed", None, {
                "type": "WorkerLost",
                "message": f"the worker running this run died {MAX_TAKEOVERS + 1} times in "
                "a row (a step that kills its process?); the run was stopped",
            }, fields)
            return
        if fn.flow.at_pass:  # timeouts, batch/debounce close, concurrency slots
            go, hold = rt.flow.before_pass(fn, run_id, token, fields, lease_ms)
            if not go:
                return
        inp = pass_input(rt, fn, run_id, fields)
        if inp.attempt == 0 and not inp.memo and fields.get(TAKEOVERS, "0") == "0":
            run_started(fn.key, run_id)
        sink = PassSink(rt, fn, run_id, token, fields)
        outcome = run_engine(fn, inp, sink)
        rt.flow.release(hold)  # the step is over: free the slot before the next pass
        marks = pass_fields(fn.version, fields, sink.warnings)  # versions, warnings
        conclude(rt, fn, run_id, token, outcome, fields, {**sink.take_deferred(), **marks})
    finally:
        rt.flow.release(hold)
        rt.leases.release(run_id, LEASE)


# -- ending a pass, by outcome ------------------------------------------------------------


@dataclass
class PassEnd:
    """What every arm of :func:`conclude` needs: the pass, and the run fields its
    ``end_pass`` writes (``end``: the deferred step records, the takeover count reset,
    the next pass's queue time)."""

    rt: Runtime
    fn: FunctionDef
    run_id: str
    token: str
    fields: dict[str, str]
    steps: dict[str, str]
    end: dict[str, Any]
    attempt: int

    def finish(self, status: str, output: Any, error: dict[str, Any] | None) -> None:
        self.rt.finish(self.run_id, self.token, status, output, error, self.fields, self.steps)

    def end_pass(self, status: str, **kw: Any) -> tuple[int | None, bool]:
        return self.rt.store.end_pass(self.run_id, self.token, status, fields=self.end, **kw)

    def clamp(self, wake: float) -> float:
        """A wake time no later than the run's finish deadline (flow control)."""
        return self.rt.flow.clamp_wake(self.fn, self.fields, wake)


#: An arm ends the pass for one kind of outcome; it returns the new pass sequence
#: from ``end_pass`` (-1: the run was cancelled meanwhile) or None when nothing more
#: is to be done.
Arm = Callable[[PassEnd, Any], "int | None"]


def _completed(p: PassEnd, outcome: Completed) -> int | None:
    p.finish("completed", outcome.output, None)
    return None


def _lease_lost(p: PassEnd, outcome: LeaseLost) -> int | None:
    if outcome.cancelled:
        p.finish("cancelled", None, cancel_reason(p.rt, p.run_id))
    else:
        log.warning("fanout: run %s was taken over by another worker mid-pass", p.run_id)
    return None


def _failed(p: PassEnd, outcome: Failed) -> int | None:
    fn, attempt = p.fn, p.attempt
    if not (outcome.retriable and attempt < fn.retries):
        p.finish("failed", None, outcome.error)
        return None
    delay = outcome.retry_after if outcome.retry_after is not None else fn.policy.delay(attempt + 1)
    p.end.update({ATTEMPT: attempt + 1, ERROR: dumps(outcome.error),
                  MAX_ATTEMPTS: fn.retries + 1})
    wake = p.clamp(time.time() + delay)
    attempt_failed(fn.key, p.run_id, None, attempt + 1, fn.retries + 1, outcome.error, wake)
    p.end[QUEUED_AT] = repr(wake)
    seq, _r = p.end_pass("running", wake=wake)
    return seq


def _retry_step(p: PassEnd, outcome: RetryStep) -> int | None:
    wake = p.clamp(time.time() + outcome.delay)
    p.end[QUEUED_AT] = repr(wake)
    seq, _r = p.end_pass("running", wake=wake)
    return seq


def _sleep(p: PassEnd, outcome: Sleep) -> int | None:
    wake = p.clamp(outcome.until)
    p.end[QUEUED_AT] = repr(wake)
    seq, _r = p.end_pass("sleeping", wake=wake)
    return seq


def _wait(p: PassEnd, outcome: Wait) -> int | None:
    store = p.rt.store
    until = p.clamp(outcome.until)
    p.end[QUEUED_AT] = repr(until)  # the timeout; an event that resolves the wait sets 'qa'
    seq, resolved = p.end_pass("waiting", wake=until, awaiting=outcome.step_id)
    if resolved and seq is not None and seq >= 0:
        p.rt.enqueue(p.fn.key, p.run_id, seq)
        watch = int((time.time() + store.watchdog) * 1000)
        store.retime(int(until * 1000), {p.run_id: watch})
    return seq


def _parallel(p: PassEnd, outcome: Parallel) -> int | None:
    # Arm each new branch's recovery timer before releasing the run, then
    # release it, then enqueue the branches: a branch that joins at once
    # must find the run free to continue.
    rt, store = p.rt, p.rt.store
    due = time.time() + rt.lease_s
    for sid in outcome.new:
        store.arm(f"branch:{p.run_id}:{sid}", due)
    seq, _r = p.end_pass("running")
    if seq is not None and seq >= 0:
        with rt.publisher.batch() as producer:
            for sid in outcome.new:
                rt.enqueue(p.fn.key, p.run_id, None, branch=sid, producer=producer)
    return seq


def _continue(p: PassEnd, outcome: Continue) -> int | None:
    seq, _r = p.end_pass("queued")
    if seq is not None and seq >= 0:
        p.rt.enqueue(p.fn.key, p.run_id, seq)
    return seq


#: The pass state machine: outcome type -> arm.  ``BranchDone`` has no arm: it
#: cannot end a normal pass (only a branch, see :mod:`.branches`).
ARMS: dict[type, Arm] = {
    Completed: _completed,
    LeaseLost: _lease_lost,
    Failed: _failed,
    RetryStep: _retry_step,
    Sleep: _sleep,
    Wait: _wait,
    Parallel: _parallel,
    Continue: _continue,
}


def conclude(
    rt: Runtime, fn: FunctionDef, run_id: str, token: str, outcome: Outcome,
    fields: dict[str, str], steps: dict[str, str],
) -> None:
    """End the pass. ``steps`` are the step records the pass deferred: the same
    script that releases the lease or finishes the run writes them."""
    attempt = int(fields.get(ATTEMPT, "0"))
    end: dict[str, Any] = {**steps, TAKEOVERS: 0, QUEUED_AT: repr(time.time())}
    arm = ARMS.get(type(outcome))
    seq = None if arm is None else arm(PassEnd(rt, fn, run_id, token, fields, steps, end, attempt),
                                       outcome)
    if seq == -1:  # end_pass wrote the step records, then found the cancel request
        rt.finish(run_id, token, "cancelled", None, cancel_reason(rt, run_id), fields)
