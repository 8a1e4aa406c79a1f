"""The life of a pass, and of a parallel branch, against a :class:`RunStore`.

One code path for a worker and for the test harness: :func:`one_pass` takes the
run's lease (``begin_pass``), reads the run into a :class:`PassInput`, runs the
engine through a :class:`RunSink`, and :func:`conclude` ends the pass by the
outcome's type (:data:`ARMS`): ``end_pass`` or ``finish_run`` writes the step
records the pass deferred, and the next message is asked for.  A pass that reached
the run's next step goes on to it in the same task while the function's
``pass_budget`` allows (:func:`may_go_on`): ``go_on`` ends the pass and begins the
next under the same lease in one store call, and no message is sent.  ``branches.one_branch``
is the same for one branch of a parallel group (``branches.BRANCH_ARMS``).

What differs between a worker and the harness is the :class:`Host`: the store it
holds (Redis, or :class:`~fanout._core.memory_store.MemoryRunStore`), how a message
is sent (the broker, or the harness's queue), how a run's end is told (system
events, the invoking parent, logs), and flow control's gates, which the harness
does not apply.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .driver import run_pass
from .engine import PassInput
from .event import Event, dumps
from .function import FunctionDef
from .ids import new_token
from .outcomes import (
    Completed,
    Continue,
    Failed,
    LeaseLost,
    Outcome,
    Parallel,
    RetryStep,
    SaveRejected,
    Sleep,
    Wait,
    error_info,
)
from .records import StepRecord
from .run_record import (
    ATTEMPT,
    CANCEL,
    CREATED,
    ERROR,
    EVENT,
    EVENTS,
    LEASE,
    MAX_ATTEMPTS,
    OUTPUT,
    QUEUED_AT,
    RETRY_PASS,
    SEQ,
    TAKEOVERS,
    branch_lease_field,
    step_field,
    step_records,
)
from .run_store import RunStore, branch_timer
from .versions import divergence_fields, divergence_of, markers_of, pass_fields, warned_kinds

log = logging.getLogger("fanout")

#: A run whose pass was taken over from a dead worker more than this many times in a
#: row is failed (a step that kills its process would otherwise loop forever).
MAX_TAKEOVERS = 5


class RunSink:
    """The engine's view of the store during one pass or branch: step records are
    saved under the pass's lease, or deferred to be written with the end of the pass.
    Sending events, waits and invokes are the host's (subclasses)."""

    def __init__(
        self, store: RunStore, fn: FunctionDef, run_id: str, token: str,
        fields: dict[str, str], branch: str | None = None, group: Sequence[str] = (),
    ) -> None:
        self.store, self.fn, self.run_id, self.token, self.fields = store, fn, run_id, token, fields
        self.lease_field = LEASE if branch is None else branch_lease_field(branch)
        self.group = group
        self.joined = False
        # (record, its JSON at the time): what the pass hands back to the handler may
        # be changed by it (or by a serializer) before the record is written.
        self.deferred: list[tuple[StepRecord, str]] = []
        self.warnings: list[dict[str, Any]] = []
        self.divergence: tuple[bool, list[str]] | None = None

    def pass_divergence(self, divergent: bool, unreached: list[str]) -> None:
        """The guard against nondeterministic step ids: whether this pass met a new step
        while saved steps went unreached, and the saved steps it left unreached."""
        self.divergence = (divergent, unreached)

    def versioning_warning(self, entry: dict[str, Any]) -> None:
        """A versioning warning (order changed, steps unreached): recorded on the run
        with the end of the pass."""
        self.warnings.append(entry)

    @property
    def max_event_bytes(self) -> int:
        """The client's limit on one event's size, for ``ctx.step.send_event``."""
        return self.fn.max_event_bytes

    def defer_step(self, record: StepRecord) -> None:
        """Keep a step record to write with the end of the pass (see Pass.finish)."""
        self.deferred.append((record, dumps(record.to_json())))

    def step_failed(self, record: StepRecord, attempts: int) -> None:
        """An attempt of a step failed (a worker logs it)."""

    def flush(self) -> None:
        records, self.deferred = self.deferred, []
        for _rec, text in records:
            self.save_step(StepRecord.from_json(json.loads(text)))

    def take_deferred(self) -> dict[str, str]:
        """The deferred records as run-hash fields, for end_pass / finish_run."""
        records, self.deferred = self.deferred, []
        return {step_field(rec.id): text for rec, text in records}

    def save_step(self, record: StepRecord) -> StepRecord | None:
        head, existing, joined = self.store.save_step(
            self.run_id, self.token, record, lease_field=self.lease_field, group=self.group
        )
        if head == "lost":
            raise SaveRejected(self.run_id)
        if head == "cancel":
            raise SaveRejected(self.run_id, cancelled=True)
        self.joined = self.joined or joined
        return existing

    def send_events(self, step_id: str, events: list[tuple[Event, str]]) -> list[str]:
        raise NotImplementedError

    def register_wait(self, step_id: str, spec: dict[str, Any]) -> dict[str, Any] | None:
        raise NotImplementedError

    def drop_wait(self, step_id: str, event_name: str) -> None:
        raise NotImplementedError

    def start_invoke(self, step_id: str, fn_ref: Any, data: dict[str, Any], seq: int) -> str:
        raise NotImplementedError


