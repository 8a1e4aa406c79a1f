"""The ended feed: the runs in the order they ended, for the history store's copier.

``finish_run``, ``cancel_run`` and ``create_run`` (a run created ended: a skipped cron
tick, a rate-limited run) add the run id to ``P:idx:ended``, a sorted set scored by
the time the run ended (ms), in the same script that ends the run (``lua/_indexes.lua``).
:meth:`History.prune` trims it with the other indexes.

The copier (``fanout/_postgres/copier.py``) reads it from a cursor kept in Redis,
``P:history:cursor`` = ``"<score>:<run id>"``: the score and the id of the last run
copied. Members of one score come in the order of their ids, so the pair is an exact
position, however many runs ended in one millisecond. The cursor moves only after
the copy committed, so a run is copied at least once; the store's upserts make a
second copy harmless. One process of the fleet copies at a time: it holds the short
lease ``P:history:lease`` (a ``SET NX PX``, renewed every batch).
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
START: Position = (-1, "")


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

    # -- the cursor ----------------------------------------------------------------------

    def cursor(self) -> Position:
        raw = text_or_none(self.r.get(self.keys.history_cursor))
        if not raw:
            return START
        score, _, member = raw.partition(":")
        return int(score), member

    def advance(self, position: Position) -> None:
        self.r.set(self.keys.history_cursor, f"{position[0]}:{position[1]}")

    def reset(self) -> None:
        """Copy everything in the feed again (idempotent upserts)."""
        self.r.delete(self.keys.history_cursor)

    def now_ms(self) -> int:
        sec, usec = self.r.time()
        return int(sec) * 1000 + int(usec) // 1000

    # -- reading -------------------------------------------------------------------------

    def after(self, position: Position, *, limit: int, upto_ms: int) -> list[Position]:
        """Up to ``limit`` (score, run id) after ``position``, oldest first, with a score
        at most ``upto_ms``."""
        score, member = position
        low = max(score, 0)
        found: list[Position] = []
        offset = 0
        page = limit + 64
        while len(found) < limit:
            rows: list[Any] = self.r.zrangebyscore(self.keys.ended_index, low, upto_ms,
                                                   start=offset, num=page, withscores=True)
            for raw, s in rows:
                rid, ms = text(raw), int(s)
                if ms < score or (ms == score and rid <= member):
                    continue
                found.append((ms, rid))
                if len(found) == limit:
                    break
            if len(rows) < page:
                break
            offset += len(rows)
        return found

    def backlog(self, position: Position) -> int:
        """How many runs ended after ``position``'s millisecond (the copier's lag)."""
        low = "-inf" if position == START else f"({position[0]}"
        return int(self.r.zcount(self.keys.ended_index, low, "+inf"))

    def live(self, fn_keys: Sequence[str]) -> list[str]:
        """The runs a listing must read from Redis while the history store holds the
        rest: the active runs of ``fn_keys`` (every function's when empty is passed as
        all of them) and the runs that ended but are not copied yet (after the cursor;
        some may be copied already: the listing takes them from here)."""
        pipe = self.r.pipeline(transaction=False)
        for fk in fn_keys:
            pipe.zrange(self.keys.status_index("active", fk), 0, -1)
        pending = self.after(self.cursor(), limit=1_000_000, upto_ms=2**62)
        seen: dict[str, None] = {}
        for rows in pipe.execute() if fn_keys else []:
            for raw in rows:
                seen[text(raw)] = None
        for _, rid in pending:
            seen[rid] = None
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
