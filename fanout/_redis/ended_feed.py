"""The ended feed: the runs in the order they ended, for the history store's copier.

``finish_run``, ``cancel_run`` and ``create_run`` (a run created ended: a skipped cron
tick, a rate-limited run) add the run id to ``P:idx:ended``, a sorted set scored by
the time the run ended (ms), in the same script that ends the run (``lua/_indexes.lua``).
:meth:`History.prune` trims it with the other indexes.

The copier (``fanout/_postgres/copier.py``) takes the runs of lowest score first and
removes them from the feed once their copy committed: whatever is in the feed is not
copied yet, whatever its score. So a run ended by a worker whose clock is behind (its
score earlier than runs already copied) is still taken, on the next round; a copier
killed between its commit and the removal copies the batch again (the store's upserts
make a second copy harmless). One process of the fleet copies at a time: it holds the
short lease ``P:history:lease`` (a ``SET NX PX``, renewed every batch). Deployments
before this kept a cursor (``P:history:cursor``); the copier deletes it and copies the
whole feed once more.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .._core.run_record import (
    ERROR,
    EV,
    EVENT,
    EVENTS,
    INVOKER,
    MARKERS,
    OUTPUT,
    SEARCH,
    VERSION_WARNINGS,
    VERSIONS,
    is_step_field,
)
from .replies import field_map, text, text_or_none
from .store import Store

# The fields of a run's hash that hold JSON (the step records too): decoded in a record.
_JSON_FIELDS = frozenset({ERROR, EV, EVENT, EVENTS, INVOKER, MARKERS, OUTPUT, SEARCH,
                          VERSION_WARNINGS, VERSIONS})

Position = tuple[int, str]


def record_of(fields: dict[str, str]) -> dict[str, Any]:
    """A run's hash as a JSON-ready record: its JSON fields (and step records) decoded,
    every other field as the text the store keeps."""
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if name in _JSON_FIELDS or is_step_field(name):
            try:
                out[name] = json.loads(value)
                continue
            except ValueError:
                pass
        out[name] = value
    return out


def fields_of(record: dict[str, Any]) -> dict[str, str]:
    """The inverse of :func:`record_of`: a record as the hash's text fields."""
    out: dict[str, str] = {}
    for name, value in record.items():
        if name in _JSON_FIELDS or is_step_field(name):
            out[name] = json.dumps(value, separators=(",", ":"))
        else:
            out[name] = value if isinstance(value, str) else json.dumps(value)
    return out


class EndedFeed:
    """Reading the ended feed from the copier's cursor, and the copier's lease."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.r = store.r
        self.keys = store.keys

    # -- the lease -----------------------------------------------------------------------

    def hold(self, owner: str, ttl: float) -> bool:
        """Take or renew the copier's lease for ``ttl`` seconds; False when another
        process holds it."""
        px = max(1, int(ttl * 1000))
        if self.r.set(self.keys.history_lease, owner, nx=True, px=px):
            return True
        if text_or_none(self.r.get(self.keys.history_lease)) == owner:
            self.r.pexpire(self.keys.history_lease, px)
            return True
        return False

    def release(self, owner: str) -> None:
        if text_or_none(self.r.get(self.keys.history_lease)) == owner:
            self.r.delete(self.keys.history_lease)

    # -- the copier's reading ------------------------------------------------------------

    def oldest(self, limit: int) -> list[Position]:
        """Up to ``limit`` (score, run id) of the feed, lowest score first: the runs not
        copied yet."""
        rows: list[Any] = self.r.zrange(self.keys.ended_index, 0, limit - 1, withscores=True)
        return [(int(s), text(raw)) for raw, s in rows]

    def done(self, positions: Sequence[Position]) -> None:
        """Take copied runs out of the feed (after their copy committed)."""
        if positions:
            self.r.zrem(self.keys.ended_index, *[rid for _s, rid in positions])

    def forget_cursor(self) -> bool:
        """Delete the cursor an earlier version kept; True when there was one."""
        return bool(self.r.delete(self.keys.history_cursor))

    def pending(self) -> int:
        """How many ended runs wait to be copied (the copier's lag)."""
        return int(self.r.zcard(self.keys.ended_index))

    def now_ms(self) -> int:
        sec, usec = self.r.time()
        return int(sec) * 1000 + int(usec) // 1000

    # -- reading -------------------------------------------------------------------------

    def live(self, fn_keys: Sequence[str]) -> list[str]:
        """The runs a listing must read from Redis while the history store holds the
        rest: the active runs of ``fn_keys`` (every function's when empty is passed as
        all of them) and the runs that ended but are not copied yet (still in the feed;
        some may be copied already: the listing takes them from here)."""
        pipe = self.r.pipeline(transaction=False)
        for fk in fn_keys:
            pipe.zrange(self.keys.status_index("active", fk), 0, -1)
        pipe.zrange(self.keys.ended_index, 0, -1)
        *active, pending = pipe.execute()
        seen: dict[str, None] = {}
        for rows in [*active, pending]:
            for raw in rows:
                seen[text(raw)] = None
        return list(seen)

    def records(self, run_ids: Sequence[str]) -> list[dict[str, Any] | None]:
        """The records of the runs (one pipeline); None for a run whose hash is gone."""
        pipe = self.r.pipeline(transaction=False)
        for rid in run_ids:
            pipe.hgetall(self.keys.run(rid))
        out: list[dict[str, Any] | None] = []
        for raw in pipe.execute():
            out.append(record_of(field_map(raw)) if raw else None)
        return out
