"""Run one function in the test's process, pass after pass, with no Redis and no worker.

The harness drives the same replay engine as a worker (:func:`fanout._core.driver.run_pass`
with the same step tools and step-id rules); only the outside world is replaced:

* the :class:`Sink` keeps step records in a dict (round-tripped through JSON, as
  Redis would) and captures sent events;
* what a worker's timer thread and router do between passes, the harness does at
  once on a virtual clock: a sleep ends, a retry's backoff is skipped, a wait gets
  the answer the test gave (or times out), an invoked child returns the answer the
  test gave (or times out);
* parallel branches run one after the other, each as its own branch pass, then the
  fan-in pass continues, as on Celery.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .._errors import ConfigError, InvokeError
from .driver import run_pass
from .engine import (
    FINAL,
    BranchDone,
    Completed,
    Continue,
    Failed,
    LeaseLost,
    Outcome,
    Parallel,
    PassInput,
    RetryStep,
    Sleep,
    Wait,
)
from .event import Event, prepare_batch
from .function import FunctionDef
from .ids import derived_event_id, run_id_for
from .records import StepInfo, StepRecord, child_error
from .step_tools import StepTools as Step
from .waits import wait_matches

__all__ = ["RunResult", "run_function", "run_function_async"]

MAX_PASSES = 10_000


@dataclass(frozen=True)
class RunResult:
    """What :func:`run_function` returns."""

    run_id: str
    status: str  # "completed" or "failed"
    output: Any
    error: dict[str, Any] | None
    #: Every step the run made, in the order they were first reached, with attempts.
    steps: list[StepInfo]
    #: Events sent by ``ctx.step.send_event``, with the ids a worker would give them.
    events: list[Event]
    #: Children started by ``ctx.step.invoke``: ``{"step", "function", "data"}``.
    invoked: list[dict[str, Any]]
    #: Passes run (branch passes included) and function-level attempts.
    passes: int
    attempt: int
    #: Seconds skipped on the virtual clock (sleeps, timeouts, retry backoff), to the ms.
    skipped_seconds: float = 0.0
    _by_id: dict[str, StepInfo] = field(default_factory=dict, repr=False)

    @property
    def step_ids(self) -> list[str]:
        return [s.step_id for s in self.steps]

    def step(self, step_id: str) -> StepInfo:
        """One step by id; KeyError naming the steps there are."""
        try:
            return self._by_id[step_id]
        except KeyError:
            raise KeyError(f"no step {step_id!r}; the run's steps are {self.step_ids!r}") from None


def _resolve_key(fn: FunctionDef, ref: Any) -> str:
    target = getattr(ref, "fanout_function", ref)
    if isinstance(target, FunctionDef):
        return target.key
    if isinstance(ref, str) and ref:
        return ref if ref.startswith(f"{fn.app_id}:") else f"{fn.app_id}:{ref}"
    raise InvokeError(f"cannot invoke {ref!r}: it is not a function declared on this app")


class _Sink:
    def __init__(self, h: _Harness) -> None:
        self.h = h

    @property
    def max_event_bytes(self) -> int:
        return self.h.fn.max_event_bytes

    def save_step(self, record: StepRecord) -> StepRecord | None:
        existing = self.h.memo.get(record.id)
        if existing is not None and existing.status in FINAL:
            return _roundtrip(existing)
        self.h.memo[record.id] = _roundtrip(record)
        return None

    def send_events(self, step_id: str, events: list[tuple[Event, str]]) -> list[str]:
        known = {e.id for e in self.h.sent}
        self.h.sent.extend(ev for ev, _ in events if ev.id not in known)
        return [ev.id or "" for ev, _ in events]

    def register_wait(self, step_id: str, spec: dict[str, Any]) -> dict[str, Any] | None:
        return None  # answered between passes, as the router would

    def drop_wait(self, step_id: str, event_name: str) -> None:
        return None

    def start_invoke(self, step_id: str, fn_ref: Any, data: dict[str, Any], seq: int) -> str:
        key = _resolve_key(self.h.fn, fn_ref)
        self.h.invoked.append({"step": step_id, "function": key, "data": data})
        return run_id_for(derived_event_id(self.h.run_id, step_id, 0), key)

    def defer_step(self, record: StepRecord) -> None:
        self.save_step(record)  # nothing to batch in memory: saved at once

    def flush(self) -> None:
        return None

    def step_failed(self, record: StepRecord, attempts: int) -> None:
        return None


def _roundtrip(rec: StepRecord) -> StepRecord:
    return StepRecord.from_json(json.loads(json.dumps(rec.to_json())))


def _lookup(table: Mapping[str, Any], sid: str) -> tuple[bool, Any, str]:
    """A test's answer for step ``sid`` (``"charge:1"``), by exact id or by base id."""
    if sid in table:
        return True, table[sid], sid
    base = sid.rsplit(":", 1)[0] if ":" in sid and sid.rsplit(":", 1)[1].isdigit() else sid
    if base in table:
        return True, table[base], base
    return False, None, sid


