"""The copier: every ended run's record from Redis into the PostgreSQL history store.

Each worker runs one copier thread (``fanout-history-copy``) when the store is
configured; one process of the fleet copies at a time (it holds the lease in Redis,
``ended_feed.py``). A round:

1. take or renew the lease (the others sleep and try again);
2. take up to ``batch`` run ids from the ended feed, lowest score first (everything in
   the feed is not copied yet, whatever its score: a worker whose clock is behind
   scores its runs early, and they are taken all the same);
3. load their records (one pipeline), upsert them in one PostgreSQL transaction;
4. take them out of the feed, only after the commit.

So a run is copied at least once (a worker killed between 3 and 4 leaves the batch in
the feed, and the next holder copies it again: the upsert makes it one row), a
restart goes on with what the feed holds, and an outage of PostgreSQL (or of Redis)
backs off (``fanout/_core/outage.py``) and catches up when it ends. Runs that ended
before the store was configured are in the feed too, as long as Redis keeps them;
``fanout history backfill`` copies the ones that ended before the feed existed.
Nothing here runs in a pass: the scripts that end runs only ``ZADD`` to the feed.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from .._core.outage import Outage
from .._core.run_record import ST
from .._redis.ended_feed import EndedFeed
from .._redis.store import Store
from .store import PgHistory

log = logging.getLogger("fanout")

BATCH = 500
IDLE_SECONDS = 1.0
LEASE_SECONDS = 30.0
RETENTION_EVERY = 3600.0


@dataclass
class CopyReport:
    copied: int = 0
    missing: int = 0
    rounds: int = 0


class Copier:
    """Copies the ended feed into the history store (see the module docstring)."""

    def __init__(
        self,
        store: Callable[[], Store],
        history: PgHistory,
        *,
        batch: int = BATCH,
        lease: float = LEASE_SECONDS,
        retention_days: float | None = None,
        owner: str | None = None,
    ) -> None:
        if batch < 1:
            raise ValueError("the copier's batch must be at least 1")
        self._store = store
        self.history = history
        self.batch = batch
        self.lease = lease
        self.retention_days = retention_days
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._schema_ready = False
        self._last_retention = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def feed(self) -> EndedFeed:
        return EndedFeed(self._store())

    # -- one round -------------------------------------------------------------------------

    def copy_once(self) -> int | None:
        """One batch: the runs taken from the feed (a run whose hash is already gone is
        passed over), or None when another process holds the lease."""
        feed = self.feed
        if not feed.hold(self.owner, self.lease):
            return None
        if not self._schema_ready:
            self.history.create_schema()
            if feed.forget_cursor():
                log.info("fanout: history store: copying the whole ended feed once more "
                         "(the cursor of an earlier version is gone)")
            self._schema_ready = True
        self._retention()
        due = feed.oldest(self.batch)
        if not due:
            return 0
        records = feed.records([rid for _, rid in due])
        runs = [(rid, rec) for (_, rid), rec in zip(due, records, strict=True) if rec is not None]
        self.history.upsert(runs)
        # Only after the commit: a crash before this line copies the batch again.
        feed.done(due)
        return len(due)

    def drain(self, *, max_rounds: int = 10_000, lease_wait: float | None = None) -> CopyReport:
        """Copy until the feed is caught up. While another process holds the lease, wait
        for it up to ``lease_wait`` seconds (twice the lease by default), then stop."""
        rep = CopyReport()
        deadline = time.monotonic() + (2 * self.lease if lease_wait is None else lease_wait)
        for _ in range(max_rounds):
            n = self.copy_once()
            rep.rounds += 1
            if n is None:
                if time.monotonic() >= deadline:
                    break
                time.sleep(min(0.2, self.lease / 3))
                continue
            if n == 0:
                break
            rep.copied += n
        return rep

    def _retention(self) -> None:
        if self.retention_days is None:
            return
        now = time.monotonic()
        if self._last_retention and now - self._last_retention < RETENTION_EVERY:
            return
        self._last_retention = now
        removed = self.history.delete_older(self.retention_days)
        if removed:
            log.info("fanout: history store: %d runs past %g days deleted", removed,
                     self.retention_days)

    # -- the thread ------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="fanout-history-copy",
                                        daemon=True)
        self._thread.start()

    def stop(self, wait: bool = True) -> None:
        self._stop.set()
        thread = self._thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)
        try:
            self.feed.release(self.owner)
        except Exception:  # noqa: BLE001 - Redis away: the lease expires by itself
            pass
        self.history.close()

    def _loop(self) -> None:
        outage = Outage("copying ended runs to the PostgreSQL history store", base=0.5, cap=30.0)
        while not self._stop.is_set():
            try:
                n = self.copy_once()
            except Exception as exc:  # noqa: BLE001 - PostgreSQL or Redis away: back off
                self._stop.wait(outage.failed(exc))
                continue
            outage.ok()
            if n is None:
                self._stop.wait(self.lease / 3)
            elif n < self.batch:
                self._stop.wait(IDLE_SECONDS)


def backfill(store: Store, history: PgHistory, *, batch: int = BATCH) -> CopyReport:
    """Copy every ended run Redis still holds, whether or not it is in the ended feed:
    the runs that ended before the feed existed (a deployment upgraded from a version
    without it) are in the all-runs index only. Walks that index oldest first, a batch
    per transaction; the upserts make it safe to run again, or beside the copier.
    ``copied`` counts the ended runs written, ``missing`` the runs passed over (active,
    or their hash gone)."""
    from .._core.records import TERMINAL
    from .._redis.run_index import RunIndex

    if batch < 1:
        raise ValueError("the backfill's batch must be at least 1")
    history.create_schema()
    feed = EndedFeed(store)
    rep = CopyReport()
    for chunk in RunIndex(store).walk(store.keys.runs_indexes(), chunk=batch):
        ids = [rid for rid, _s in chunk]
        runs = [(rid, rec) for rid, rec in zip(ids, feed.records(ids), strict=True)
                if rec is not None and rec.get(ST) in TERMINAL]
        history.upsert(runs)
        rep.copied += len(runs)
        rep.missing += len(ids) - len(runs)
        rep.rounds += 1
    return rep
