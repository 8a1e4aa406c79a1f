"""The run indexes: which sorted set answers a query, exact counts, and the backfill.

The run scripts keep every index (``lua/_indexes.lua``); this module only reads them,
builds the short-lived unions and intersections a combined filter needs, and fills
them in once for runs created before they existed (:meth:`RunIndex.reindex`).

Every index is a sorted set of run ids scored by the run's creation time (ms):

* ``P:idx:runs`` and ``P:idx:fn:<fk>``: every run, of all functions or of one (on a
  Redis Cluster each is 16 shards, read merged: ``merged_index.py``);
* ``P:idx:fn:<fk>|active``: the runs of a function that have not ended (queued,
  running, sleeping, waiting); the active runs of all functions are the union of
  these sets over ``P:idx:fns`` (the functions that have had runs);
* ``P:idx:st:<status>`` and ``P:idx:fn:<fk>|st:<status>``: the runs that ended with
  ``completed``, ``failed``, ``cancelled`` or ``skipped``;
* ``P:idx:ver:<version>`` and ``P:idx:fn:<fk>|v:<version>``: the runs created on a
  version or with a pass that ran on it;
* ``P:idx:en:<name>`` and ``P:idx:fn:<fk>|en:<name>``: the runs started by an event
  of that name (a batch run: by any of its events; a cron run by
  ``fanout/scheduled.timer``, an invoked one by ``fanout/function.invoked``);
* ``P:idx:sa:<fk>|<path>|<value>``: the runs whose declared search attribute has
  that value.

A query names one of them when it can: ``status="failed"`` reads
``P:idx:st:failed`` directly, its total is one ``ZCOUNT``. A query that combines
filters intersects the sets it names (``ZINTERSTORE`` into ``P:idx:tmp:<digest>``,
kept 60 s), a multi-status filter unions them; a live status other than ``active``
(``queued``, ``running``, ``sleeping``, ``waiting``) is picked out of the active set
by reading each active run's status (exact, and as costly as there are runs in
flight). Nothing here stops early: every answer is exact as of the call.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from .._core.records import TERMINAL
from .._core.run_record import (
    BATCH_KEY,
    CREATED,
    EVENT,
    EVENTS,
    FK,
    OUTPUT,
    SEARCH,
    ST,
    VERSION,
    VERSIONS,
    is_batch_event_field,
)
from .._core.search import value_part
from .._errors import ConfigError
from . import merged_index as mi
from .merged_index import Index
from .replies import text, text_or_none, texts
from .store import Store

ACTIVE_STATUSES = frozenset({"queued", "running", "sleeping", "waiting"})
TEMP_TTL = 60
NOT_INDEXED = ("runs by status, version, event name or search attribute are indexed on a standalone "
               "Redis only: on a Redis Cluster, list a function's runs or all runs")
_CHUNK = 1000


@dataclass(frozen=True)
class Query:
    """What a run listing or count filters on (all optional)."""

    fn_key: str | None = None
    statuses: frozenset[str] | None = None
    version: str | None = None
    search: tuple[tuple[str, Any], ...] = ()
    event_name: str | None = None


def _score(ts: float | None, default: str) -> str:
    return default if ts is None else str(round(ts * 1000))


class RunIndex:
    """The indexes of one store (see the module docstring)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.r = store.r
        self.keys = store.keys

    # -- which set answers a query ---------------------------------------------------

    def key_for(self, q: Query, *, since: float | None = None,
                until: float | None = None) -> Index:
        """The sorted set holding exactly the runs ``q`` asks for (perhaps a temporary
        union or intersection built now)."""
        parts: list[str] = []
        if q.statuses is not None:
            parts.append(self._status_key(q.fn_key, q.statuses, since, until))
        if q.version:
            parts.append(self.keys.version_index(q.fn_key, q.version))
        if q.event_name:
            if not self.store.indexed:
                raise ConfigError(NOT_INDEXED)
            parts.append(self.keys.run_event_name_index(q.fn_key, q.event_name))
        for path, value in q.search:
            vp = value_part(value)
            if vp is None:
                raise ConfigError(f"cannot search {path} for {value!r}: give a string, a number "
                                  "or true/false, at most 64 bytes long")
            if q.fn_key:
                parts.append(self.keys.search_index(q.fn_key, path, vp))
            else:
                parts.append(self._union([self.keys.search_index(fk, path, vp)
                                          for fk in self.functions()]))
        if not parts:
            return self.keys.runs_indexes(q.fn_key)
        return parts[0] if len(parts) == 1 else self._combine("inter", parts)

    def _status_key(self, fn_key: str | None, wanted: frozenset[str],
                    since: float | None, until: float | None) -> str:
        keys = [self.keys.status_index(s, fn_key) for s in sorted(wanted & TERMINAL)]
        live = wanted & ACTIVE_STATUSES
        if live == ACTIVE_STATUSES:
            keys.append(self.active_key(fn_key))
        elif live:
            keys.append(self._live_subset(fn_key, live, since, until))
        return self._union(keys)

    def _live_subset(self, fn_key: str | None, live: frozenset[str],
                     since: float | None, until: float | None) -> str:
        """A temporary set of the active runs whose status is in ``live`` (created
        between ``since`` and ``until``): every active run's status is read."""
        src = self.active_key(fn_key)
        # A name of its own: two readers never fill the same set.
        dest = self._temp("live", src, *sorted(live), uuid.uuid4().hex)
        pipe = self.r.pipeline(transaction=False)
        for chunk in self.walk(src, since=since, until=until):
            sts = self.store.runs_field([m for m, _s in chunk], ST)
            found = {m: s for (m, s), st in zip(chunk, sts, strict=True) if st in live}
            if found:
                pipe.zadd(dest, cast("Mapping[str, float]", found))
        pipe.expire(dest, TEMP_TTL)
        pipe.execute()
        return dest

    def active_key(self, fn_key: str | None) -> str:
        """The set of active runs of one function, or the union of every function's."""
        if fn_key is not None:
            return self.keys.status_index("active", fn_key)
        return self._union([self.keys.status_index("active", fk) for fk in self.functions()])

    def _union(self, keys: Sequence[str]) -> str:
        if len(keys) == 1:
            return keys[0]
        if not keys:
            return self._temp("none")  # an empty set: nothing matches
        return self._combine("union", keys)

    def _combine(self, op: str, keys: Sequence[str]) -> str:
        dest = self._temp(op, *keys)
        pipe = self.r.pipeline(transaction=False)
        if op == "inter":
            pipe.zinterstore(dest, list(keys), aggregate="MIN")
        else:
            pipe.zunionstore(dest, list(keys), aggregate="MIN")
        pipe.expire(dest, TEMP_TTL)
        pipe.execute()
        return dest

    def _temp(self, *parts: str) -> str:
        digest = hashlib.sha1("\x00".join(parts).encode()).hexdigest()[:20]
        return self.keys.temp_index(digest)

    def functions(self) -> list[str]:
        """The functions that have had runs (``P:idx:fns``, written as runs are created)."""
        return sorted(texts(self.r.smembers(self.keys.functions_index)))

    # -- counting ----------------------------------------------------------------------

    def count(self, key: Index, *, since: float | None = None,
              until: float | None = None) -> int:
        return mi.count(self.r, key, _score(since, "-inf"), _score(until, "+inf"))

    def count_many(self, windows: Sequence[tuple[Index, float | None, float | None]]
                   ) -> list[int]:
        """``ZCOUNT`` of each (key, since, until), in one round trip."""
        pipe = self.r.pipeline(transaction=False)
        sizes = [mi.queue_count(pipe, key, _score(since, "-inf"), _score(until, "+inf"))
                 for key, since, until in windows]
        replies, out, i = pipe.execute(), [], 0
        for n in sizes:
            out.append(mi.total(replies[i:i + n]))
            i += n
        return out

    def status_counts(self, fn_key: str | None = None, *, since: float | None = None,
                      until: float | None = None, live: bool = True) -> dict[str, int]:
        """Runs created in the window by status, from the indexes (one ``ZCOUNT``
        each): the terminal statuses, ``active`` and, with ``live``, each live status
        (read from the active runs; as costly as there are runs in flight)."""
        if not self.store.indexed:
            raise ConfigError(NOT_INDEXED)
        names = sorted(TERMINAL)
        active = ([self.keys.status_index("active", fn_key)] if fn_key is not None else
                  [self.keys.status_index("active", fk) for fk in self.functions()])
        counts = self.count_many([(self.keys.status_index(name, fn_key), since, until)
                                  for name in names] + [(k, since, until) for k in active])
        out = dict(zip(names, counts, strict=False))
        out["active"] = sum(counts[len(names):])
        if live and out["active"]:
            for s in ACTIVE_STATUSES:
                out[s] = 0
            for key, n in zip(active, counts[len(names):], strict=True):
                if not n:
                    continue
                for chunk in self.walk(key, since=since, until=until):
                    for st in self.store.runs_field([m for m, _s in chunk], ST):
                        if st in ACTIVE_STATUSES:
                            out[st] += 1
        return out

    def walk(self, key: Index, *, since: float | None = None, until: float | None = None,
             chunk: int = _CHUNK) -> Iterable[list[tuple[str, float]]]:
        """Every (member, score) of ``key`` in the window, oldest first, in chunks."""
        if not isinstance(key, str):
            return mi.merged_walk([self._walk(k, since, until, chunk) for k in key], chunk)
        return self._walk(key, since, until, chunk)

    def _walk(self, key: str, since: float | None, until: float | None,
              chunk: int) -> Iterator[list[tuple[str, float]]]:
        lo, hi = _score(since, "-inf"), _score(until, "+inf")
        seen_at, skip = lo, 0
        while True:
            raw = cast("list[tuple[Any, float]]", self.r.zrangebyscore(
                key, seen_at, hi, start=skip, num=chunk, withscores=True))
            rows = [(text(m), float(s)) for m, s in raw]
            if not rows:
                return
            yield rows
            if len(rows) < chunk:
                return
            last = rows[-1][1]
            same = sum(1 for _m, s in rows if s == last)
            if str(int(last)) == seen_at:
                skip += same
            else:
                seen_at, skip = str(int(last)), same

    # -- the backfill ------------------------------------------------------------------

    def reindex(self, *, lock_seconds: int = 3600, force: bool = False) -> int | None:
        """Write the status, version, event-name and search indexes of every run in ``P:idx:runs``
        and the event-name index of every stored event; None when another process holds
        the lock, or (unless ``force``) when it was done before. Returns the runs read."""
        keys = self.keys
        if not force and self.r.exists(keys.reindexed):
            return None
        token = str(time.time())
        if not self.r.set(keys.reindex_lock, token, nx=True, ex=lock_seconds):
            return None
        try:
            n = 0
            for chunk in self.walk(keys.runs_indexes()):
                n += len(chunk)
                self._reindex_runs(chunk)
            for chunk in self.walk(keys.events_index):
                self._reindex_events([m for m, _s in chunk])
            self.r.set(keys.reindexed, str(time.time()))
            return n
        finally:
            if text_or_none(self.r.get(keys.reindex_lock)) == token:
                self.r.delete(keys.reindex_lock)

    def _reindex_runs(self, chunk: Sequence[tuple[str, float]]) -> None:
        names = (ST, FK, CREATED, VERSION, VERSIONS, SEARCH, EVENT, OUTPUT, EVENTS, BATCH_KEY)
        pipe = self.r.pipeline(transaction=False)
        for rid, _s in chunk:
            pipe.hmget(self.keys.run(rid), names)
        rows = pipe.execute()
        pipe = self.r.pipeline(transaction=False)
        live: list[tuple[str, str, int]] = []
        for (rid, score), values in zip(chunk, rows, strict=True):
            f = dict(zip(names, (text_or_none(v) for v in values), strict=True))
            st, fk = f[ST], f[FK]
            if not st or not fk:
                continue
            pipe.sadd(self.keys.functions_index, fk)
            created = f[CREATED]
            ms = round(float(created) * 1000) if created else int(score)
            if st in TERMINAL:
                self._ended(pipe, rid, fk, st, ms)
            else:
                pipe.zadd(self.keys.status_index("active", fk), {rid: ms})
                live.append((rid, fk, ms))
            versions: set[str] = {v for v in [f[VERSION]] if v}
            versions |= {v for v in _json(f[VERSIONS]) or [] if isinstance(v, str) and v}
            for v in versions:
                pipe.zadd(self.keys.version_index(fk, v), {rid: ms})
                pipe.zadd(self.keys.version_index(None, v), {rid: ms})
            for name in self._event_names(rid, f):
                pipe.zadd(self.keys.run_event_name_index(fk, name), {rid: ms})
                pipe.zadd(self.keys.run_event_name_index(None, name), {rid: ms})
            for path in _json(f[SEARCH]) or []:
                root, _, rest = str(path).partition(".")
                doc = (_json(f[EVENT]) or {}).get("data") if root == "data" else (
                    _json(f[OUTPUT]) if root == "output" else None)
                vp = value_part(_at(doc, rest.split(".")))
                if vp is not None:
                    pipe.zadd(self.keys.search_index(fk, str(path), vp), {rid: ms})
        if len(pipe):
            pipe.execute()
        # A run read live may have ended since: its end moved it out of the active sets
        # unless it ended before the ZADD above; moving it again is exact either way.
        pipe = self.r.pipeline(transaction=False)
        for (rid, fk, ms), st in zip(live, self.store.runs_field([r for r, _f, _m in live], ST),
                                     strict=True):
            if st in TERMINAL:
                self._ended(pipe, rid, fk, st, ms)
        if len(pipe):
            pipe.execute()

    def _event_names(self, rid: str, f: Mapping[str, str | None]) -> set[str]:
        """The names of a run's events: its event's, a batch's every event's (an open
        batch's from its ``be:`` fields, read whole)."""
        events: list[Any] = [_json(f[EVENT])]
        events += _json(f[EVENTS]) or []
        if f[BATCH_KEY] and not f[EVENTS]:
            for k, raw in self.r.hgetall(self.keys.run(rid)).items():
                item = _json(text(raw)) if is_batch_event_field(text(k)) else None
                if isinstance(item, dict):
                    events.append(item.get("e"))
        return {e["name"] for e in events
                if isinstance(e, dict) and isinstance(e.get("name"), str) and e["name"]}

    def _ended(self, pipe: Any, rid: str, fk: str, st: str, ms: int) -> None:
        pipe.zrem(self.keys.status_index("active", fk), rid)
        pipe.zadd(self.keys.status_index(st, None), {rid: ms})
        pipe.zadd(self.keys.status_index(st, fk), {rid: ms})

    def _reindex_events(self, ids: Sequence[str]) -> None:
        pipe = self.r.pipeline(transaction=False)
        for eid in ids:
            pipe.get(self.keys.event(eid))
        by_name: dict[str, dict[str, int]] = {}
        for eid, raw in zip(ids, pipe.execute(), strict=True):
            ev = _json(text_or_none(raw))
            if isinstance(ev, dict) and isinstance(ev.get("ts"), (int, float)):
                by_name.setdefault(str(ev.get("name", "")), {})[eid] = int(ev["ts"])
        pipe = self.r.pipeline(transaction=False)
        for name, members in by_name.items():
            pipe.zadd(self.keys.event_name_index(name), members, nx=True)
        if len(pipe):
            pipe.execute()


def _json(raw: str | None) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _at(doc: Any, path: Sequence[str]) -> Any:
    for part in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(part)
    return doc


__all__ = ["ACTIVE_STATUSES", "Query", "RunIndex"]
