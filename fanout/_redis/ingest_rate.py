"""Rate limits of ingest keys, shared by every process that serves the endpoint.

A key limited to N events per window (a second or a minute) is counted in Redis,
so two endpoint processes behind a load balancer share the limit::

    P:ingest:rate:<key id>:<window>:<n>   string  events counted in window n
                                                  (n = now // window; expires after
                                                  two windows)

The check is a sliding-window estimate over two fixed windows: the events of the
current window plus the previous window's count weighted by how much of it still
overlaps the last ``window`` seconds. One round trip (``INCRBY``, ``EXPIRE``,
``GET``) counts a request; a refused request takes its events back (``DECRBY``), so
refusals never use up the allowance. Under contention an estimate can refuse a
request that would just have fitted; it never admits more than the limit.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from .replies import text
from .store import Store


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    used: float  # the estimate, this request included
    retry_after: int  # seconds, when refused


class IngestRate:
    def __init__(self, store: Store) -> None:
        self.r: Any = store.r
        self.keys = store.keys

    def _key(self, key_id: str, window: int, n: int) -> str:
        return self.keys.ingest_rate(key_id, window, n)

    def take(self, key_id: str, events: int, limit: int, window: int,
             now: float | None = None) -> RateDecision:
        """Count ``events`` against ``limit`` per ``window`` seconds for ``key_id``."""
        now = time.time() if now is None else now
        n = int(now // window)
        cur_key = self._key(key_id, window, n)
        pipe = self.r.pipeline(transaction=False)
        pipe.incrby(cur_key, events)
        pipe.expire(cur_key, window * 2 + 1)
        pipe.get(self._key(key_id, window, n - 1))
        cur, _ok, prev = pipe.execute()
        overlap = 1.0 - (now - n * window) / window
        used = int(cur) + (int(text(prev)) if prev is not None else 0) * overlap
        if used <= limit:
            return RateDecision(True, used, 0)
        self.r.decrby(cur_key, events)
        # Until the estimate, less these events, falls to the limit: when the previous
        # window's weight has shrunk enough, else at the next window.
        retry = max(1, math.ceil((n + 1) * window - now))
        return RateDecision(False, used, min(retry, window))


__all__ = ["IngestRate", "RateDecision"]
