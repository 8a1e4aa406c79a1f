"""How runs end: finishing, cancelling (on request, on an event, by time range, by
the watchdog), and telling an invoking parent.

Every terminal status goes through :func:`finish` (a pass ended the run, through
``fanout._core.lifecycle.end_run``) or :func:`cancel` (a request between passes);
both go on with :func:`ended`: the run gives back what it held in flow control (its
singleton key, its cancel listeners, its place in a concurrency waiting list), the
``fanout/function.*`` system events are sent, and the parent's ``invoke`` step is
resolved.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

from .._core.event import Event, prepare_batch
from .._core.flow import SYSTEM_CANCELLED, SYSTEM_FAILED, SYSTEM_FINISHED, is_system_event
from .._core.flow_math import match_bucket
from .._core.function import FunctionDef
from .._core.ids import derived_event_id
from .._core.lifecycle import cancel_reason as _cancel_reason
from .._core.lifecycle import end_run
from .._core.records import TERMINAL, StepRecord, child_error
from .._core.run_record import (
    APP,
    CANCEL_KEYS,
    EVENT,
    FK,
    FN,
    INVOKER,
    SINGLETON_KEY,
    ST,
    WAITING_SINCE,
)
from .._errors import EventError
from . import slots
from .runlog import run_ended
from .runtime import Runtime

log = logging.getLogger("fanout")


def cancel_reason(rt: Runtime, run_id: str) -> dict[str, Any]:
    """The error a cancel request recorded for the run."""
    return _cancel_reason(rt.store, run_id)


def finish(
    rt: Runtime, run_id: str, token: str, status: str, output: Any,
    error: dict[str, Any] | None, fields: dict[str, str] | None = None,
    steps: dict[str, str] | None = None,
) -> None:
    """End a run (writing the pass's deferred step records with it); release what it
    held, emit system events, tell an invoking parent."""
    done = end_run(rt.store, run_id, token, status, output, error, steps)
    if done is None:
        return
    status, error = done
    fields = fields if fields and FK in fields else rt.store.run_fields(run_id)
    run_ended(fields.get(FK, ""), run_id, status, error)
    ended(rt, run_id, status, fields, output, error)
    inv = fields.get(INVOKER)
    if inv:
        tell_parent(rt, json.loads(inv), status, output, error)


def tell_parent(
    rt: Runtime, inv: dict[str, Any], status: str, output: Any, error: dict[str, Any] | None
) -> None:
    """Resolve the parent's ``invoke`` step with how the child run ended."""
    rec = StepRecord(id=inv["step"], kind="invoke", seq=int(inv.get("seq", 0)),
                     ended_at=time.time())
    if status == "completed":
        rec.status, rec.output = "completed", output
    else:
        rec.status, rec.error = "failed", child_error(status, error)
    if rt.store.resolve_step(inv["run"], rec) == "enqueue":
        rt.publisher.enqueue(inv["fk"], inv["run"], None)


def cancel(rt: Runtime, run_id: str, reason: str = "cancelled by request") -> str:
    """Cancel a run between steps; returns 'cancelled', 'flagged', 'ended' or 'missing'."""
    error = {"type": "Cancelled", "message": reason}
    head = rt.store.cancel_run(run_id, error)
    if head == "cancelled":
        fields = rt.store.run_fields(run_id)
        ended(rt, run_id, "cancelled", fields, None, error)
        inv = fields.get(INVOKER)
        if inv:
            tell_parent(rt, json.loads(inv), "cancelled", None, error)
    return head


def ended(rt: Runtime, run_id: str, status: str, fields: dict[str, str], output: Any,
          error: dict[str, Any] | None) -> None:
    """A run reached a terminal status: release what it held, emit system events."""
    store = rt.store
    fn = rt.functions.get(fields.get(FK, ""))
    if fields.get(SINGLETON_KEY):
        store.flow.release_owner(fields[SINGLETON_KEY], run_id)
    pairs = json.loads(fields.get(CANCEL_KEYS) or "[]")
    if pairs:
        store.flow.drop_cancel_listener([key for _i, key in pairs], run_id)
    if fn is not None and fn.flow.concurrency and WAITING_SINCE in fields:
        slots.forget_waiter(rt, fn, run_id, fields)
    try:
        emit_system_events(rt, run_id, status, fields, output, error)
    except Exception:  # never let a notification break the end of a run
        log.warning("fanout: could not emit the system events of run %s", run_id,
                    exc_info=True)


# -- cancelling from outside ---------------------------------------------------------------


def cancel_key(rt: Runtime, fn: FunctionDef, index: int, match: str) -> str:
    """The hash of the runs of ``fn`` listening for its ``index``-th cancel event
    with the value ``match``."""
    return rt.store.flow.key("cx", fn.key, str(index), fn.flow.cancel[index].event, match)


def cancel_matching(rt: Runtime, events: Sequence[dict[str, Any]]) -> int:
    """Cancel the running runs that these incoming events cancel; returns how many."""
    if not rt.cancel_index:
        return 0
    store, now, count = rt.store, time.time(), 0
    for ev in events:
        for fn, i, c in rt.cancel_index.get(str(ev.get("name")), ()):
            mb = match_bucket(c, ev)
            if mb is None:
                continue
            key = cancel_key(rt, fn, i, mb)
            drop: list[str] = []
            for rid, raw in store.flow.cancel_listeners(key).items():
                spec = json.loads(raw)
                if spec.get("eid") == ev.get("id"):
                    continue  # a run is never cancelled by its own trigger
                if spec.get("until") and float(spec["until"]) < now:
                    drop.append(rid)
                    continue
                if (ev.get("ts") or 0) < (spec.get("ts") or 0):
                    continue  # sent before the run's trigger
                if c._if is not None:
                    raw_trig = store.run_field(rid, EVENT)
                    if raw_trig is None:
                        drop.append(rid)
                        continue
                    if not c._if.matches({"event": json.loads(raw_trig), "async": dict(ev)}):
                        continue
                head = cancel(rt, rid, f"cancelled by event {ev.get('name')} ({ev.get('id')})")
                count += head in ("cancelled", "flagged")
                drop.append(rid)
            if drop:
                store.flow.drop_listeners(key, drop)
    return count


def cancel_runs(rt: Runtime, fn: FunctionDef, *, after: float | None, before: float | None,
                if_exp: str | None, reason: str = "cancelled by cancel_runs") -> list[str]:
    """Cancel a function's unfinished runs created in a time range; returns their ids."""
    from .._core.flow import _cel

    expr = None if if_exp is None else _cel("cancel_runs if_exp", if_exp)
    from .._redis.run_index import RunIndex

    store = rt.store
    # Whole milliseconds, as the index scores are (a bound inside one is taken down).
    lo = None if after is None else math.floor(after * 1000) / 1000
    hi = None if before is None else math.floor(before * 1000) / 1000
    done: list[str] = []
    # Oldest first, 500 at a time, by score (of the shards merged, on a cluster).
    for chunk in RunIndex(store).walk(store.keys.runs_indexes(fn.key), since=lo, until=hi,
                                      chunk=500):
        ids = [m for m, _s in chunk]
        for rid, f in zip(ids, store.many_run_fields(ids), strict=True):
            if not f.get(ST) or f[ST] in TERMINAL:
                continue
            if expr is not None and not expr.matches({"event": json.loads(f.get(EVENT, "{}"))}):
                continue
            if cancel(rt, rid, reason) in ("cancelled", "flagged"):
                done.append(rid)
    return done


def check_stuck(rt: Runtime, *, min_age: float, limit: int = 5000) -> list[str]:
    """The watchdog: fail each run that nothing will move (see ``_redis/stuck.py``),
    with an ERROR on the ``fanout`` logger; returns their ids.

    A queued run, or a running one whose lease has expired, that only lacks its timer
    is offered again instead (its timer armed now, a WARNING logged): on a Redis
    Cluster the timer sets are on other slots than the run, so a failover that loses
    the last writes of one master can leave a run whose state survived without the
    timer that goes with it (or the reverse). The timer does what the lost one would
    have done: a queued run is offered again, a running one is taken over and its
    step runs again."""
    from .._redis.stuck import NO_TIMER, find_stuck

    failed = []
    for run_id, reason, status in find_stuck(rt.store, min_age=min_age, limit=limit):
        if reason == NO_TIMER and status in ("queued", "running"):
            rt.store.arm(run_id, time.time())
            log.warning("fanout: run %s (%s) had no lease or timer to move it (a write "
                        "lost in a Redis failover?); its timer is armed again", run_id, status)
            continue
        message = f"the run was stuck: {reason}; fanout's watchdog failed it"
        log.error("fanout: run %s %s", run_id, message[8:])
        finish(rt, run_id, "", "failed", None, {"type": "StuckRun", "message": message})
        failed.append(run_id)
    return failed


# -- system events ---------------------------------------------------------------------------


def _subscribed(rt: Runtime, name: str) -> bool:
    """Whether a function of this app is triggered by ``name`` (no Redis call: the
    end of every run asks)."""
    return any(True for _ in rt.index.candidates(name))


def emit_system_events(rt: Runtime, run_id: str, status: str, fields: dict[str, str],
                       output: Any, error: dict[str, Any] | None) -> None:
    """Send the ``fanout/function.*`` events of a run that ended, to the functions of
    this app that listen for them (never for a run a system event started)."""
    names = {"failed": [SYSTEM_FAILED, SYSTEM_FINISHED], "completed": [SYSTEM_FINISHED],
             "cancelled": [SYSTEM_CANCELLED]}.get(status, [])
    if not names:
        return
    trigger = json.loads(fields.get(EVENT, "{}"))
    if is_system_event(trigger.get("name")):
        return  # a run started by a system event emits none (no loops)
    names = [n for n in names if _subscribed(rt, n)]
    if not names:
        return
    app_id, fn_id = fields.get(APP, ""), fields.get(FN, "")
    data: dict[str, Any] = {
        # As in inngest-py: function_id is the fully-qualified id (fn.id); fn_id the
        # id given to create_function.
        "function_id": f"{app_id}-{fn_id}", "fn_id": fn_id, "app_id": app_id,
        "run_id": run_id, "status": status, "event": trigger,
    }
    if error is not None:
        # inngest-py's error object: name, message, stack (``type`` kept as well).
        data["error"] = {"name": str(error.get("type") or "Error"), **error}
    if status == "completed":
        data["result"] = output
    try:
        prepared = _system_batch(names, run_id, data)
    except EventError:  # too large: keep the ids and the error, drop the payloads
        data.pop("result", None)
        data["event"] = {k: trigger.get(k) for k in ("name", "id", "ts")}
        prepared = _system_batch(names, run_id, data)
    rt.publisher.publish(prepared)


def _system_batch(names: list[str], run_id: str, data: dict[str, Any]) -> list[tuple[Event, str]]:
    events = [Event(name=n, data=data, id=derived_event_id(run_id, n, 0)) for n in names]
    return prepare_batch(events, allow_reserved=True)
