"""Flow control as a pass begins: timeouts, the close of a debounce or a batch, and
concurrency slots.

A run's first pass closes the debounce or batch that gathered it; a run past its
start or finish deadline is cancelled; a pass (or parallel branch) of a function
with ``concurrency`` takes a slot in each constraint (``slots.py``), or gives the
run back to wait for one without holding a worker.  Every decision several workers
could race on is one Lua script, behind a method of ``store.flow``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from .._core.event import dumps
from .._core.flow_math import wait_score_ms
from .._core.function import FunctionDef
from .._core.run_record import (
    BATCH_KEY,
    DEBOUNCE_KEY,
    EV,
    EVENT,
    EVENTS,
    FIRST_PASS,
    LEASE,
    PRIORITY,
    START_DEADLINE,
    WAITING_SINCE,
    branch_lease_field,
    is_batch_event_field,
)
from .._core.run_store import branch_timer
from . import endings, slots
from .runtime import Runtime
from .slots import Hold


def before_pass(
    rt: Runtime, fn: FunctionDef, run_id: str, token: str, fields: dict[str, str], lease_ms: int
) -> tuple[bool, Hold | None]:
    """Close a debounce or batch, enforce timeouts, take concurrency slots.

    Returns (go, hold): ``go`` False means the pass has already been ended here
    (the run waits for a slot, or it was cancelled).
    """
    flow, store, now = fn.flow, rt.store, time.time()
    started = FIRST_PASS in fields
    timeouts = flow.timeouts
    if not started:
        if DEBOUNCE_KEY in fields:
            store.flow.release_owner(fields[DEBOUNCE_KEY], run_id)
        if BATCH_KEY in fields and EVENTS not in fields:
            _close_batch(rt, run_id, fields)
        if START_DEADLINE in fields and now > float(fields[START_DEADLINE]):
            _timed_out(rt, run_id, token, fields, "StartTimeout", "start", timeouts)
            return False, None
    elif timeouts is not None and timeouts.finish_s is not None:
        if now > float(fields[FIRST_PASS]) + timeouts.finish_s:
            _timed_out(rt, run_id, token, fields, "FinishTimeout", "finish", timeouts)
            return False, None
    hold: Hold | None = None
    if flow.concurrency:
        hold = acquire(rt, fn, run_id, token, fields, lease_ms, None)
        if hold is None:
            return False, None
    if not started:
        stamp = f"{now:.3f}"
        store.flow.stamp_first_pass(run_id, stamp)
        fields[FIRST_PASS] = stamp
    return True, hold


def _close_batch(rt: Runtime, run_id: str, fields: dict[str, str]) -> None:
    """At a batch run's first pass: close the batch, gather its events in order."""
    store = rt.store
    store.flow.release_owner(fields[BATCH_KEY], run_id)
    parts = sorted((json.loads(v) for k, v in fields.items() if is_batch_event_field(k)),
                   key=lambda item: int(item["n"]))
    events: list[dict[str, Any]] = []
    seen: set[Any] = set()
    for item in parts:
        if item["e"].get("id") not in seen:
            seen.add(item["e"].get("id"))
            events.append(item["e"])
    if not events:
        events = [json.loads(fields.get(EVENT, "{}"))]
    update: dict[str, str] = {
        EVENTS: dumps(events), EVENT: dumps(events[0]),
        EV: dumps([e.get("id") for e in events]),
    }
    drop = [k for k in fields if is_batch_event_field(k)]
    store.flow.close_batch(run_id, update, drop)
    for k in drop:
        del fields[k]
    fields.update({str(k): v for k, v in update.items()})


def _timed_out(rt: Runtime, run_id: str, token: str, fields: dict[str, str], kind: str,
               which: str, timeouts: Any) -> None:
    limit = getattr(timeouts, f"{which}_s", None)
    what = "start" if which == "start" else "finish"
    endings.finish(rt, run_id, token, "cancelled", None, {
        "type": kind,
        "message": f"the run did not {what} within {limit:g}s (timeouts.{which}); "
        "it was cancelled",
    }, fields)


def clamp_wake(fn: FunctionDef, fields: Mapping[str, str], wake: float) -> float:
    """A wake time no later than the run's finish deadline."""
    t = fn.flow.timeouts
    if t is None or t.finish_s is None or FIRST_PASS not in fields:
        return wake
    return min(wake, float(fields[FIRST_PASS]) + t.finish_s)


def acquire(rt: Runtime, fn: FunctionDef, run_id: str, token: str, fields: dict[str, str],
            lease_ms: int, branch: str | None) -> Hold | None:
    """Take a slot in each constraint, or park the run (or branch) as waiting."""
    store, now = rt.store, time.time()
    event = json.loads(fields.get(EVENT, "{}"))
    keys = slots.concurrency_keys(rt, fn, event)
    limits = [c.limit for c in fn.flow.concurrency]
    if branch is None:
        holder, waiter, field = f"{run_id}:{token}", slots.pass_waiter(fn, run_id), LEASE
    else:
        holder, waiter = f"{run_id}:{branch}:{token}", slots.branch_waiter(fn, run_id, branch)
        field = branch_lease_field(branch)
    since = float(fields.get(WAITING_SINCE) or now)
    score = wait_score_ms(since, float(fields.get(PRIORITY) or 0))
    taken, woken = store.flow.acquire_slots(keys, holder, waiter, now, lease_ms, score,
                                            slots.reserve_ms(rt, now), limits)
    slots.wake(rt, woken)
    if taken:
        store.hold_slots(run_id, field, keys[0::2], holder)
        if branch is None and WAITING_SINCE in fields:
            store.flow.clear_waiting_since(run_id)
        return Hold(keys, holder, limits, run_id, field)
    # Full: give the run back without holding a worker; a release wakes it.
    due = now + slots.fallback_s(rt)
    if branch is None:
        seq, _r = store.end_pass(run_id, token, "queued", fields={WAITING_SINCE: repr(since)})
        if seq == -1:
            endings.finish(rt, run_id, token, "cancelled", None,
                           endings.cancel_reason(rt, run_id), fields)
            return None
        if seq is None:
            return None
        if FIRST_PASS not in fields and START_DEADLINE in fields:
            due = min(due, float(fields[START_DEADLINE]))
        store.arm(run_id, due)
    else:
        store.end_branch(run_id, branch, token)
        store.arm(branch_timer(run_id, branch), due)
    # Woken between our decision and giving the run back? Then go again now.
    if not store.flow.still_waiting(keys[1::2], waiter):
        slots.wake(rt, [waiter])
    return None
