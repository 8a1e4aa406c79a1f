"""One parallel branch of a run: a ``fanout.step`` message with ``branch=<step>``.

A pass that plans several steps at once (``Parallel``) enqueues one branch per
new step.  Each branch holds a lease of its own (``bl:<step>``) while it runs its
step; the branch that completes the group (the fan-in) enqueues the run's next
pass.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._core.function import FunctionDef
from .._core.ids import new_token
from .._core.outcomes import BranchDone, Failed, RetryStep, Wait
from .._core.run_record import branch_lease_field
from .passes import function_for, pass_input, run_engine
from .sink import PassSink

if TYPE_CHECKING:
    from .runtime import Runtime

log = logging.getLogger("fanout")


def execute_branch(rt: Runtime, fn_key: str, run_id: str, step_id: str) -> None:
    fn = function_for(rt, fn_key, run_id)
    if fn is None:
        return
    store = rt.store
    token = new_token()
    lease_ms = int((time.time() + rt.lease_s) * 1000)
    member = f"branch:{run_id}:{step_id}"
    head, fields, joined = store.begin_branch(run_id, step_id, token, lease_ms)
    if head == "done":
        if joined:
            rt.enqueue(fn.key, run_id, None)
        store.drop_timer(member)
        return
    if head != "ok":
        return
    field = branch_lease_field(step_id)
    rt.leases.hold(run_id, field, token, lease_ms)
    hold = None
    try:
        if fn.flow.concurrency:
            hold = rt.flow.acquire(fn, run_id, token, fields, lease_ms, step_id)
            if hold is None:
                return
        inp = pass_input(rt, fn, run_id, fields, branch=step_id)
        rec = inp.memo.get(step_id)
        extra = (rec.extra or {}) if rec else {}
        # A race's branch rejoins the run as soon as it ends; others when all have.
        group = [step_id] if extra.get("race") else list(extra.get("group", []))
        sink = PassSink(rt, fn, run_id, token, fields, branch=step_id, group=group)
        outcome = run_engine(fn, inp, sink)
        rt.flow.release(hold)
        arm = _ARMS.get(type(outcome))
        if arm is not None:
            arm(rt, fn, run_id, step_id, token, sink, outcome)
    finally:
        rt.flow.release(hold)
        rt.leases.release(run_id, field)


def _done(rt: Runtime, fn: FunctionDef, run_id: str, step_id: str, token: str,
          sink: PassSink, outcome: BranchDone) -> None:
    store = rt.store
    store.end_branch(run_id, step_id, token)
    if sink.joined:
        rt.enqueue(fn.key, run_id, None)
    store.drop_claimed([f"branch:{run_id}:{step_id}"],
                       rt.leases.score(run_id, branch_lease_field(step_id)))


def _retry(rt: Runtime, fn: FunctionDef, run_id: str, step_id: str, token: str,
           sink: PassSink, outcome: RetryStep) -> None:
    rt.store.end_branch(run_id, step_id, token)
    rt.store.arm(f"branch:{run_id}:{step_id}", time.time() + outcome.delay)


def _wait(rt: Runtime, fn: FunctionDef, run_id: str, step_id: str, token: str,
          sink: PassSink, outcome: Wait) -> None:
    """An invoked child runs: the branch wakes at the invoke's timeout."""
    rt.store.end_branch(run_id, step_id, token)
    rt.store.arm(f"branch:{run_id}:{step_id}", outcome.until)


def _failed(rt: Runtime, fn: FunctionDef, run_id: str, step_id: str, token: str,
            sink: PassSink, outcome: Failed) -> None:
    if not outcome.retriable:
        # The group can never join (its step is gone, a nested step, ...): the
        # run fails now rather than waiting for a branch that will not come.
        rt.store.end_branch(run_id, step_id, token)
        rt.store.drop_timer(f"branch:{run_id}:{step_id}")
        log.error("fanout: branch %s of run %s failed the run: %s",
                  step_id, run_id, outcome.error.get("message"))
        rt.finish(run_id, "", "failed", None, outcome.error)
        return
    rt.store.end_branch(run_id, step_id, token)
    rt.store.arm(f"branch:{run_id}:{step_id}", time.time() + fn.policy.delay(1))
    log.warning("fanout: branch %s of run %s failed outside its step: %s",
                step_id, run_id, outcome.error.get("message"))


#: How a branch ends, by outcome type (any other outcome leaves the branch to its timer).
_ARMS: dict[type, Callable[..., Any]] = {
    BranchDone: _done, RetryStep: _retry, Wait: _wait, Failed: _failed,
}