class Host:
    """What runs passes around the store. The defaults are the harness's (no leases
    to renew, no flow control, no logs); a worker overrides them."""

    store: RunStore
    lease_s: float = 60.0

    def sink(self, fn: FunctionDef, run_id: str, token: str, fields: dict[str, str],
             branch: str | None = None, group: Sequence[str] = ()) -> RunSink:
        raise NotImplementedError

    def enqueue(self, fn_key: str, run_id: str, seq: int | None, *,
                branch: str | None = None) -> None:
        """Send the message of a run's next pass (``seq``; None: whichever is next)
        or of one of its branches."""
        raise NotImplementedError

    def enqueue_branches(self, fn_key: str, run_id: str, step_ids: Sequence[str]) -> None:
        for sid in step_ids:
            self.enqueue(fn_key, run_id, None, branch=sid)

    def finish(self, run_id: str, token: str, status: str, output: Any,
               error: dict[str, Any] | None, fields: dict[str, str] | None = None,
               steps: dict[str, str] | None = None) -> None:
        """End the run (:func:`end_run`) and tell whoever must know."""
        raise NotImplementedError

    def hold_lease(self, run_id: str, lease_field: str, token: str, lease_ms: int) -> None:
        """A lease was taken: keep it alive while the pass runs."""

    def drop_lease(self, run_id: str, lease_field: str) -> None:
        """The pass is over: stop renewing its lease."""

    def lease_score(self, run_id: str, lease_field: str) -> int:
        """The timer score last written for a lease (for a conditional removal)."""
        return 0

    def before_pass(self, fn: FunctionDef, run_id: str, token: str, fields: dict[str, str],
                    lease_ms: int) -> tuple[bool, Any]:
        """Flow control as a pass begins: (go, the slots held); ``go`` False means the
        pass was ended here."""
        return True, None

    def acquire(self, fn: FunctionDef, run_id: str, token: str, fields: dict[str, str],
                lease_ms: int, branch: str) -> Any:
        """The concurrency slots of a branch, or None when it must wait."""
        return True

    def release(self, hold: Any) -> None:
        """Give back the slots a pass or branch held (once)."""

    def clamp(self, fn: FunctionDef, fields: Mapping[str, str], wake: float) -> float:
        """A wake time no later than the run's finish deadline."""
        return wake

    def run_started(self, fn: FunctionDef, run_id: str) -> None:
        """The first pass of a run begins."""

    def may_go_on(self, fn: FunctionDef, run_id: str) -> bool:
        """Whether a pass may go on to the run's next step in this task (the budget and
        the function's options are checked by :func:`may_go_on`)."""
        return True

    def went_on(self, fn: FunctionDef, run_id: str, seq: int) -> None:
        """Pass ``seq`` of the run begins in the task of the pass before it."""

    def attempt_failed(self, fn: FunctionDef, run_id: str, attempt: int, attempts: int,
                       error: dict[str, Any], retry_at: float) -> None:
        """An attempt of the run's code outside any step failed and will be retried."""


