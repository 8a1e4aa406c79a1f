"""A parallel branch's life: one step of a group under the branch's own lease.

:func:`one_branch` takes the branch lease (``begin_branch``), runs the engine in
branch mode through the host's sink, and ends by the outcome's type
(:data:`BRANCH_ARMS`).  The pass it belongs to is ``lifecycle.py``'s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .function import FunctionDef
from .ids import new_token
from .lifecycle import Host, Ran, RunSink, pass_input, run_engine
from .outcomes import BranchDone, Failed, RetryStep, Wait
from .run_record import branch_lease_field
from .run_store import branch_timer

log = logging.getLogger("fanout")


# -- a parallel branch ------------------------------------------------------------------------


def one_branch(host: Host, fn: FunctionDef, run_id: str, step_id: str) -> Ran | None:
    """Run one branch of a parallel group: the step ``step_id`` under the branch's own
    lease. None when nothing ran (the step was done, or another worker holds it)."""
    store = host.store
    token = new_token()
    lease_ms = int((time.time() + host.lease_s) * 1000)
    member = branch_timer(run_id, step_id)
    head, fields, joined = store.begin_branch(run_id, step_id, token, lease_ms)
    if head == "done":
        if joined:
            host.enqueue(fn.key, run_id, None)
        store.drop_timer(member)
        return None
    if head != "ok":
        return None
    lease = branch_lease_field(step_id)
    host.hold_lease(run_id, lease, token, lease_ms)
    hold = None
    try:
        if fn.flow.concurrency:
            hold = host.acquire(fn, run_id, token, fields, lease_ms, step_id)
            if hold is None:
                return None
        inp = pass_input(fn, run_id, fields, branch=step_id)
        rec = inp.memo.get(step_id)
        extra = (rec.extra or {}) if rec else {}
        # A race's branch rejoins the run as soon as it ends; others when all have.
        group = [step_id] if extra.get("race") else list(extra.get("group", []))
        sink = host.sink(fn, run_id, token, fields, branch=step_id, group=group)
        outcome = run_engine(fn, inp, sink)
        host.release(hold)
        ran = Ran(outcome, time.time())
        arm = BRANCH_ARMS.get(type(outcome))
        if arm is not None:
            arm(Branch(host, fn, run_id, step_id, token, sink, ran), outcome)
        return ran
    finally:
        host.release(hold)
        host.drop_lease(run_id, lease)


@dataclass
class Branch:
    host: Host
    fn: FunctionDef
    run_id: str
    step_id: str
    token: str
    sink: RunSink
    ran: Ran

    @property
    def member(self) -> str:
        return branch_timer(self.run_id, self.step_id)

    def end(self) -> None:
        self.host.store.end_branch(self.run_id, self.step_id, self.token)

    def wake_at(self, due: float) -> None:
        """The branch's timer brings it back at ``due``."""
        self.ran.wake = due
        self.host.store.arm(self.member, due)


def _branch_done(b: Branch, outcome: BranchDone) -> None:
    b.end()
    if b.sink.joined:
        b.host.enqueue(b.fn.key, b.run_id, None)
    b.host.store.retime(b.host.lease_score(b.run_id, branch_lease_field(b.step_id)),
                        {b.member: None})


def _branch_retry(b: Branch, outcome: RetryStep) -> None:
    b.end()
    b.wake_at(time.time() + outcome.delay)


def _branch_wait(b: Branch, outcome: Wait) -> None:
    """An invoked child runs: the branch wakes at the invoke's timeout."""
    b.end()
    b.wake_at(outcome.until)


def _branch_failed(b: Branch, outcome: Failed) -> None:
    if not outcome.retriable:
        # The group can never join (its step is gone, a nested step, ...): the
        # run fails now rather than waiting for a branch that will not come.
        b.end()
        b.host.store.drop_timer(b.member)
        log.error("fanout: branch %s of run %s failed the run: %s",
                  b.step_id, b.run_id, outcome.error.get("message"))
        b.host.finish(b.run_id, "", "failed", None, outcome.error)
        return
    b.end()
    b.wake_at(time.time() + b.fn.policy.delay(1))
    log.warning("fanout: branch %s of run %s failed outside its step: %s",
                b.step_id, b.run_id, outcome.error.get("message"))


#: How a branch ends, by outcome type (any other outcome leaves the branch to its timer).
BRANCH_ARMS: dict[type, Callable[[Branch, Any], None]] = {
    BranchDone: _branch_done, RetryStep: _branch_retry, Wait: _branch_wait,
    Failed: _branch_failed,
}
