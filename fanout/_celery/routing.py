"""The router: from stored events to runs, and to the runs waiting for them.

``fanout.route`` consumes the ``fanout.events`` exchange.  For each event it
starts one run per matching function (run id derived from event id and
function, created set-if-absent) and finishes the ``wait_for_event`` steps the
event satisfies (exactly once per waiting run).  A router that dies mid-batch
is recovered from its ``route:`` timer; redelivery creates nothing twice.

Functions with start-time flow control (idempotency, rate limit, debounce,
batching, singleton, throttle...) are admitted one run at a time by
``admission.admit``; events that cancel running runs (``cancel=[fanout.Cancel(...)]``)
are matched after the new runs exist (``endings.cancel_matching``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from .._core.event import dumps
from .._core.function import FunctionDef, routing_digest
from .._core.ids import new_token, run_id_for
from .._core.records import StepRecord
from .._core.run_record import new_run_fields
from .._core.waits import wait_bucket, wait_matches
from .._redis.declared import entry
from .._redis.wait_store import Prefetched
from . import admission, endings
from .runtime import Runtime

log = logging.getLogger("fanout")
ROUTE_CHUNK = 500
#: A send of at most this many events may be routed by its sender; a larger one goes
#: to the router, so that its runs' creation spreads over the workers.
SENDER_MAX_EVENTS = 50
#: Set by ``tracing.instrument``: the spans around routing in the sender.
tracing_hook: Callable[[Sequence[str], str | None, str | None],
                       AbstractContextManager[None]] | None = None


def route(
    rt: Runtime,
    event_ids: Sequence[str],
    *,
    parent_run_id: str | None,
    target: str | None,
    invoker: dict[str, Any] | None,
    batch_id: str | None,
) -> None:
    store = rt.store
    batch = batch_id or new_token()
    payload = {"ids": list(event_ids), "parent": parent_run_id, "target": target, "invoker": invoker}
    store.begin_route(batch, dumps(payload), rt.lease_s)
    if len(event_ids) > ROUTE_CHUNK:
        # Split a large send so that several workers route it at once. The whole
        # batch stays recorded until every chunk is published: a worker killed while
        # splitting has its batch split again (chunks are idempotent).
        with rt.publisher.batch() as producer:
            for n, i in enumerate(range(0, len(event_ids), ROUTE_CHUNK)):
                chunk = list(event_ids[i : i + ROUTE_CHUNK])
                sub = f"{batch}.{n}"
                store.begin_route(
                    sub,
                    dumps({**payload, "ids": chunk}),
                    store.watchdog,
                )
                rt.publisher.route(
                    chunk,
                    parent_run_id=parent_run_id,
                    target=target,
                    invoker=invoker,
                    batch_id=sub,
                    producer=producer,
                )
        store.end_route(batch)
        return
    events = [
        (eid, ev) for eid, ev in zip(event_ids, store.load_events(event_ids), strict=True) if ev
    ]
    if len(events) < len(event_ids):
        log.warning("fanout: %d event(s) were not in Redis (expired?)", len(event_ids) - len(events))
    route_events(rt, events, parent_run_id=parent_run_id, target=target, invoker=invoker)
    store.end_route(batch)


def route_events(
    rt: Runtime,
    events: Sequence[tuple[str, dict[str, Any]]],
    *,
    parent_run_id: str | None,
    target: str | None,
    invoker: dict[str, Any] | None,
    waits: Prefetched | None = None,
) -> None:
    """Route stored events: create the runs they start (set-if-absent, flow control's
    admission), cancel the runs they cancel, finish the waits they satisfy, and
    publish the passes due now.  The router runs it for a batch it loaded; a sender
    (``route_in_sender``) for the events it has just stored.  Running it twice for
    the same events creates, admits, cancels and resolves nothing twice."""
    store = rt.store
    runs: list[tuple[str, str, dict[str, Any]]] = []
    flowed: list[tuple[FunctionDef, str, dict[str, Any], dict[str, Any], bool]] = []
    now = repr(time.time())
    for eid, ev in events:
        for fn in _subscribers(rt, ev, target):
            fields = new_run_fields(fn.fn_id, fn.app_id, fn.key, ev, event_ids=[eid], created=now,
                                    parent_run_id=parent_run_id, invoker=invoker,
                                    creation=fn.creation_fields())
            if fn.flow.at_start:
                flowed.append((fn, run_id_for(eid, fn.key), ev, fields, target is not None))
            else:
                runs.append((run_id_for(eid, fn.key), fn.key, fields))
    results = store.create_runs(runs) if runs else []
    todo = [(fk, rid) for (rid, fk, _f), (_r, _c, enq) in zip(runs, results, strict=True) if enq]
    if flowed:
        todo += admission.admit(rt, flowed)
    if target is None:
        endings.cancel_matching(rt, [ev for _eid, ev in events])
    resolved = _resolve_waits(rt, [ev for _eid, ev in events], waits) if target is None else []
    if todo or resolved:
        with rt.publisher.batch() as producer:
            for fk, rid in todo:
                rt.publisher.enqueue(fk, rid, 0, producer=producer)
            for fk, rid in resolved:
                rt.publisher.enqueue(fk, rid, None, producer=producer)


def _subscribers(rt: Runtime, ev: dict[str, Any], target: str | None) -> list[FunctionDef]:
    if target is None:
        return rt.index.match(ev)
    fn = rt.functions.get(target)
    if fn is None:
        log.error("fanout: invoke target %s is not declared on this worker", target)
        return []
    return [fn]


def _resolve_waits(
    rt: Runtime, events: list[dict[str, Any]], prefetched: Prefetched | None = None
) -> list[tuple[str, str]]:
    """Finish the waits these events satisfy; returns (fn key, run id) to enqueue.

    Waits with ``match`` live in buckets keyed by the match value, so an event only
    looks at the waits it can satisfy (no scan of every wait on that event name).
    ``prefetched``: what a sender read with its events (the paths and the waits
    without ``match``); only what it lacks is read here.
    """
    store = rt.store
    names = sorted({str(ev.get("name")) for ev in events})
    have = prefetched.paths if prefetched is not None else {}
    lacking = [n for n in names if n not in have]
    paths = {**have, **(store.waits.paths(lacking) if lacking else {})}
    per_event: list[list[tuple[str, str | None]]] = []
    keys: set[tuple[str, str | None]] = {(name, None) for name in names}
    for ev in events:
        name = str(ev.get("name"))
        mine: list[tuple[str, str | None]] = [(name, None)]
        for path in paths.get(name, []):
            bucket = wait_bucket(path, ev)
            if bucket is not None:
                mine.append((name, bucket))
        per_event.append(mine)
        keys.update(mine)
    known = prefetched.keys if prefetched is not None else set()
    open_waits = {k: v for k, v in (prefetched.open if prefetched else {}).items() if k in keys}
    to_read = sorted(keys - known, key=lambda k: (k[0], k[1] or ""))
    if to_read:
        open_waits.update(store.waits.open(to_read))
    if not open_waits:
        return []
    now = time.time()
    wake: list[tuple[str, str]] = []
    resumed: list[tuple[str, str]] = []
    finished: dict[tuple[str, str | None], list[str]] = {}
    for key, waits in open_waits.items():
        for member, spec in waits.items():
            if float(spec.get("until", 0)) < now:
                finished.setdefault(key, []).append(member)  # timed out: its run's timer ends it
    done = {m for ms in finished.values() for m in ms}
    for ev, mine in zip(events, per_event, strict=True):
        for key in mine:
            for member, spec in open_waits.get(key, {}).items():
                if member in done or (ev.get("ts") or 0) < spec.get("since", 0) * 1000:
                    continue
                if not wait_matches(spec, spec.get("trigger") or {}, ev):
                    continue
                rec = StepRecord(
                    id=spec["step"],
                    kind="wait",
                    status="completed",
                    output=ev,
                    seq=int(spec.get("seq", 0)),
                    started_at=spec.get("started"),
                    ended_at=now,
                )
                outcome = store.resolve_step(spec["run"], rec)
                if outcome == "enqueue":
                    wake.append((spec["fk"], spec["run"]))
                if outcome in ("enqueue", "set") and ev.get("id"):
                    resumed.append((str(ev["id"]), spec["run"]))
                finished.setdefault(key, []).append(member)
                done.add(member)
    for (name, bucket), members in finished.items():
        store.waits.drop(name, members, bucket)
    store.waits.note_resumed(resumed)
    return wake


class SenderRouting:
    """Routing in the sender (``Fanout(route_in_sender=True)``): a process that sends
    a small batch routes it itself, with :func:`route_events`, instead of publishing
    a ``fanout.route`` message, when it declares exactly the functions the live
    workers declare (the registry in ``fanout/_redis/declared.py``, read in the
    round trip that stores the events).  The route record is written with the
    events and ended after routing, so a sender that dies midway is recovered by
    the route timer, as a router that dies is."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.enabled = True
        self.max_events = SENDER_MAX_EVENTS
        self._entries: set[str] = set()
        self._entries_n = -1
        self._told = False

    def wanted(self, n: int) -> bool:
        """Whether a send of ``n`` events may be routed here (then the store reads the
        registry with the events)."""
        return self.enabled and 0 < n <= self.max_events

    def entries(self) -> set[str]:
        """This process's functions as registry entries (functions are only added)."""
        fns = self.rt.functions
        if self._entries_n != len(fns):
            self._entries = {entry(fn.key, routing_digest(fn)) for fn in list(fns.values())}
            self._entries_n = len(fns)
        return self._entries

    def refusal(self, declared: set[str] | None) -> str | None:
        """Why this send goes to the router (None: route it here)."""
        if declared is None:
            return "the workers' functions were not read"
        if not declared:
            return "no live worker has registered its functions yet"
        mine = self.entries()
        if declared == mine:
            return None
        keys_mine = {e.split(" ", 1)[0] for e in mine}
        lacking = sorted({e.split(" ", 1)[0] for e in declared - mine} - keys_mine)
        if lacking:
            if not self._told:
                self._told = True
                log.info(
                    "fanout: this process sends its events through the router: the workers "
                    "declare functions it does not (%s). Import the modules that declare "
                    "them where you send events to start runs without the router hop.",
                    ", ".join(lacking),
                )
            return f"this process does not declare {', '.join(lacking)}"
        differ = sorted({e.split(" ", 1)[0] for e in declared ^ mine})
        return f"the workers declare {', '.join(differ)} otherwise (or not at all)"

    def route(
        self,
        ids: Sequence[str],
        texts: Sequence[str],
        fresh: Sequence[bool],
        batch: str,
        *,
        parent_run_id: str | None,
        target: str | None,
        invoker: dict[str, Any] | None,
        waits: Prefetched | None = None,
    ) -> None:
        """Route events this process has just stored (``texts``; an event whose id was
        stored before, ``fresh`` False, is read back: the first payload wins), then
        end the route record."""
        store = self.rt.store
        again = [eid for eid, new in zip(ids, fresh, strict=True) if not new]
        stored = dict(zip(again, store.load_events(again), strict=True)) if again else {}
        events: list[tuple[str, dict[str, Any]]] = []
        for eid, text, new in zip(ids, texts, fresh, strict=True):
            ev = json.loads(text) if new else stored.get(eid)
            if ev:
                events.append((eid, ev))
        hook = tracing_hook
        with hook(ids, parent_run_id, target) if hook is not None else nullcontext():
            route_events(self.rt, events, parent_run_id=parent_run_id, target=target,
                         invoker=invoker, waits=waits)
        store.end_route(batch)
