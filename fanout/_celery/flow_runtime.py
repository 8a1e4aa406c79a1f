"""Flow control against Redis: admitting runs, concurrency slots, the run lifecycle.

One :class:`FlowRuntime` per :class:`Runtime`.  The option classes and the
arithmetic are in ``fanout/_core/flow.py``; every decision that several workers could race
on is one Lua script (``fanout/_redis/lua/fc_*.lua``) over one flow-control key.

* **Admission** (the router, once per event and function): idempotency and rate
  limit may record the run as ``skipped``; debounce and batching fold events into
  one pending run; singleton skips or cancels; throttle gives the run a ``wake``
  time (its timer is armed, nothing is dropped).  Each gate remembers the run id
  it admitted, so a router batch that is retried after a crash decides the same.
* **Passes**: a pass (or parallel branch) of a function with ``concurrency``
  holds a slot in each constraint while it executes; when one is full the run
  goes back to ``queued`` without holding a worker and joins the key's waiting
  list (ordered by waiting time minus priority).  A release hands the slot to the
  first waiter (reserved for it for one lease time) and enqueues it.  A slot
  carries the pass's lease time, so the slot of a worker that died expires with
  its lease; a waiter also checks again on its own every ``fallback_s``.
  Timeouts are checked when a pass begins.
* **Ends**: a run that ends gives back its singleton key, stops listening for
  cancel events and has the ``fanout/function.*`` system events sent
  (``endings.emit_system_events``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._core.event import dumps
from .._core.flow import (
    IDEMPOTENCY_S,
    Cancel,
    concurrency_bucket,
    eval_key,
    match_bucket,
    priority_factor,
    wait_score_ms,
)
from .._core.ids import from_key_part, key_part
from .._core.records import TERMINAL
from .._core.run_record import (
    BATCH_EVENT_PREFIX,
    BATCH_KEY,
    CANCEL_KEYS,
    DEBOUNCE_KEY,
    DEBOUNCE_TS,
    ENDED,
    ERROR,
    EV,
    EVENT,
    EVENTS,
    FIRST_PASS,
    FK,
    INVOKER,
    NOT_BEFORE,
    PRIORITY,
    SINGLETON_KEY,
    ST,
    START_DEADLINE,
    WAITING_SINCE,
    WAKE,
)
from .endings import cancel_reason, emit_system_events, tell_parent

if TYPE_CHECKING:
    from .._core.function import FunctionDef
    from .runtime import Runtime

log = logging.getLogger("fanout")

Item = tuple["FunctionDef", str, dict[str, Any], dict[str, Any], bool]


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class Hold:
    """Concurrency slots held by one pass (``field='lease'``) or branch (``bl:<step>``)."""

    keys: list[str]
    holder: str
    limits: list[int]
    run_id: str
    field: str
    released: bool = False


class FlowRuntime:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.cancel_index: dict[str, list[tuple[FunctionDef, int, Cancel]]] = {}

    @property
    def fallback_s(self) -> float:
        """How often a run waiting for a slot checks again on its own (a release
        normally wakes it at once; this covers a waker that died and expired slots)."""
        return max(1.0, self.rt.lease_s / 2)

    def add_function(self, fn: FunctionDef) -> None:
        for i, c in enumerate(fn.flow.cancel):
            self.cancel_index.setdefault(c.event, []).append((fn, i, c))

    # -- keys --------------------------------------------------------------------------

    def _key(self, kind: str, *parts: str) -> str:
        return self.rt.store.flow.key(kind, *parts)

    def concurrency_keys(self, fn: FunctionDef, event: dict[str, Any]) -> list[str]:
        """slots, waiting [, slots, waiting]: all of an app's under one hash tag."""
        return self.rt.store.flow.concurrency_keys(
            fn.app_id, [concurrency_bucket(fn.app_id, fn.fn_id, c, event) for c in fn.flow.concurrency])

    def _cancel_key(self, fn: FunctionDef, index: int, match: str) -> str:
        return self._key("cx", fn.key, str(index), fn.flow.cancel[index].event, match)

    # -- admission (router) --------------------------------------------------------------

    def admit(self, items: Sequence[Item]) -> list[tuple[str, str]]:
        """Create the runs of functions with start-time flow control.

        ``items`` are (function, run id, event, fields, invoked); returns the
        (function key, run id) pairs to enqueue now.
        """
        todo: list[tuple[str, str]] = []
        for fn, rid, ev, fields, invoked in items:
            now = time.time()
            if not self._pre_gates(fn, rid, ev, fields, now):
                continue
            # An invoked run must keep the id its parent waits on: no folding.
            if fn.flow.debounce is not None and not invoked:
                self._debounce(fn, rid, ev, fields, now, todo)
            elif fn.flow.batch is not None and not invoked and fn.flow.batch.takes(ev):
                self._batch(fn, rid, ev, fields, now, todo)
            else:
                self._create(fn, rid, ev, fields, now, todo)
        return todo

    def _pre_gates(
        self, fn: FunctionDef, rid: str, ev: dict[str, Any], fields: dict[str, Any], now: float
    ) -> bool:
        """Idempotency, then rate limit: per event, before anything else."""
        flow, store = fn.flow, self.rt.store
        if flow._idem is not None:
            key = self._key("idem", fn.key, eval_key(flow._idem, ev))
            owner = _s(store.script("fc_claim", [key], [rid, IDEMPOTENCY_S]))
            if owner != rid:
                self._skip(fn, rid, fields, now, "Idempotent",
                           f"run {owner} already handled this idempotency key in the last 24 h")
                return False
        r = flow.rate_limit
        if r is not None:
            key = self._key("rate", fn.key, eval_key(r._key, ev))
            ok = store.script("fc_rate", [key], [rid, int(now * 1000), int(r.period_s * 1000), r.limit])
            if not int(ok):
                self._skip(fn, rid, fields, now, "RateLimited",
                           f"the rate limit of {r.limit} run(s) per {r.period_s:g}s was reached")
                return False
        return True

    def _create(
        self, fn: FunctionDef, rid: str, ev: dict[str, Any], fields: dict[str, Any], now: float,
        todo: list[tuple[str, str]], wake_floor: float = 0.0,
    ) -> None:
        """Singleton, throttle, then create the run (queued, or with a wake time)."""
        flow, store = fn.flow, self.rt.store
        replaced = ""
        s = flow.singleton
        if s is not None:
            key = self._key("one", fn.key, eval_key(s._key, ev))
            head, holder = self._singleton(key, rid, s.mode)
            if head == "held":
                self._skip(fn, rid, fields, now, "Singleton",
                           f"run {holder} is still active for this singleton key")
                return
            fields[SINGLETON_KEY] = key
            replaced = holder if head == "replaced" else ""
        wake = wake_floor
        t = flow.throttle
        if t is not None:
            key = self._key("thr", fn.key, eval_key(t._key, ev))
            raw = store.script("fc_throttle", [key],
                               [rid, int(now * 1000), int(t.period_s * 1000), t.limit, t.burst])
            start = float(_s(raw)) / 1000
            if start > now + 0.05:
                fields[NOT_BEFORE] = f"{start:.3f}"
                wake = max(wake, start)
        self.decorate(fn, ev, fields, now)
        if wake and START_DEADLINE in fields:
            wake = min(wake, float(fields[START_DEADLINE]))
        if wake > now + 0.05:
            fields[WAKE] = f"{wake:.3f}"
        ((_r, created, needs),) = store.create_runs([(rid, fn.key, fields)])
        if needs:
            if not created:  # a retried router: the run exists but never started
                wake = float(store.run_field(rid, WAKE) or "0")
            self.listen(fn, rid, ev, fields, now)
            if wake > now + 0.05:
                store.arm(rid, wake)
            else:
                todo.append((fn.key, rid))
        if replaced:
            self.rt.cancel(replaced, f"cancelled by singleton: run {rid} replaced it")

    def _singleton(self, key: str, rid: str, mode: str) -> tuple[str, str]:
        store = self.rt.store
        res = store.script("fc_singleton", [key], [rid, mode, ""])
        head, holder = _s(res[0]), _s(res[1])
        if head in ("held", "replaced"):
            st = store.run_field(holder, ST)
            if st is None or st in TERMINAL:  # it ended without giving the key back
                if head == "replaced":
                    return "ok", holder
                res = store.script("fc_singleton", [key], [rid, mode, holder])
                head, holder = _s(res[0]), _s(res[1])
        return head, holder

    def _skip(
        self, fn: FunctionDef, rid: str, fields: dict[str, Any], now: float, kind: str, why: str
    ) -> None:
        store = self.rt.store
        error = {"type": kind, "message": f"skipped: {why}"}
        rec = {**fields, ST: "skipped", ENDED: repr(now), ERROR: dumps(error)}
        ((_r, created, _n),) = store.create_runs([(rid, fn.key, rec)])
        if not created:
            return
        store.flow.expire_run(rid)
        log.info("fanout: run %s of %s skipped: %s", rid, fn.key, why)
        inv = fields.get(INVOKER)
        if inv:
            tell_parent(self.rt, json.loads(inv), "skipped", None, error)

    def decorate(self, fn: FunctionDef, ev: dict[str, Any], fields: dict[str, Any], now: float) -> None:
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
                    keys.append([i, self._cancel_key(fn, i, mb)])
            fields[CANCEL_KEYS] = dumps(keys)

    def listen(self, fn: FunctionDef, rid: str, ev: dict[str, Any], fields: dict[str, Any],
               now: float) -> None:
        """Register the run with the cancel events it listens to."""
        pairs = json.loads(fields.get(CANCEL_KEYS) or "[]")
        if not pairs:
            return
        store = self.rt.store
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

    def _debounce(self, fn: FunctionDef, rid: str, ev: dict[str, Any], fields: dict[str, Any],
                  now: float, todo: list[tuple[str, str]]) -> None:
        d = fn.flow.debounce
        assert d is not None
        store = self.rt.store
        key = self._key("deb", fn.key, eval_key(d._key, ev))
        ts = int(ev.get("ts") or now * 1000)
        closed = ""
        for _ in range(10):
            res = store.script("fc_debounce", [key], [
                rid, int(now * 1000), int(d.period_s * 1000), int((d.timeout_s or 0) * 1000), closed,
            ])
            run, due, head = _s(res[0]), float(_s(res[1])) / 1000, _s(res[2])
            if head == "new":
                self._create(fn, run, ev, {**fields, DEBOUNCE_KEY: key, DEBOUNCE_TS: ts}, now, todo,
                             wake_floor=due)
                return
            wake = store.script("fc_debounce_run", [store.run_key(run)],
                                [dumps(ev), dumps([ev.get("id")]), ts, f"{due:.3f}"])
            if wake:
                store.arm(run, float(_s(wake)))
                self._index_event(ev, run)
                return
            closed = run  # it started meanwhile: this event opens the next debounce
        log.error("fanout: debounce of %s kept racing; event %s starts its own run", fn.key, rid)
        self._create(fn, rid, ev, fields, now, todo)

    def _batch(self, fn: FunctionDef, rid: str, ev: dict[str, Any], fields: dict[str, Any],
               now: float, todo: list[tuple[str, str]]) -> None:
        b = fn.flow.batch
        assert b is not None
        store = self.rt.store
        key = self._key("bat", fn.key, eval_key(b._key, ev))
        closed = ""
        for _ in range(10):
            res = store.script("fc_batch", [key], [
                rid, int(now * 1000), b.max_size, int(b.timeout_s * 1000), closed,
            ])
            run, due, n = _s(res[0]), float(_s(res[1])) / 1000, int(res[2])
            opened, full = bool(int(res[3])), bool(int(res[4]))
            if opened:
                self._create(fn, run, ev, {**fields, BATCH_KEY: key}, now, [], wake_floor=due)
            added, wake = store.script("fc_batch_run", [store.run_key(run)], [
                f"{BATCH_EVENT_PREFIX}{ev.get('id')}", dumps({"n": n, "e": ev}), "1" if full else "0",
            ])
            if int(added):
                self._index_event(ev, run)
                if full:
                    if float(_s(wake) or 0) > time.time() + 0.05:
                        store.arm(run, float(_s(wake)))
                    else:
                        todo.append((fn.key, run))
                return
            closed = run  # it started meanwhile: this event opens the next batch
        log.error("fanout: batch of %s kept racing; event %s dropped", fn.key, ev.get("id"))

    def _index_event(self, ev: dict[str, Any], run: str) -> None:
        self.rt.store.flow.index_event_run(str(ev.get("id")), run)

    def _close_batch(self, run_id: str, fields: dict[str, str]) -> None:
        """At a batch run's first pass: close the batch, gather its events in order."""
        store = self.rt.store
        store.script("fc_release", [fields[BATCH_KEY]], [run_id])
        parts = sorted((json.loads(v) for k, v in fields.items() if k.startswith(BATCH_EVENT_PREFIX)),
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
        drop = [k for k in fields if k.startswith(BATCH_EVENT_PREFIX)]
        store.flow.close_batch(run_id, update, drop)
        for k in drop:
            del fields[k]
        fields.update({str(k): v for k, v in update.items()})

    # -- passes --------------------------------------------------------------------------

    def before_pass(
        self, fn: FunctionDef, run_id: str, token: str, fields: dict[str, str], lease_ms: int
    ) -> tuple[bool, Hold | None]:
        """Close a debounce or batch, enforce timeouts, take concurrency slots.

        Returns (go, hold): ``go`` False means the pass has already been ended here
        (the run waits for a slot, or it was cancelled).
        """
        flow, store, now = fn.flow, self.rt.store, time.time()
        started = FIRST_PASS in fields
        timeouts = flow.timeouts
        if not started:
            if DEBOUNCE_KEY in fields:
                store.script("fc_release", [fields[DEBOUNCE_KEY]], [run_id])
            if BATCH_KEY in fields and "events" not in fields:
                self._close_batch(run_id, fields)
            if START_DEADLINE in fields and now > float(fields[START_DEADLINE]):
                self._timed_out(run_id, token, fields, "StartTimeout", "start", timeouts)
                return False, None
        elif timeouts is not None and timeouts.finish_s is not None:
            if now > float(fields[FIRST_PASS]) + timeouts.finish_s:
                self._timed_out(run_id, token, fields, "FinishTimeout", "finish", timeouts)
                return False, None
        hold: Hold | None = None
        if flow.concurrency:
            hold = self.acquire(fn, run_id, token, fields, lease_ms, None)
            if hold is None:
                return False, None
        if not started:
            stamp = f"{now:.3f}"
            store.flow.stamp_first_pass(run_id, stamp)
            fields[FIRST_PASS] = stamp
        return True, hold

    def _timed_out(self, run_id: str, token: str, fields: dict[str, str], kind: str,
                   which: str, timeouts: Any) -> None:
        limit = getattr(timeouts, f"{which}_s", None)
        what = "start" if which == "start" else "finish"
        self.rt.finish(run_id, token, "cancelled", None, {
            "type": kind,
            "message": f"the run did not {what} within {limit:g}s (timeouts.{which}); "
            "it was cancelled",
        }, fields)

    def clamp_wake(self, fn: FunctionDef, fields: dict[str, str], wake: float) -> float:
        """A wake time no later than the run's finish deadline."""
        t = fn.flow.timeouts
        if t is None or t.finish_s is None or FIRST_PASS not in fields:
            return wake
        return min(wake, float(fields[FIRST_PASS]) + t.finish_s)

    def acquire(self, fn: FunctionDef, run_id: str, token: str, fields: dict[str, str],
                lease_ms: int, branch: str | None) -> Hold | None:
        """Take a slot in each constraint, or park the run (or branch) as waiting."""
        store, now = self.rt.store, time.time()
        event = json.loads(fields.get(EVENT, "{}"))
        keys = self.concurrency_keys(fn, event)
        limits = [c.limit for c in fn.flow.concurrency]
        if branch is None:
            holder, waiter, field = f"{run_id}:{token}", f"p|{key_part(fn.key)}|{run_id}", "lease"
        else:
            holder, waiter = (f"{run_id}:{branch}:{token}",
                              f"b|{key_part(fn.key)}|{run_id}|{branch}")
            field = f"bl:{branch}"
        since = float(fields.get(WAITING_SINCE) or now)
        score = wait_score_ms(since, float(fields.get(PRIORITY) or 0))
        res = store.script("fc_slots_acquire", keys, [
            holder, waiter, int(now * 1000), lease_ms, score, self._reserve_ms(now), *limits,
        ])
        self.wake([_s(w) for w in res[1:]])
        if _s(res[0]) == "ok":
            store.hold_slots(run_id, field, keys[0::2], holder)
            if branch is None and WAITING_SINCE in fields:
                store.flow.clear_waiting_since(run_id)
            return Hold(keys, holder, limits, run_id, field)
        # Full: give the run back without holding a worker; a release wakes it.
        due = now + self.fallback_s
        if branch is None:
            seq, _r = store.end_pass(run_id, token, "queued", fields={WAITING_SINCE: repr(since)})
            if seq == -1:
                self.rt.finish(run_id, token, "cancelled", None, cancel_reason(self.rt, run_id),
                               fields)
                return None
            if seq is None:
                return None
            if FIRST_PASS not in fields and START_DEADLINE in fields:
                due = min(due, float(fields[START_DEADLINE]))
            store.arm(run_id, due)
        else:
            store.end_branch(run_id, branch, token)
            store.arm(f"branch:{run_id}:{branch}", due)
        # Woken between our decision and giving the run back? Then go again now.
        if not store.flow.still_waiting(keys[1::2], waiter):
            self.wake([waiter])
        return None

    def _reserve_ms(self, now: float) -> int:
        """Until when a slot handed to a woken waiter stays reserved for it."""
        return int((now + self.rt.lease_s) * 1000)

    def release(self, hold: Hold | None) -> None:
        if hold is None or hold.released:
            return
        hold.released = True
        store = self.rt.store
        store.drop_slot_hold(hold.run_id, hold.field)
        now = time.time()
        woken = store.script("fc_slots_release", hold.keys,
                             [hold.holder, "", int(now * 1000), self._reserve_ms(now), *hold.limits])
        self.wake([_s(w) for w in woken])

    def wake(self, waiters: Sequence[str]) -> None:
        if not waiters:
            return
        with self.rt.publisher.batch() as producer:
            for w in dict.fromkeys(waiters):
                parts = w.split("|", 3)
                if parts[0] == "p" and len(parts) == 3:
                    self.rt.enqueue(from_key_part(parts[1]), parts[2], None, producer=producer)
                elif parts[0] == "b" and len(parts) == 4:
                    self.rt.enqueue(from_key_part(parts[1]), parts[2], None, branch=parts[3],
                                    producer=producer)

    # -- ends ----------------------------------------------------------------------------

    def ended(self, run_id: str, status: str, fields: dict[str, str], output: Any,
              error: dict[str, Any] | None) -> None:
        """A run reached a terminal status: release what it held, emit system events."""
        store = self.rt.store
        fn = self.rt.functions.get(fields.get(FK, ""))
        if fields.get(SINGLETON_KEY):
            store.script("fc_release", [fields[SINGLETON_KEY]], [run_id])
        pairs = json.loads(fields.get(CANCEL_KEYS) or "[]")
        if pairs:
            store.flow.drop_cancel_listener([key for _i, key in pairs], run_id)
        if fn is not None and fn.flow.concurrency and WAITING_SINCE in fields:
            keys = self.concurrency_keys(fn, json.loads(fields.get(EVENT, "{}")))
            now = time.time()
            woken = store.script("fc_slots_release", keys, [
                "", f"p|{key_part(fn.key)}|{run_id}", int(now * 1000), self._reserve_ms(now),
                *(c.limit for c in fn.flow.concurrency),
            ])
            self.wake([_s(w) for w in woken])
        try:
            emit_system_events(self.rt, run_id, status, fields, output, error)
        except Exception:  # never let a notification break the end of a run
            log.warning("fanout: could not emit the system events of run %s", run_id,
                        exc_info=True)

    # -- cancellation -----------------------------------------------------------------------

    def cancel_matching(self, events: Sequence[dict[str, Any]]) -> int:
        """Cancel the running runs that these incoming events cancel; returns how many."""
        if not self.cancel_index:
            return 0
        store, now, count = self.rt.store, time.time(), 0
        for ev in events:
            for fn, i, c in self.cancel_index.get(str(ev.get("name")), ()):
                mb = match_bucket(c, ev)
                if mb is None:
                    continue
                key = self._cancel_key(fn, i, mb)
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
                    head = self.rt.cancel(
                        rid, f"cancelled by event {ev.get('name')} ({ev.get('id')})")
                    count += head in ("cancelled", "flagged")
                    drop.append(rid)
                if drop:
                    store.flow.drop_listeners(key, drop)
        return count

    def cancel_runs(self, fn: FunctionDef, *, after: float | None, before: float | None,
                    if_exp: str | None) -> int:
        """Cancel a function's unfinished runs created in a time range; returns how many."""
        from .._core.flow import _cel

        expr = None if if_exp is None else _cel("cancel_runs if_exp", if_exp)
        store = self.rt.store
        lo = "-inf" if after is None else int(after * 1000)
        hi = "+inf" if before is None else int(before * 1000)
        count, offset, page = 0, 0, 500
        while True:
            ids = store.flow.fn_runs_between(fn.key, lo, hi, offset, page)
            if not ids:
                return count
            offset += len(ids)
            for rid, f in zip(ids, store.many_run_fields(ids), strict=True):
                if not f.get(ST) or f[ST] in TERMINAL:
                    continue
                if expr is not None and not expr.matches({"event": json.loads(f.get(EVENT, "{}"))}):
                    continue
                if self.rt.cancel(rid, "cancelled by cancel_runs") in ("cancelled", "flagged"):
                    count += 1
