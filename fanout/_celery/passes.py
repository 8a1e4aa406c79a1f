"""The body of the ``fanout.step`` task: one pass of a run, or one parallel branch.

The pass itself (the lease, the engine, the end of the pass by its outcome) is
``fanout._core.lifecycle``, the code the test harness runs too; :class:`WorkerHost`
is what a worker puts around it: the Redis store, leases renewed in the background,
flow control's gates (``gates.py``, ``slots.py``), messages published to the broker,
and run endings told to flow control, the system events and an invoking parent
(``endings.py``).  A pass of a paused function parks instead (``paused.py``).  One
task may run several passes of a run in a row (the function's ``pass_budget``); it
stops going on when the function is paused or the worker shuts down.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from celery.worker import state as worker_state

from .._core.branches import one_branch
from .._core.function import FunctionDef
from .._core.lifecycle import Host, one_pass
from .._redis.store import Store
from . import endings, gates, slots
from .runlog import attempt_failed, pass_went_on, run_started
from .runtime import Runtime
from .sink import PassSink

log = logging.getLogger("fanout")


class WorkerHost(Host):
    """A worker around one pass or branch (see :class:`~fanout._core.lifecycle.Host`)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.lease_s = rt.lease_s

    @property
    def store(self) -> Store:  # type: ignore[override]
        return self.rt.store

    def sink(self, fn: FunctionDef, run_id: str, token: str, fields: dict[str, str],
             branch: str | None = None, group: Sequence[str] = ()) -> PassSink:
        return PassSink(self.rt, fn, run_id, token, fields, branch, group)

    def enqueue(self, fn_key: str, run_id: str, seq: int | None, *,
                branch: str | None = None) -> None:
        self.rt.publisher.enqueue(fn_key, run_id, seq, branch=branch)

    def enqueue_branches(self, fn_key: str, run_id: str, step_ids: Sequence[str]) -> None:
        publisher = self.rt.publisher
        with publisher.batch() as producer:
            for sid in step_ids:
                publisher.enqueue(fn_key, run_id, None, branch=sid, producer=producer)

    def finish(self, run_id: str, token: str, status: str, output: Any,
               error: dict[str, Any] | None, fields: dict[str, str] | None = None,
               steps: dict[str, str] | None = None) -> None:
        endings.finish(self.rt, run_id, token, status, output, error, fields, steps)

    def hold_lease(self, run_id: str, lease_field: str, token: str, lease_ms: int) -> None:
        self.rt.leases.hold(run_id, lease_field, token, lease_ms)

    def drop_lease(self, run_id: str, lease_field: str) -> None:
        self.rt.leases.release(run_id, lease_field)

    def lease_score(self, run_id: str, lease_field: str) -> int:
        return self.rt.leases.score(run_id, lease_field)

    def before_pass(self, fn: FunctionDef, run_id: str, token: str, fields: dict[str, str],
                    lease_ms: int) -> tuple[bool, Any]:
        return gates.before_pass(self.rt, fn, run_id, token, fields, lease_ms)

    def acquire(self, fn: FunctionDef, run_id: str, token: str, fields: dict[str, str],
                lease_ms: int, branch: str) -> Any:
        return gates.acquire(self.rt, fn, run_id, token, fields, lease_ms, branch)

    def release(self, hold: Any) -> None:
        slots.release(self.rt, hold)

    def clamp(self, fn: FunctionDef, fields: Mapping[str, str], wake: float) -> float:
        return gates.clamp_wake(fn, fields, wake)

    def run_started(self, fn: FunctionDef, run_id: str) -> None:
        run_started(fn.key, run_id)

    def attempt_failed(self, fn: FunctionDef, run_id: str, attempt: int, attempts: int,
                       error: dict[str, Any], retry_at: float) -> None:
        attempt_failed(fn.key, run_id, None, attempt, attempts, error, retry_at)

    def may_go_on(self, fn: FunctionDef, run_id: str) -> bool:
        # Not while the function is paused (its next pass parks, from the broker) nor
        # while the worker shuts down (the run goes back to the broker at once).
        return not (self.rt.paused.is_paused(fn.key) or worker_state.should_stop
                    or worker_state.should_terminate)

    def went_on(self, fn: FunctionDef, run_id: str, seq: int) -> None:
        pass_went_on(fn.key, run_id, seq)


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


def execute_pass(rt: Runtime, fn_key: str, run_id: str, seq: int | None) -> None:
    """One pass of a run (``seq``: the pass the message is for; None: a wake-up)."""
    if rt.paused.maybe_park(fn_key, run_id, seq):
        return
    fn = function_for(rt, fn_key, run_id)
    if fn is not None:
        one_pass(WorkerHost(rt), fn, run_id, seq)


def execute_branch(rt: Runtime, fn_key: str, run_id: str, step_id: str) -> None:
    """One parallel branch of a run: the step ``step_id``."""
    fn = function_for(rt, fn_key, run_id)
    if fn is not None:
        one_branch(WorkerHost(rt), fn, run_id, step_id)
