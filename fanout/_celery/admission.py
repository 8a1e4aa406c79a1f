"""How runs start: flow control's admission at the router, and a run started directly
(a replay or a rerun).

The router hands over (function, run id, event, fields, invoked) for each function
with start-time flow control; :func:`admit` applies its gates once per event and
function.  Idempotency and rate limit may record the run as ``skipped``; debounce
and batching fold events into one pending run; singleton skips or cancels; throttle
gives the run a ``wake`` time (its timer is armed, nothing is dropped).  Each gate
remembers the run id it admitted, so a router batch that is retried after a crash
decides the same.  Every decision several workers could race on is one Lua script,
behind a method of ``store.flow``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any

from .._core.event import dumps
from .._core.flow import IDEMPOTENCY_S
from .._core.flow_math import eval_key, match_bucket, priority_factor
from .._core.function import FunctionDef
from .._core.records import TERMINAL, StepRecord
from .._core.run_record import (
    BATCH_KEY,
    CANCEL_KEYS,
    DEBOUNCE_KEY,
    DEBOUNCE_TS,
    ENDED,
    ERROR,
    INVOKER,
    NOT_BEFORE,
    PRIORITY,
    SINGLETON_KEY,
    ST,
    START_DEADLINE,
    WAKE,
    batch_event_field,
    new_run_fields,
    step_record_fields,
)
from . import endings
from .runtime import Runtime

log = logging.getLogger("fanout")

Item = tuple[FunctionDef, str, dict[str, Any], dict[str, Any], bool]


def admit(rt: Runtime, items: Sequence[Item]) -> list[tuple[str, str]]:
    """Create the runs of functions with start-time flow control.

    ``items`` are (function, run id, event, fields, invoked); returns the
    (function key, run id) pairs to enqueue now.
    """
    todo: list[tuple[str, str]] = []
    for fn, rid, ev, fields, invoked in items:
        now = time.time()
        if not _pre_gates(rt, fn, rid, ev, fields, now):
            continue
        # An invoked run must keep the id its parent waits on: no folding.
        if fn.flow.debounce is not None and not invoked:
            _debounce(rt, fn, rid, ev, fields, now, todo)
        elif fn.flow.batch is not None and not invoked and fn.flow.batch.takes(ev):
            _batch(rt, fn, rid, ev, fields, now, todo)
        else:
            _create(rt, fn, rid, ev, fields, now, todo)
    return todo


def start_run(
    rt: Runtime,
    fn: FunctionDef,
    event: dict[str, Any],
    *,
    run_id: str,
    parent_run_id: str | None = None,
    steps: Sequence[StepRecord] = (),
    extra_fields: dict[str, Any] | None = None,
) -> bool:
    """Create a run directly (no router) with optional memoized steps; enqueue it.

    Used for replays and reruns. Returns False if ``run_id`` already exists.
    """
    fields = new_run_fields(
        fn.fn_id, fn.app_id, fn.key, event,
        event_ids=[event.get("id")] if event.get("id") else [], created=repr(time.time()),
        parent_run_id=parent_run_id, creation=fn.creation_fields(),
    )
    fields.update(step_record_fields(steps))
    fields.update(extra_fields or {})
    now = time.time()
    if fn.flow.at_start:  # priority, start deadline, cancel listeners (no admission gates)
        decorate(rt, fn, event, fields, now)
    ((_rid, created, enqueue),) = rt.store.create_runs([(run_id, fn.key, fields)])
    if created:
        listen(rt, fn, run_id, event, fields, now)
    if enqueue:
        rt.publisher.enqueue(fn.key, run_id, 0)
    return created


def _key(rt: Runtime, kind: str, *parts: str) -> str:
    return rt.store.flow.key(kind, *parts)


def _pre_gates(
    rt: Runtime, fn: FunctionDef, rid: str, ev: dict[str, Any], fields: dict[str, Any], now: float
) -> bool:
    """Idempotency, then rate limit: per event, before anything else."""
    flow, store = fn.flow, rt.store
    if flow._idem is not None:
        key = _key(rt, "idem", fn.key, eval_key(flow._idem, ev))
        owner = store.flow.claim_idempotency(key, rid, IDEMPOTENCY_S)
        if owner != rid:
            _skip(rt, fn, rid, fields, now, "Idempotent",
                  f"run {owner} already handled this idempotency key in the last 24 h")
            return False
    r = flow.rate_limit
    if r is not None:
        key = _key(rt, "rate", fn.key, eval_key(r._key, ev))
        if not store.flow.admit_rate(key, rid, now, r.period_s, r.limit):
            _skip(rt, fn, rid, fields, now, "RateLimited",
                  f"the rate limit of {r.limit} run(s) per {r.period_s:g}s was reached")
            return False
    return True


def _create(
    rt: Runtime, fn: FunctionDef, rid: str, ev: dict[str, Any], fields: dict[str, Any],
    now: float, todo: list[tuple[str, str]], wake_floor: float = 0.0,
) -> None:
    """Singleton, throttle, then create the run (queued, or with a wake time)."""
    flow, store = fn.flow, rt.store
    replaced = ""
    s = flow.singleton
    if s is not None:
        key = _key(rt, "one", fn.key, eval_key(s._key, ev))
        head, holder = _singleton(rt, key, rid, s.mode)
        if head == "held":
            _skip(rt, fn, rid, fields, now, "Singleton",
                  f"run {holder} is still active for this singleton key")
            return
        fields[SINGLETON_KEY] = key
        replaced = holder if head == "replaced" else ""
    wake = wake_floor
    t = flow.throttle
    if t is not None:
        key = _key(rt, "thr", fn.key, eval_key(t._key, ev))
        start = store.flow.throttle_start(key, rid, now, t.period_s, t.limit, t.burst)
        if start > now + 0.05:
            fields[NOT_BEFORE] = f"{start:.3f}"
            wake = max(wake, start)
    decorate(rt, fn, ev, fields, now)
    if wake and START_DEADLINE in fields:
        wake = min(wake, float(fields[START_DEADLINE]))
    if wake > now + 0.05:
        fields[WAKE] = f"{wake:.3f}"
    ((_r, created, needs),) = store.create_runs([(rid, fn.key, fields)])
    if needs:
        if not created:  # a retried router: the run exists but never started
            wake = float(store.run_field(rid, WAKE) or "0")
        listen(rt, fn, rid, ev, fields, now)
        if wake > now + 0.05:
            store.arm(rid, wake)
        else:
            todo.append((fn.key, rid))
    if replaced:
        endings.cancel(rt, replaced, f"cancelled by singleton: run {rid} replaced it")


def _singleton(rt: Runtime, key: str, rid: str, mode: str) -> tuple[str, str]:
    store = rt.store
    head, holder = store.flow.singleton(key, rid, mode)
    if head in ("held", "replaced"):
        st = store.run_field(holder, ST)
        if st is None or st in TERMINAL:  # it ended without giving the key back
            if head == "replaced":
                return "ok", holder
            head, holder = store.flow.singleton(key, rid, mode, holder)
    return head, holder


def _skip(
    rt: Runtime, fn: FunctionDef, rid: str, fields: dict[str, Any], now: float, kind: str,
    why: str,
) -> None:
    store = rt.store
    error = {"type": kind, "message": f"skipped: {why}"}
    rec = {**fields, ST: "skipped", ENDED: repr(now), ERROR: dumps(error)}
    ((_r, created, _n),) = store.create_runs([(rid, fn.key, rec)])
    if not created:
        return
    store.expire_run(rid)
    log.info("fanout: run %s of %s skipped: %s", rid, fn.key, why)
    inv = fields.get(INVOKER)
    if inv:
        endings.tell_parent(rt, json.loads(inv), "skipped", None, error)


def decorate(rt: Runtime, fn: FunctionDef, ev: dict[str, Any], fields: dict[str, Any],
             now: float) -> None:
    """Run fields for priority, the start deadline and cancel listeners."""
    flow = fn.flow
    if flow.priority is not None:
        fields[PRIORITY] = repr(priority_factor(flow.priority, ev))
    if flow.timeouts is not None and flow.timeouts.start_s is not None:
        fields[START_DEADLINE] = f"{now + flow.timeouts.start_s:.3f}"
    if flow.cancel:
        keys = []
        for i, c in enumerate(flow.cancel):
            mb = match_bucket(c, ev)
            if mb is not None:
                keys.append([i, endings.cancel_key(rt, fn, i, mb)])
        fields[CANCEL_KEYS] = dumps(keys)


def listen(rt: Runtime, fn: FunctionDef, rid: str, ev: dict[str, Any], fields: dict[str, Any],
           now: float) -> None:
    """Register the run with the cancel events it listens to."""
    pairs = json.loads(fields.get(CANCEL_KEYS) or "[]")
    if not pairs:
        return
    store = rt.store
    entries: list[tuple[str, str, int]] = []
    for i, key in pairs:
        c = fn.flow.cancel[i] if i < len(fn.flow.cancel) else None
        if c is None:
            continue
        spec = {"eid": ev.get("id"), "ts": ev.get("ts") or 0,
                "until": now + c.timeout_s if c.timeout_s else 0}
        entries.append((key, dumps(spec), int(max(store.retention, c.timeout_s or 0))))
    store.flow.add_cancel_listeners(rid, entries)


# -- debounce and batches ------------------------------------------------------------


def _debounce(rt: Runtime, fn: FunctionDef, rid: str, ev: dict[str, Any],
              fields: dict[str, Any], now: float, todo: list[tuple[str, str]]) -> None:
    d = fn.flow.debounce
    assert d is not None
    store = rt.store
    key = _key(rt, "deb", fn.key, eval_key(d._key, ev))
    ts = int(ev.get("ts") or now * 1000)
    closed = ""
    for _ in range(10):
        run, due, head = store.flow.debounce(key, rid, now, d.period_s, d.timeout_s, closed)
        if head == "new":
            _create(rt, fn, run, ev, {**fields, DEBOUNCE_KEY: key, DEBOUNCE_TS: ts}, now, todo,
                    wake_floor=due)
            return
        wake = store.flow.debounce_run(run, ev, ts, due)
        if wake:
            store.arm(run, wake)
            store.index_event_run(str(ev.get("id")), run)
            return
        closed = run  # it started meanwhile: this event opens the next debounce
    log.error("fanout: debounce of %s kept racing; event %s starts its own run", fn.key, rid)
    _create(rt, fn, rid, ev, fields, now, todo)


def _batch(rt: Runtime, fn: FunctionDef, rid: str, ev: dict[str, Any], fields: dict[str, Any],
           now: float, todo: list[tuple[str, str]]) -> None:
    b = fn.flow.batch
    assert b is not None
    store = rt.store
    key = _key(rt, "bat", fn.key, eval_key(b._key, ev))
    closed = ""
    for _ in range(10):
        run, due, n, opened, full = store.flow.batch(key, rid, now, b.max_size, b.timeout_s,
                                                     closed)
        if opened:
            _create(rt, fn, run, ev, {**fields, BATCH_KEY: key}, now, [], wake_floor=due)
        added, wake = store.flow.batch_run(run, batch_event_field(str(ev.get("id"))),
                                           {"n": n, "e": ev}, full)
        if added:
            store.index_event_run(str(ev.get("id")), run)
            if full:
                if wake > time.time() + 0.05:
                    store.arm(run, wake)
                else:
                    todo.append((fn.key, run))
            return
        closed = run  # it started meanwhile: this event opens the next batch
    log.error("fanout: batch of %s kept racing; event %s dropped", fn.key, ev.get("id"))