@dataclass
class Ran:
    """What a pass or branch did: its outcome, when it ended (``now``), the run's new
    pass sequence, when it is due again if it waits for a timer, and how many passes
    ran in the task (a pass that went on to the next step: more than one)."""

    outcome: Outcome
    now: float
    seq: int | None = None
    wake: float | None = None
    passes: int = 1


# -- a pass --------------------------------------------------------------------------------


def pass_input(fn: FunctionDef, run_id: str, fields: Mapping[str, str],
               branch: str | None = None) -> PassInput:
    """What the engine needs from the run's hash for one pass or branch."""
    memo = step_records(fields)
    event = json.loads(fields.get(EVENT, "{}"))
    events = json.loads(fields[EVENTS]) if EVENTS in fields else [event]
    attempt = int(fields.get(ATTEMPT, "0"))
    retrying = [r.attempts for r in memo.values() if r.status == "retrying"]
    diverged, gone = divergence_of(fields)
    # Only the pass right after a failure outside steps retries that code; the run's
    # attempt number stays up after it.
    retry_pass = attempt > 0 and _number(fields.get(RETRY_PASS)) == _number(fields.get(SEQ))
    return PassInput(
        run_id=run_id, fn_id=fn.fn_id, event=event, events=events,
        attempt=max([attempt, *retrying]), memo=memo, checkpoint=fn.checkpoint,
        policy=fn.policy, branch=branch, strict=fn.strict_order,
        diverged=diverged, gone=gone, retry_pass=retry_pass,
        warned=warned_kinds(fields), markers=markers_of(fields),
        patches=frozenset(fn.patches), version=fn.version,
        logger=fn.logger_of() if fn.logger_of is not None else None,
        queued_at=float(fields.get(QUEUED_AT) or fields.get(CREATED) or 0) or None,
        state_bytes=sum(len(k) + len(v) for k, v in fields.items()),
        middleware=fn.middleware, client=fn.client, function=fn,
    )


def _number(raw: str | None) -> int:
    try:
        return int(float(raw or 0))
    except ValueError:
        return -1


def run_engine(fn: FunctionDef, inp: PassInput, sink: RunSink) -> Outcome:
    try:
        return run_pass(fn.handler, inp, sink, is_async=fn.is_async)
    except Exception as exc:  # an engine fault: retry the pass, never lose the run
        log.exception("fanout: internal error in a pass of run %s", inp.run_id)
        return Failed(error_info(exc), True)


def cancel_reason(store: RunStore, run_id: str) -> dict[str, Any]:
    """The error a cancel request recorded for the run."""
    raw = store.run_fields(run_id).get(CANCEL)
    return json.loads(raw) if raw else {"type": "Cancelled", "message": "cancelled"}


def end_run(store: RunStore, run_id: str, token: str, status: str, output: Any,
            error: dict[str, Any] | None, steps: Mapping[str, str] | None = None,
            ) -> tuple[str, dict[str, Any] | None] | None:
    """Finish the run (writing the deferred step records with it); the status and
    error it ended with, or None when it had ended already or the lease was lost."""
    values: dict[str, Any] = dict(steps or {})
    if status == "completed":
        values[OUTPUT] = dumps(output)
        values[ERROR] = ""  # an earlier attempt's error no longer describes the run
    if error is not None:
        values[ERROR] = dumps(error)
    ended = store.finish_run(run_id, token, status, values)
    if not ended:
        return None
    if ended == 2:  # a cancel matched while the last pass ran: the run is cancelled
        return "cancelled", cancel_reason(store, run_id)
    return status, error


