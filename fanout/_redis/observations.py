"""Duration histograms, observed in each process and added to the metrics hash.

The counters (runs started and ended, step failures, events) are counted inside the
Lua scripts, atomically with the change of state they count. The three duration
histograms are not: a command called from a script costs about as much as a small
script, and a histogram costs two (a bucket and a sum) per observation, several
times a pass. So the scripts return what they measured (an attempt's duration, a
run's duration; a pass's queue delay is read from the fields ``begin_pass`` already
returns) and each process adds it here, to a buffer of ``HINCRBY`` deltas on the
same fields a script would have written. A daemon thread sends the buffer in one
pipeline every ``interval`` seconds, and the worker sends it when a process exits
(``worker_process_shutdown`` for a prefork child, ``worker_shutdown`` for the main
process, ``atexit`` elsewhere).

What this trades: a scrape sees a histogram up to ``interval`` seconds late, and a
process killed with SIGKILL loses the observations of its last ``interval`` (its
counters stay exact). A failed send is kept and sent again with the next one, and
logged at WARNING on the ``fanout`` logger once a minute while it lasts.

The same thread rolls the hash into time buckets for the dashboard's charts, once a
minute in one process of the fleet (``rollups.py``).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

import redis

from .._core.outage import Outage
from .replies import text
from .rollups import Rollups

log = logging.getLogger("fanout")

# The fixed histogram buckets (seconds), as the field names spell them.
DURATION_BUCKETS: tuple[str, ...] = (
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30",
    "60", "120", "300", "600", "1800", "3600", "21600", "86400",
)
_BOUNDS = tuple(float(b) for b in DURATION_BUCKETS)
# Held only while a process starts its sender thread; a child gets a fresh one.
_start_lock = threading.Lock()


def _fresh_start_lock() -> None:
    global _start_lock
    _start_lock = threading.Lock()


os.register_at_fork(after_in_child=_fresh_start_lock)


def bucket(seconds: float) -> str:
    """The bucket an observation falls in: the first bound >= it, else ``+Inf``."""
    i = bisect_left(_BOUNDS, seconds)
    return DURATION_BUCKETS[i] if i < len(DURATION_BUCKETS) else "+Inf"


class Observations:
    """A process's histogram observations not yet in the store.

    ``observe`` only adds to a dict under a lock (no I/O); the first call in a
    process (a forked child included) starts that process's sender thread.
    """

    def __init__(self, client: redis.Redis, key: str, *, interval: float = 1.0,
                 shards: Sequence[str] = ()) -> None:
        self.r = client
        self.key = key
        # On a Redis Cluster: the metrics shards (metric_shards.py); each send goes to
        # the next one, and the rollups read them all.
        self.shards = list(shards)
        self._turn = 0
        self.interval = float(interval)
        self._pid = 0
        self._lock = threading.Lock()
        self._pending: dict[str, int] = {}
        self._stop = threading.Event()
        self._warned = 0.0
        self.outage = Outage("sending duration histograms to Redis", base=self.interval,
                             cap=max(5.0, self.interval))
        # The dashboard's charts: once a minute one process of the fleet turns the
        # cumulative hash into time buckets (rollups.py), from this sender thread.
        self.rollups = Rollups(client, key, sources=self.shards or None)

    def observe(self, name: str, app: str, fn: str, seconds: float) -> None:
        """One observation of histogram ``name`` for function ``app|fn``."""
        if self._pid != os.getpid():
            with _start_lock:
                if self._pid != os.getpid():
                    self._start()
        seconds = max(0.0, seconds)
        series = f"{name}|{app}|{fn}"
        b, u = f"h|{series}|{bucket(seconds)}", f"hu|{series}"
        with self._lock:
            p = self._pending
            p[b] = p.get(b, 0) + 1
            p[u] = p.get(u, 0) + round(seconds * 1_000_000)

    def observe_many(self, name: str, app: str, fn: str, values: Any) -> None:
        """Observe each of ``values`` (numbers, or strings as a script returns them)."""
        for v in values:
            self.observe(name, app, fn, float(text(v)))

    def pending(self) -> dict[str, int]:
        """A copy of what is not yet sent (for tests and the shutdown log)."""
        with self._lock:
            return dict(self._pending)

    def flush(self) -> int:
        """Send what is buffered in one pipeline; returns the number of fields sent.
        On a Redis error the deltas are kept for the next send, and the error raised."""
        if self._pid != os.getpid():
            return 0  # nothing observed in this process (a parent's buffer is its own)
        with self._lock:
            batch, self._pending = self._pending, {}
        if not batch:
            return 0
        key = self.key
        if self.shards:  # a different shard each time: no one shard takes a process's sends
            self._turn += 1
            key = self.shards[(os.getpid() + self._turn) % len(self.shards)]
        try:
            pipe = self.r.pipeline(transaction=False)
            for field, delta in batch.items():
                pipe.hincrby(key, field, delta)
            pipe.execute()
        except Exception:
            with self._lock:
                for field, delta in batch.items():
                    self._pending[field] = self._pending.get(field, 0) + delta
            raise
        return len(batch)

    def flush_quietly(self) -> None:
        """:meth:`flush`, logging (not raising) a failure, at most once a minute."""
        try:
            self.flush()
        except Exception as exc:  # noqa: BLE001 - a metrics send never stops a worker
            now = time.monotonic()
            if now - self._warned >= 60.0:
                self._warned = now
                log.warning(
                    "fanout: could not add %d histogram fields to %s (kept, sent again "
                    "with the next batch): %s", len(self._pending), self.key, exc,
                    extra={"fanout_metrics_key": self.key},
                )

    def close(self) -> None:
        """Stop the sender thread and send what is left."""
        self._stop.set()
        self.flush_quietly()

    def _start(self) -> None:
        # A new process (first use, or a child forked with the parent's buffer): the
        # parent's pending deltas and lock are the parent's; start afresh.
        self._lock = threading.Lock()
        self._pending = {}
        self._stop = threading.Event()
        self._pid = os.getpid()  # last: a thread that sees it sees the fresh buffer
        threading.Thread(target=self._loop, name="fanout-metrics", daemon=True).start()
        atexit.register(self.close)

    def _loop(self) -> None:
        stop, wait = self._stop, self.interval
        while not stop.wait(wait):
            wait = self.send_round()

    def send_round(self) -> float:
        """Send the buffer and roll up the charts; the seconds to wait before the next
        round (longer, backing off, while Redis is away; the deltas are kept)."""
        try:
            self.flush()
        except Exception as exc:  # noqa: BLE001 - a metrics send never stops a worker
            return max(self.interval, self.outage.failed(exc))
        self.outage.ok()
        self.rollups.tick_quietly()
        return self.interval


__all__ = ["DURATION_BUCKETS", "Observations", "bucket"]