class _MockStep(Step):
    """``ctx.step`` with some ``run`` handlers replaced by the test's mocks."""

    def __init__(self, inner: Step, mocks: Mapping[str, Any], used: set[str]) -> None:
        super().__init__(inner._p)
        self._mocks, self._used = mocks, used

    def run(
        self, step_id: str, handler: Callable[..., Any], *args: Any, output_type: Any = None
    ) -> Any:
        if isinstance(step_id, str) and step_id:
            n = self._p.seen.get(step_id, 0)
            sid = step_id if n == 0 else f"{step_id}:{n}"
            found, mock, key = _lookup(self._mocks, sid)
            if found:
                self._used.add(key)
                handler = _as_handler(mock)
        return super().run(step_id, handler, *args, output_type=output_type)


def _as_handler(mock: Any) -> Callable[..., Any]:
    if isinstance(mock, BaseException):
        def _raise(*_: Any) -> Any:
            raise copy.copy(mock)
        return _raise
    if callable(mock):
        return mock  # type: ignore[no-any-return]
    return lambda *_: copy.deepcopy(mock)


class _Harness:
    def __init__(self, fn: FunctionDef, events: list[dict[str, Any]], steps: Mapping[str, Any],
                 waits: Mapping[str, Any], invokes: Mapping[str, Any]) -> None:
        self.fn, self.events = fn, events
        self.run_id = run_id_for(events[0]["id"], fn.key)
        self.memo: dict[str, StepRecord] = {}
        self.sent: list[Event] = []
        self.invoked: list[dict[str, Any]] = []
        self.mocks, self.waits, self.invokes = steps, waits, invokes
        self.used: set[str] = set()
        self.skipped = 0.0
        self.passes = 0
        self.attempt = 0
        self.sink = _Sink(self)
        self.handler = self._wrap(fn.handler)

    def _wrap(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        mocks, used = self.mocks, self.used
        if not mocks:
            return handler

        def patch(ctx: Any) -> Any:
            ctx.step = _MockStep(ctx.step, mocks, used)
            return ctx

        if self.fn.is_async:
            async def wrapped_async(ctx: Any) -> Any:
                return await handler(patch(ctx))
            return wrapped_async
        return lambda ctx: handler(patch(ctx))

    def _pass(self, branch: str | None = None) -> Outcome:
        self.passes += 1
        if self.passes > MAX_PASSES:
            raise ConfigError(f"the run did not end within {MAX_PASSES} passes")
        memo = {k: _roundtrip(r) for k, r in self.memo.items()}
        retrying = [r.attempts for r in memo.values() if r.status == "retrying"]
        inp = PassInput(
            run_id=self.run_id, fn_id=self.fn.fn_id, event=copy.deepcopy(self.events[0]),
            events=copy.deepcopy(self.events), attempt=max([self.attempt, *retrying]), memo=memo,
            checkpoint=self.fn.checkpoint, policy=self.fn.policy, branch=branch,
            queued_at=time.time(), middleware=self.fn.middleware, client=self.fn.client,
            function=self.fn, strict=self.fn.strict_order, version=self.fn.version,
            # A harness run begins on the code under test: it has the declared markers.
            markers=frozenset(self.fn.patches), patches=frozenset(self.fn.patches),
            logger=self.fn.logger_of() if self.fn.logger_of is not None else None,
        )
        return run_pass(self.handler, inp, self.sink, is_async=self.fn.is_async)

    def run(self) -> RunResult:
        while True:
            outcome = self._pass()
            if isinstance(outcome, Completed):
                return self._result("completed", outcome.output, None)
            if isinstance(outcome, Failed):
                if outcome.retriable and self.attempt < self.fn.retries:
                    self.attempt += 1
                    delay = outcome.retry_after
                    self.skipped += delay if delay is not None else self.fn.policy.delay(self.attempt)
                    continue
                return self._result("failed", None, outcome.error)
            if isinstance(outcome, RetryStep):
                self.skipped += outcome.delay
            elif isinstance(outcome, Sleep):
                self._end_sleep(outcome)
            elif isinstance(outcome, Wait):
                self._answer(outcome)
            elif isinstance(outcome, Parallel):
                for sid in outcome.new:
                    failed = self._branch(sid)
                    if failed is not None:  # the group can never join: the run fails
                        return self._result("failed", None, failed.error)
            elif isinstance(outcome, (Continue, BranchDone)):
                pass
            elif isinstance(outcome, LeaseLost):  # pragma: no cover - no leases here
                raise ConfigError("the harness lost a lease it never takes")

    def _branch(self, sid: str) -> Failed | None:
        while True:
            outcome = self._pass(branch=sid)
            rec = self.memo.get(sid)
            if rec is not None and rec.status in FINAL:
                return None
            if isinstance(outcome, RetryStep):
                self.skipped += outcome.delay
            elif isinstance(outcome, Wait):  # an invoke inside the group
                self._answer(outcome)
            elif isinstance(outcome, Failed) and not outcome.retriable:
                return outcome
            elif isinstance(outcome, Failed):
                self.skipped += self.fn.policy.delay(1)

    def _end_sleep(self, outcome: Sleep) -> None:
        rec = self.memo[outcome.step_id]
        now = time.time()
        self.skipped += max(0.0, outcome.until - now)
        rec.status, rec.ended_at = "completed", now

    def _answer(self, outcome: Wait) -> None:
        rec = self.memo[outcome.step_id]
        now = time.time()
        if rec.status in FINAL:
            return
        spec = rec.extra or {}
        if rec.kind == "invoke":
            found, answer, _key = _lookup(self.invokes, rec.id)
            if found and not isinstance(answer, BaseException):
                data: dict[str, Any] = next(
                    (i["data"] for i in self.invoked if i["step"] == rec.id), {}
                )
                value = answer(dict(data)) if callable(answer) else copy.deepcopy(answer)
                rec.status, rec.output = "completed", json.loads(json.dumps(value))
            elif found:  # the child failed with this error
                rec.status = "failed"
                rec.error = child_error("failed", {"type": type(answer).__name__,
                                                   "message": str(answer)})
            else:
                self.skipped += max(0.0, outcome.until - now)
                rec.status = "failed"
                rec.error = {"type": "InvokeTimeoutError",
                             "message": "timed out waiting for the invoked function to complete"}
            rec.ended_at = now
            return
        found, answer, _key = _lookup(self.waits, rec.id)
        arrived = self._matching(spec, answer) if found else None
        if arrived is None:
            self.skipped += max(0.0, outcome.until - now)
        rec.status, rec.output, rec.ended_at = "completed", arrived, now
        if arrived is not None:
            rec.extra = None  # as the router writes a delivered wait

    def _matching(self, spec: Mapping[str, Any], answer: Any) -> dict[str, Any] | None:
        """The first answered event that the router would hand to this wait."""
        if answer is None:
            return None
        items = answer if isinstance(answer, (list, tuple)) else [answer]
        for ev, _text in prepare_batch(items):
            wire = ev.to_wire()
            if ev.name == spec.get("event") and wait_matches(spec, self.events[0], wire):
                return wire
        return None

    def _result(self, status: str, output: Any, error: dict[str, Any] | None) -> RunResult:
        if status == "completed":
            unused = sorted(set(self.mocks) - self.used)
            if unused:
                raise ConfigError(
                    f"steps={unused!r} mocked, but the run has no step with that id; "
                    f"its steps are {sorted(self.memo)!r}"
                )
        infos = [StepInfo.from_record(r) for r in sorted(self.memo.values(), key=lambda r: r.seq)]
        return RunResult(
            run_id=self.run_id, status=status, output=output, error=error, steps=infos,
            events=list(self.sent), invoked=list(self.invoked), passes=self.passes,
            attempt=self.attempt, skipped_seconds=round(self.skipped, 3),
            _by_id={s.step_id: s for s in infos},
        )


def _function_def(function: Any) -> FunctionDef:
    fn = getattr(function, "fanout_function", function)
    if not isinstance(fn, FunctionDef):
        raise ConfigError(
            f"run_function needs a function declared with client.create_function, not {function!r}"
        )
    return fn


def run_function(
    function: Callable[..., Any] | FunctionDef,
    event: Event | Mapping[str, Any] | Iterable[Event | Mapping[str, Any]],
    *,
    steps: Mapping[str, Any] | None = None,
    waits: Mapping[str, Any] | None = None,
    invokes: Mapping[str, Any] | None = None,
) -> RunResult:
    """Run ``function`` for ``event`` to its end in this process; no Redis, no worker.

    ``steps`` mocks ``ctx.step.run`` steps by id (``"charge"`` for every call with
    that id, ``"charge:1"`` for the second only): a value is returned as the step's
    output, an exception instance is raised by the step (so retries and failures
    can be tested), a callable replaces the step's handler (same arguments).
    ``waits`` answers ``ctx.step.wait_for_event`` by step id with an event (or a
    list: the first the wait's ``match`` / ``if_exp`` accepts is delivered); no
    answer, or none that matches, is a timeout. ``invokes`` answers
    ``ctx.step.invoke`` by step id with the child's output, a callable of the
    invoke's ``data``, or an exception (the child failed); no answer is a timeout.
    A list of events runs a batch function with all of them (``ctx.events``).
    """
    fn = _function_def(function)
    if isinstance(event, (Event, Mapping)):
        batch: Any = [event]
    else:
        batch = list(event)
    wire = [ev.to_wire() for ev, _ in prepare_batch(batch)]
    return _Harness(fn, wire, steps or {}, waits or {}, invokes or {}).run()


async def run_function_async(
    function: Callable[..., Any] | FunctionDef,
    event: Event | Mapping[str, Any] | Iterable[Event | Mapping[str, Any]],
    **answers: Any,
) -> RunResult:
    """:func:`run_function` from async test code (runs it in a thread)."""
    return await asyncio.to_thread(run_function, function, event, **answers)