def one_pass(host: Host, fn: FunctionDef, run_id: str, seq: int | None) -> Ran | None:
    """Run a pass of ``run_id`` (the message for pass ``seq``; None: a wake-up), and
    the passes after it while the run goes on at once and :func:`may_go_on` allows.
    None when no pass ran (the run was not ready, or ended here)."""
    store = host.store
    token = new_token()
    lease_ms = int((time.time() + host.lease_s) * 1000)
    head, fields = store.begin_pass(run_id, token, lease_ms, seq)
    if head == "cancel":  # cancelled while a worker that has since died held it
        host.finish(run_id, "", "cancelled", None, cancel_reason(store, run_id))
        return None
    if head != "ok":
        return None
    host.hold_lease(run_id, LEASE, token, lease_ms)
    hold = None
    began, passes = time.monotonic(), 0
    try:
        if int(fields.get(TAKEOVERS, "0")) > MAX_TAKEOVERS:
            host.finish(run_id, token, "failed", None, {
                "type": "WorkerLost",
                "message": f"the worker running this run died {MAX_TAKEOVERS + 1} times in "
                "a row (a step that kills its process?); the run was stopped",
            }, fields)
            return None
        if fn.flow.at_pass:  # timeouts, batch/debounce close, concurrency slots
            go, hold = host.before_pass(fn, run_id, token, fields, lease_ms)
            if not go:
                return None
        while True:
            passes += 1
            inp = pass_input(fn, run_id, fields)
            if (passes == 1 and inp.attempt == 0 and not inp.memo
                    and fields.get(TAKEOVERS, "0") == "0"):
                host.run_started(fn, run_id)
            sink = host.sink(fn, run_id, token, fields)
            outcome = run_engine(fn, inp, sink)
            host.release(hold)  # the step is over: free the slot before the next pass
            marks = pass_fields(fn.version, fields, sink.warnings)  # versions, warnings
            if sink.divergence is not None:
                marks.update(divergence_fields(fields, *sink.divergence))
            steps = {**sink.take_deferred(), **marks}
            if isinstance(outcome, Continue) and may_go_on(host, fn, run_id, began):
                now = time.time()
                # The lease is renewed only once a third of it has gone by (as the
                # lease thread would): a chain of quick steps keeps it, and its timer.
                renew = lease_ms - now * 1000 < host.lease_s * 2000 / 3
                new_ms = int((now + host.lease_s) * 1000) if renew else 0
                head, after = store.go_on(run_id, token, new_ms,
                                          {**steps, TAKEOVERS: 0, QUEUED_AT: repr(now)})
                if head == "ok":
                    fields = after
                    if renew:
                        lease_ms = new_ms
                        host.hold_lease(run_id, LEASE, token, lease_ms)
                    host.went_on(fn, run_id, int(fields.get(SEQ, "0")))
                    continue
                if head == "cancel":  # as after end_pass's -1: the records are written
                    host.finish(run_id, token, "cancelled", None, cancel_reason(store, run_id),
                                fields)
                    return Ran(outcome, now, -1, passes=passes)
                log.warning("fanout: run %s was taken over by another worker mid-pass", run_id)
                return Ran(outcome, now, passes=passes)
            ran = conclude(host, fn, run_id, token, outcome, fields, steps)
            ran.passes = passes
            return ran
    finally:
        host.release(hold)
        host.drop_lease(run_id, LEASE)


def may_go_on(host: Host, fn: FunctionDef, run_id: str, began: float) -> bool:
    """Whether a pass that reached the run's next step runs it in the same task: the
    function's ``pass_budget`` (seconds since the task's first pass began) is not
    spent, the function has no flow control at pass time and is not in checkpoint
    mode (which runs every step in one pass already), and the host allows it (a
    worker: the function is not paused, the worker is not shutting down)."""
    return (fn.pass_budget > 0 and not fn.checkpoint and not fn.flow.at_pass
            and time.monotonic() - began < fn.pass_budget and host.may_go_on(fn, run_id))


# -- ending a pass, by outcome ------------------------------------------------------------


@dataclass
class PassEnd:
    """What every arm of :func:`conclude` needs: the pass, and the run fields its
    ``end_pass`` writes (``end``: the deferred step records, the takeover count reset,
    the next pass's queue time)."""

    host: Host
    fn: FunctionDef
    run_id: str
    token: str
    fields: dict[str, str]
    steps: dict[str, str]
    end: dict[str, Any]
    attempt: int
    now: float
    wake: float | None = field(default=None)

    def finish(self, status: str, output: Any, error: dict[str, Any] | None) -> None:
        self.host.finish(self.run_id, self.token, status, output, error, self.fields,
                         self.steps)

    def end_pass(self, status: str, **kw: Any) -> tuple[int | None, bool]:
        return self.host.store.end_pass(self.run_id, self.token, status, fields=self.end, **kw)

    def until(self, wake: float) -> float:
        """The run waits for a timer: at ``wake``, no later than its finish deadline."""
        self.wake = self.host.clamp(self.fn, self.fields, wake)
        self.end[QUEUED_AT] = repr(self.wake)
        return self.wake


