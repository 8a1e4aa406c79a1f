"""Timers and periodic jobs, inside the worker processes (no extra daemon).

* :class:`TimerThread` drains the ``timers`` sorted set from each worker's main
  process: an expired lease (a worker died mid-step), a step retry, a sleep's
  wake-up, a wait's timeout and an unfinished router batch all become messages
  again.  Claims are atomic (Lua), so several workers scan safely.  The thread
  sleeps until the earliest timer is due (at most ``poll_interval``).
* Periodic jobs (:meth:`TimerThread.add_periodic`: the history pruning, the stuck-run
  watchdog, the Django outbox sweeper) run in a thread of their own beside it.

A woken pass is published to the router queue (``fanout.events``), not to the
step queue: it is work that is already due, and would otherwise wait behind the
backlog of first passes that a large send leaves in the step queue.  Workers
take from both queues in turn.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .._core.outage import Outage
from .._core.run_record import CREATED, FK, QUEUED_AT, SEQ, ST, WAITING_SINCE, WAKE, WATCHDOG
from .._redis.store import Store
from .backlog import Backlog
from .forkgate import gate
from .publisher import Publisher

log = logging.getLogger("fanout")
MIN_WAIT = 0.002
_FIELDS = (FK, ST, SEQ, WAKE, WAITING_SINCE, WATCHDOG, QUEUED_AT, CREATED)


class TimerThread:
    """Fires due timers and runs periodic jobs, in one daemon thread per worker."""

    def __init__(self, store: Callable[[], Store], publisher: Publisher, lease_s: float) -> None:
        self._store = store
        self.publisher = publisher
        self.lease_s = lease_s
        self.poll_interval = 0.25
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._periodic: list[list[Any]] = []
        self._next_due: float | None = None
        # Through an outage of Redis or the broker: back off, and say so in few lines.
        # Two outages: a scan with nothing due proves the store is back, not the broker.
        self.outage = Outage("the timer scan (sleeps, retries, lost-message recovery)")
        self.publish_outage = Outage("the timer scan publishing due passes to the broker")
        self._publishing = False
        self._job_outages: dict[str, Outage] = {}
        # Never-started runs are offered again only when their message can be lost.
        self._backlog: Backlog | None = None

    @property
    def backlog(self) -> Backlog:
        if self._backlog is None:
            self._backlog = Backlog(self.publisher.app)
        return self._backlog

    def add_periodic(
        self, name: str, fn: Callable[[], Any], interval: float, *, at_start: bool = True
    ) -> None:
        """Run ``fn`` about every ``interval`` seconds; first at start, or after one
        interval when ``at_start`` is false."""
        if not any(entry[0] == name for entry in self._periodic):
            last = 0.0 if at_start else time.monotonic()
            self._periodic.append([name, fn, float(interval), last])

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="fanout-timers", daemon=True)
        self._thread.start()
        # Periodic jobs (the Django outbox sweeper, ...) get their own thread, so a
        # slow database never delays lease recovery or wake-ups.
        threading.Thread(target=self._periodic_loop, name="fanout-periodic", daemon=True).start()

    def _periodic_loop(self) -> None:
        while not self._stop.is_set():
            with gate.section():
                self._run_periodic()
            self._stop.wait(0.5)

    def stop(self, *, wait: bool = True) -> None:
        """Stop the timer and periodic threads; with ``wait``, let a scan in
        progress end first (up to 5s).  ``wait=False`` never blocks, for a signal
        handler."""
        self._stop.set()
        if wait and self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            wait = self.scan_round()
            if wait:
                self._stop.wait(wait)

    def scan_round(self) -> float:
        """One scan; the seconds to wait before the next (0: scan again at once).
        A failed scan (Redis or the broker away) forgets the due time of the last good
        one and backs off; the outage is logged by :attr:`outage`."""
        self._publishing = False
        try:
            with gate.section():
                n = self.scan_once()
        except Exception as exc:  # noqa: BLE001 - keep going through outages
            self._next_due = None
            if self._publishing:
                self.outage.ok()
                return self.publish_outage.failed(exc)
            return self.outage.failed(exc)
        self.outage.ok()
        if n:
            self.publish_outage.ok()
        return 0.0 if n else self.next_wait()

    def next_wait(self) -> float:
        """Until the earliest timer is due, at most ``poll_interval``: a sleep wakes
        on time, and a timer armed by another process is seen within the interval."""
        nxt = self._next_due
        if nxt is None:
            return self.poll_interval
        return min(self.poll_interval, max(MIN_WAIT, nxt - time.time()))

    def _run_periodic(self) -> None:
        now = time.monotonic()
        for entry in self._periodic:
            name, fn, interval, last = entry
            if now - last >= interval:
                entry[3] = now
                outage = self._job_outages.get(name)
                if outage is None:
                    outage = self._job_outages[name] = Outage(f"the periodic job {name}")
                try:
                    fn()
                except Exception as exc:  # noqa: BLE001 - a job never stops the thread
                    # The job's own interval paces its retries; back off further
                    # only when that interval is shorter than the back-off.
                    entry[3] = now - interval + max(interval, outage.failed(exc))
                else:
                    outage.ok()

    def scan_once(self) -> int:
        """Fire the due timers once; returns how many were due."""
        store, publisher = self._store(), self.publisher
        due, rearm, self._next_due = store.claim_due(rearm_s=self.lease_s)
        if not due:
            return 0
        routes = [m for m in due if m.startswith("route:")]
        branches = [m for m in due if m.startswith("branch:")]
        runs = [m for m in due if ":" not in m]
        # Read what the store holds first, then publish: a failure while publishing is
        # the broker's (see scan_round).
        payloads = {member: store.route_payload(member[6:]) for member in routes}
        targets = runs + [m.split(":")[1] for m in branches]
        fks: dict[str, str | None] = {}
        # Queued runs whose watchdog fired (not a wake-up, a concurrency wait or an
        # earlier re-offer): fn key, pass, when the message was queued.
        queued: dict[str, tuple[str, int, float]] = {}
        if targets:
            rows = store.runs_fields(targets, _FIELDS)
            for rid, (fk, st, seq, wake, ccw, wd, qa, c) in zip(targets, rows, strict=True):
                fks[rid] = fk
                if (fk and rid in runs and st == "queued" and wake in (None, "", "0")
                        and not ccw and wd in (None, "", "0")):
                    queued[rid] = (fk, int(seq or 0), float(qa or c or 0))
        deferred: dict[str, int] = {}
        if queued:
            _offer, deferred = self.backlog.sort(queued, watchdog=store.watchdog,
                                                 grace=store.watchdog / 5)
            runs = [rid for rid in runs if rid not in deferred]
        done: list[str] = []
        offered: list[str] = []
        self._publishing = True
        with publisher.batch() as producer:
            for member in routes:
                payload = payloads[member]
                if payload is None:
                    done.append(member)
                    continue
                data = json.loads(payload)
                publisher.route(
                    data["ids"],
                    parent_run_id=data.get("parent"),
                    target=data.get("target"),
                    invoker=data.get("invoker"),
                    batch_id=member[6:],
                    producer=producer,
                )
            for rid in runs:
                fk = fks.get(rid)
                if fk is None:
                    done.append(rid)  # the run is gone (expired)
                    continue
                publisher.enqueue(fk, rid, None, producer=producer,
                                  queue=publisher.router_queue)
                offered.append(rid)
            for member in branches:
                _, rid, sid = member.split(":", 2)
                fk = fks.get(rid)
                if fk is None:
                    done.append(member)
                    continue
                publisher.enqueue(fk, rid, None, branch=sid, producer=producer,
                                  queue=publisher.router_queue)
                offered.append(member)
        self._publishing = False
        # A message we just published may be lost too: keep a watchdog timer, with
        # backoff, until a pass or branch actually begins (which re-arms the timer).
        retimed: dict[str, int | None] = dict(store.watchdog_backoff(offered)) if offered else {}
        watch = int((time.time() + store.watchdog) * 1000)
        retimed.update({m: watch for m in routes if m not in done})
        retimed.update({m: None for m in done})
        retimed.update(deferred)  # their message may still wait in the queue
        store.retime(rearm, retimed)
        return len(due)
