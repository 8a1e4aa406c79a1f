"""The watchdog of queued runs: offer a pass again only when its message can be lost.

A queued run keeps a watchdog timer (five times the recovery timeout) until its
next pass begins, because the broker can lose its message (a restart without
persistence, a failover, a purge).  A long backlog makes the same timer fire for a
run whose message is merely late: it still waits in the queue, behind the rest of
the fan-out.  Offering it again then only adds a duplicate message per run.

:class:`Backlog` decides, for the timer scan, which queued runs to offer again and
which to defer.  It asks the broker how many messages wait in the run's
step queue (a passive ``queue_declare``: the length of every priority list on
Redis, the ready messages on RabbitMQ), once per queue per scan, and remembers when
it saw each queue empty.  The rule:

* The message of run X was published after X was queued (``c``: the ``qa`` field,
  set before the pass's message is published, or the creation time for a first
  pass).  If the queue was seen empty at some time ``e >= c``, X's message was no
  longer in it at ``e``:
  it was delivered (or lost).  Emptiness is a fact about every priority list at
  once, so the proof holds whatever order the broker serves messages in.
* A delivered message begins its pass within moments, unless it waits in a worker's
  prefetch buffer; so X is offered again only once ``e <= now - grace`` (the
  recovery timeout).  Until then it is deferred to ``e + grace``.
* While the queue has not been seen empty since ``c``, X's message may still be in
  it: the timer is pushed forward by one watchdog period (no backoff), and the
  broker is asked again then.
* Deferral has a bound, so a lost message is never stranded by a queue that never
  drains: a run queued for more than :data:`MAX_DEFER` seconds is offered again as
  before (then with the watchdog's backoff).  A broker that cannot answer (an error
  other than "no such queue") defers nothing.

Only a queued run's watchdog is deferred: a run with a wake time (a sleep, a retry,
a delayed start), a concurrency wait, a lease (a running pass) or an earlier re-offer
(whose message went to ``fanout.events``) keeps the old rule.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from celery import Celery

log = logging.getLogger("fanout")
MAX_DEFER = 3600.0  # seconds a queued run's re-offer may wait for its queue to drain


def _name(queue: Any) -> str:
    return str(getattr(queue, "name", queue))


class Backlog:
    """Which never-started runs the timer scan offers again, and which it defers."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        # queue name -> the times (ascending) this process saw it empty, at most one
        # a second, for the last MAX_DEFER seconds.
        self._empty: dict[str, list[float]] = {}

    def step_queue(self, fn_key: str, run_id: str, seq: int) -> str:
        """The queue pass ``seq`` of the run was published to (``task_routes``)."""
        options = self.app.amqp.router.route({}, "fanout.step", (fn_key, run_id, seq), {})
        return _name(options.get("queue") or self.app.conf.task_default_queue)

    def depths(self, queues: Sequence[str]) -> dict[str, int | None]:
        """Messages waiting in each queue (0: no such queue; None: the broker did not
        say), one passive declare per queue."""
        out: dict[str, int | None] = {}
        with self.app.pool.acquire(block=True) as conn:
            for name in queues:
                channel = None
                try:
                    channel = conn.channel()
                    out[name] = int(channel.queue_declare(queue=name, passive=True).message_count)
                except Exception as exc:  # noqa: BLE001 - the broker's own error types vary
                    missing = getattr(exc, "code", None) == 404 or "NOT_FOUND" in str(exc)
                    out[name] = 0 if missing else None
                finally:
                    if channel is not None:
                        try:
                            channel.close()
                        except Exception:  # noqa: BLE001, S110 - closing a closed channel
                            pass
        return out

    def _saw(self, queue: str, depth: int | None, now: float) -> None:
        seen = self._empty.setdefault(queue, [])
        if depth == 0 and (not seen or now - seen[-1] >= 1.0):
            seen.append(now)
        cut = bisect.bisect_left(seen, now - MAX_DEFER)
        if cut:
            del seen[:cut]

    def _empty_between(self, queue: str, lo: float, hi: float) -> float | None:
        """The latest time in [lo, hi] the queue was seen empty, or None."""
        seen = self._empty.get(queue, [])
        i = bisect.bisect_right(seen, hi)
        return seen[i - 1] if i and seen[i - 1] >= lo else None

    def sort(
        self, runs: Mapping[str, tuple[str, int, float]], *, watchdog: float, grace: float,
        now: float | None = None,
    ) -> tuple[list[str], dict[str, int]]:
        """``runs``: run id -> (fn key, pass, queued at) of queued runs whose watchdog
        fired.  Returns (the runs to offer again, the deferred ones -> due time in ms)."""
        if not runs:
            return [], {}
        now = time.time() if now is None else now
        queues = {rid: self.step_queue(fk, rid, seq) for rid, (fk, seq, _c) in runs.items()}
        depths = self.depths(sorted(set(queues.values())))
        for queue, depth in depths.items():
            self._saw(queue, depth, now)
        offer: list[str] = []
        deferred: dict[str, int] = {}
        for rid, (_fk, _seq, created) in runs.items():
            queue = queues[rid]
            if depths[queue] is None or now - created >= MAX_DEFER:
                offer.append(rid)
                continue
            if self._empty_between(queue, created, now - grace) is not None:
                offer.append(rid)  # out of the queue for a grace period: lost or stuck
                continue
            gone = self._empty_between(queue, created, now)
            due = gone + grace if gone is not None else now + watchdog
            deferred[rid] = int(due * 1000)
        if deferred:
            waiting = {q: depths[q] for q in {queues[r] for r in deferred}}
            log.info("fanout: %d queued run(s) not offered again: their pass may still "
                     "wait in the broker (%s)", len(deferred),
                     ", ".join(f"{q}: {n} message(s)" for q, n in sorted(waiting.items())))
        return offer, deferred
