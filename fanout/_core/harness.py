"""Run one function in the test's process, pass after pass, with no Redis and no worker.

The harness runs the code a worker runs for each pass and each parallel branch
(:func:`fanout._core.lifecycle.one_pass` and ``one_branch``: the lease, the engine,
the step records, the end of the pass by its outcome) against an in-memory store
that answers as the Lua scripts do (:class:`~fanout._core.memory_store.MemoryRunStore`).
Only the outside world is replaced:

* the messages a worker would publish (the next pass, the branches) go to a queue
  in this process; sent events and invoked children are captured;
* what a worker's timer thread and router do between passes, the harness does at
  once on a virtual clock: a sleep ends, a retry's backoff is skipped, a wait gets
  the answer the test gave (or times out), an invoked child returns the answer the
  test gave (or times out);
* parallel branches run one after the other, each as its own branch pass, then the
  fan-in pass continues, as on Celery.  Flow control is not applied.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .._errors import ConfigError, InvokeError
from .branches import one_branch
from .event import Event, dumps, prepare_batch
from .function import FunctionDef
from .ids import derived_event_id, run_id_for
from .lifecycle import Host, Ran, RunSink, end_run, one_pass
from .memory_store import MemoryRunStore
from .outcomes import Sleep, Wait
from .records import StepInfo, StepRecord, child_error
from .run_record import ATTEMPT, EVENTS, new_run_fields, step_records
from .run_store import branch_timer
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


class _Sink(RunSink):
    """The worker's sink, with the outside world captured: sent events are kept,
    waits are answered between passes, invoked children are answered by the test."""

    def __init__(self, h: _Harness, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.h = h

    def send_events(self, step_id: str, events: list[tuple[Event, str]]) -> list[str]:
        known = {e.id for e in self.h.sent}
        self.h.sent.extend(ev for ev, _ in events if ev.id not in known)
        return [ev.id or "" for ev, _ in events]

    def register_wait(self, step_id: str, spec: dict[str, Any]) -> dict[str, Any] | None:
        return None  # answered between passes, as the router would

    def drop_wait(self, step_id: str, event_name: str) -> None:
        return None

    def start_invoke(self, step_id: str, fn_ref: Any, data: dict[str, Any], seq: int) -> str:
        key = _resolve_key(self.fn, fn_ref)
        self.h.invoked.append({"step": step_id, "function": key, "data": data})
        return run_id_for(derived_event_id(self.run_id, step_id, 0), key)


class _Harness(Host):
    """Drives a run through :mod:`.lifecycle` against a :class:`MemoryRunStore`: the
    messages a worker would publish go to a queue in this process, and what a
    worker's timer thread and router do between passes happens at once."""

    def __init__(self, fn: FunctionDef, events: list[dict[str, Any]], steps: Mapping[str, Any],
                 waits: Mapping[str, Any], invokes: Mapping[str, Any]) -> None:
        self.fn = replace(fn, handler=self._wrap(fn, steps)) if steps else fn
        self.events = events
        self.run_id = run_id_for(events[0]["id"], fn.key)
        self.store = MemoryRunStore()
        self.sent: list[Event] = []
        self.invoked: list[dict[str, Any]] = []
        self.mocks, self.waits, self.invokes = steps, waits, invokes
        self.used: set[str] = set()
        self.skipped = 0.0
        self.passes = 0
        self.queue: deque[tuple[int | None, str | None]] = deque()
        self.ended: tuple[str, Any, dict[str, Any] | None] | None = None

    def _wrap(self, fn: FunctionDef, mocks: Mapping[str, Any]) -> Callable[..., Any]:
        handler = fn.handler

        def patch(ctx: Any) -> Any:
            ctx.step = _MockStep(ctx.step, mocks, self.used)
            return ctx

        if fn.is_async:
            async def wrapped_async(ctx: Any) -> Any:
                return await handler(patch(ctx))
            return wrapped_async
        return lambda ctx: handler(patch(ctx))

    # -- the host: what a worker does around a pass ------------------------------------

    def sink(self, fn: FunctionDef, run_id: str, token: str, fields: dict[str, str],
             branch: str | None = None, group: Sequence[str] = ()) -> RunSink:
        return _Sink(self, self.store, fn, run_id, token, fields, branch, group)

    def enqueue(self, fn_key: str, run_id: str, seq: int | None, *,
                branch: str | None = None) -> None:
        self.queue.append((seq, branch))

    def finish(self, run_id: str, token: str, status: str, output: Any,
               error: dict[str, Any] | None, fields: dict[str, str] | None = None,
               steps: dict[str, str] | None = None) -> None:
        ended = end_run(self.store, run_id, token, status, output, error, steps)
        if ended is not None:
            self.ended = (ended[0], output, ended[1])

    # -- the run ------------------------------------------------------------------------

    def run(self) -> RunResult:
        fn, events = self.fn, self.events
        fields = new_run_fields(fn.fn_id, fn.app_id, fn.key, events[0],
                                event_ids=[e.get("id") for e in events],
                                created=repr(time.time()), creation=fn.creation_fields())
        if len(events) > 1:
            fields[EVENTS] = dumps(events)
        self.store.create_runs([(self.run_id, fn.key, fields)])
        self.queue.append((0, None))
        while self.ended is None:
            if not self.queue:  # pragma: no cover - every pass leaves a message or an end
                raise ConfigError("the run stopped with nothing left to run it")
            seq, branch = self.queue.popleft()
            if branch is None:
                ran = one_pass(self, fn, self.run_id, seq)
            else:
                ran = one_branch(self, fn, self.run_id, branch)
            if ran is None:
                continue
            self.passes += ran.passes
            if self.passes > MAX_PASSES:
                raise ConfigError(f"the run did not end within {MAX_PASSES} passes")
            if self.ended is None:
                self._between_passes(ran, branch)
        return self._result(*self.ended)

    def _between_passes(self, ran: Ran, branch: str | None) -> None:
        """What the timer thread and the router would do for a run (or a branch) that
        now waits: at once, on a virtual clock."""
        outcome = ran.outcome
        if isinstance(outcome, Wait):
            resolved = self._answer(outcome)
            if branch is not None:  # an invoke inside a parallel group
                if resolved == "enqueue":
                    self.queue.append((None, None))
                self.store.drop_timer(branch_timer(self.run_id, branch))
            else:
                self.queue.append((None if resolved == "enqueue" else ran.seq, None))
        elif ran.wake is not None:
            if isinstance(outcome, Sleep):
                self._end_sleep(outcome)
            else:  # a retry's backoff
                self.skipped += ran.wake - ran.now
            if branch is not None:
                self.queue.appendleft((None, branch))
            else:
                self.queue.append((ran.seq, None))

    def _record(self, step_id: str) -> StepRecord:
        return step_records(self.store.run_fields(self.run_id))[step_id]

    def _end_sleep(self, outcome: Sleep) -> None:
        """The sleep is over: its record completes, as the step would at its time."""
        rec = self._record(outcome.step_id)
        self._skip_to(outcome.until, rec)
        self.store.resolve_step(self.run_id, replace(rec, status="completed",
                                                     ended_at=time.time()))

    def _skip_to(self, until: float, rec: StepRecord) -> None:
        """Move the virtual clock to ``until``, counted from when the step began to wait
        (so the figure is the wait the code asked for, however long the pass took)."""
        self.skipped += max(0.0, until - (rec.started_at or time.time()))

    def _answer(self, outcome: Wait) -> str:
        """Resolve a waiting step with the test's answer (as the router, or an ending
        child run, would), or with its timeout (as the step would at its time)."""
        rec = self._record(outcome.step_id)
        now = time.time()
        if rec.kind == "invoke":
            found, answer, _key = _lookup(self.invokes, rec.id)
            done = StepRecord(id=rec.id, kind="invoke", seq=rec.seq, ended_at=now)
            if found and not isinstance(answer, BaseException):
                data: dict[str, Any] = next(
                    (i["data"] for i in self.invoked if i["step"] == rec.id), {}
                )
                value = answer(dict(data)) if callable(answer) else copy.deepcopy(answer)
                done.status, done.output = "completed", json.loads(json.dumps(value))
            elif found:  # the child failed with this error
                done.status = "failed"
                done.error = child_error("failed", {"type": type(answer).__name__,
                                                    "message": str(answer)})
            else:
                self._skip_to(outcome.until, rec)
                done = replace(rec, status="failed", ended_at=now, error={
                    "type": "InvokeTimeoutError",
                    "message": "timed out waiting for the invoked function to complete"})
            return self.store.resolve_step(self.run_id, done)
        found, answer, _key = _lookup(self.waits, rec.id)
        arrived = self._matching(rec.extra or {}, answer) if found else None
        if arrived is None:
            self._skip_to(outcome.until, rec)
            done = replace(rec, status="completed", output=None, ended_at=now)
        else:
            done = StepRecord(id=rec.id, kind="wait", status="completed", output=arrived,
                              seq=rec.seq, started_at=rec.started_at, ended_at=now)
        return self.store.resolve_step(self.run_id, done)

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
        fields = self.store.run_fields(self.run_id)
        memo = step_records(fields)
        if status == "completed":
            unused = sorted(set(self.mocks) - self.used)
            if unused:
                raise ConfigError(
                    f"steps={unused!r} mocked, but the run has no step with that id; "
                    f"its steps are {sorted(memo)!r}"
                )
        infos = [StepInfo.from_record(r) for r in sorted(memo.values(), key=lambda r: r.seq)]
        return RunResult(
            run_id=self.run_id, status=status, output=output, error=error, steps=infos,
            events=list(self.sent), invoked=list(self.invoked), passes=self.passes,
            attempt=int(fields.get(ATTEMPT, "0")), skipped_seconds=round(self.skipped, 3),
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