#: An arm ends the pass for one kind of outcome; it returns the new pass sequence
#: from ``end_pass`` (-1: the run was cancelled meanwhile) or None when nothing more
#: is to be done.
Arm = Callable[[PassEnd, Any], "int | None"]


def _completed(p: PassEnd, outcome: Completed) -> int | None:
    p.finish("completed", outcome.output, None)
    return None


def _lease_lost(p: PassEnd, outcome: LeaseLost) -> int | None:
    if outcome.cancelled:
        p.finish("cancelled", None, cancel_reason(p.host.store, p.run_id))
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
                  MAX_ATTEMPTS: fn.retries + 1,
                  RETRY_PASS: int(float(p.fields.get(SEQ) or 0)) + 1})
    wake = p.until(p.now + delay)
    p.host.attempt_failed(fn, p.run_id, attempt + 1, fn.retries + 1, outcome.error, wake)
    seq, _r = p.end_pass("running", wake=wake)
    return seq


def _retry_step(p: PassEnd, outcome: RetryStep) -> int | None:
    seq, _r = p.end_pass("running", wake=p.until(p.now + outcome.delay))
    return seq


def _sleep(p: PassEnd, outcome: Sleep) -> int | None:
    seq, _r = p.end_pass("sleeping", wake=p.until(outcome.until))
    return seq


def _wait(p: PassEnd, outcome: Wait) -> int | None:
    store = p.host.store
    until = p.until(outcome.until)  # the timeout; an event that resolves the wait sets 'qa'
    seq, resolved = p.end_pass("waiting", wake=until, awaiting=outcome.step_id)
    if resolved and seq is not None and seq >= 0:
        p.wake = None
        p.host.enqueue(p.fn.key, p.run_id, seq)
        watch = int((time.time() + store.watchdog) * 1000)
        store.retime(int(until * 1000), {p.run_id: watch})
    return seq


def _parallel(p: PassEnd, outcome: Parallel) -> int | None:
    # Arm each new branch's recovery timer before releasing the run, then
    # release it, then enqueue the branches: a branch that joins at once
    # must find the run free to continue.
    host, store = p.host, p.host.store
    due = time.time() + host.lease_s
    for sid in outcome.new:
        store.arm(branch_timer(p.run_id, sid), due)
    seq, _r = p.end_pass("running")
    if seq is not None and seq >= 0:
        host.enqueue_branches(p.fn.key, p.run_id, outcome.new)
        if outcome.go_on:  # a decided race's losers: the run goes on beside them
            host.enqueue(p.fn.key, p.run_id, seq)
    return seq


def _continue(p: PassEnd, outcome: Continue) -> int | None:
    seq, _r = p.end_pass("queued")
    if seq is not None and seq >= 0:
        p.host.enqueue(p.fn.key, p.run_id, seq)
    return seq


#: The pass state machine: outcome type -> arm.  ``BranchDone`` has no arm: it
#: cannot end a normal pass (only a branch, see ``branches.BRANCH_ARMS``).
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
    host: Host, fn: FunctionDef, run_id: str, token: str, outcome: Outcome,
    fields: dict[str, str], steps: dict[str, str],
) -> Ran:
    """End the pass. ``steps`` are the step records the pass deferred: the same
    script that releases the lease or finishes the run writes them."""
    now = time.time()
    attempt = int(fields.get(ATTEMPT, "0"))
    end: dict[str, Any] = {**steps, TAKEOVERS: 0, QUEUED_AT: repr(now)}
    p = PassEnd(host, fn, run_id, token, fields, steps, end, attempt, now)
    arm = ARMS.get(type(outcome))
    seq = None if arm is None else arm(p, outcome)
    if seq == -1:  # end_pass wrote the step records, then found the cancel request
        host.finish(run_id, token, "cancelled", None, cancel_reason(host.store, run_id), fields)
    return Ran(outcome, now, seq, p.wake if seq is not None and seq >= 0 else None)
