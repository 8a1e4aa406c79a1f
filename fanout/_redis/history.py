"""Run history: exact, paged queries over the store's sorted-set indexes, and pruning.

Every listing reads one sorted set (``run_index.py`` says which set answers which
filter, and builds the union or intersection a combined filter needs) with
``ZREVRANGEBYSCORE ... LIMIT`` (O(log N + page)), then fetches only the summary
fields of the runs on the page (one ``HMGET`` each, in one pipeline); its total is
one ``ZCOUNT``. On a Redis Cluster the list of all runs (or of a function's) is 16
shards, read merged as one set, the same cursors included (``merged_index.py``). Nothing is scanned and nothing stops early: the first page of
``status="failed"`` is full however old the failed runs are, at any number of runs.

Cursors are opaque strings (``"<score>:<skip>"``): the score of the last entry on
the page and how many entries with that score were already seen, so paging is exact
even when several runs were created in the same millisecond. A page's
``prev_cursor`` (``"^<score>:<skip>"``) pages back: the runs just newer than its
first entry, newest first.

Retention: run hashes and events expire through key TTLs (``Fanout(retention=)``,
7 days by default); :meth:`History.prune` removes the entries they leave behind in
every index. Each worker's periodic thread runs it about once an hour (``install.py``).
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .._core.event import quoted
from .._core.records import TERMINAL
from .._core.run_record import (
    APP,
    ATTEMPT,
    CREATED,
    ENDED,
    ERROR,
    EV,
    FK,
    FN,
    FROM_STEP,
    PARENT,
    REPLAY_OF,
    ST,
    STARTED,
    VERSION,
    VERSION_WARNINGS,
    VERSIONS,
)
from .._core.versions import crossed_deploy, versions_of, warnings_of
from .._errors import ConfigError
from . import merged_index as mi
from .merged_index import Index
from .replies import text, text_or_none, texts
from .run_index import ACTIVE_STATUSES, Query, RunIndex
from .store import Store

T = TypeVar("T")

MAX_LIMIT = 1000
RUN_STATUSES = ("queued", "running", "sleeping", "waiting", *sorted(TERMINAL))
_SUMMARY_FIELDS = (ST, FN, APP, FK, CREATED, STARTED, ENDED, EV, PARENT, ERROR, ATTEMPT,
                   REPLAY_OF, FROM_STEP, VERSION, VERSIONS, VERSION_WARNINGS)
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*(?:ago)?\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(text: str, *, now: float | None = None) -> float:
    """Epoch seconds from ``'15m'``/``'2h'``/``'7d'`` (ago), ``'now'``, epoch seconds or
    ISO 8601 (a date or date-time; without an offset it is taken as UTC)."""
    now = time.time() if now is None else now
    raw = text.strip()
    if raw.lower() == "now":
        return now
    m = _RELATIVE.match(raw)
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2).lower()]
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        parsed = _dt.datetime.fromisoformat(raw.replace("Z", "+00:00").replace(" ", "T", 1))
    except ValueError:
        raise ConfigError(
            f"invalid time {quoted(text)}: use an age like 15m, 2h or 7d, epoch seconds, "
            "or ISO 8601 like 2024-05-01T12:00:00Z"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_dt.timezone.utc)
    return parsed.timestamp()


def iso(ts: float | None) -> str:
    """``2024-05-01 12:00:03.123Z`` (UTC), or ``''``."""
    if ts is None:
        return ""
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def _fnum(value: str | None) -> float | None:
    if value is None or value in ("", "0"):
        return None
    try:
        return float(value)
    except ValueError:
        return None


@dataclass(frozen=True)
class RunSummary:
    """What a run listing shows: no step payloads."""

    run_id: str
    fn_key: str
    fn_id: str
    app_id: str
    status: str
    created_at: float | None
    started_at: float | None
    ended_at: float | None
    event_ids: list[str]
    parent_run_id: str | None = None
    error: dict[str, Any] | None = None
    attempt: int = 0
    replay_of: str | None = None
    from_step: str | None = None
    #: The version the run was created on, the versions its passes ran on, whether
    #: they differ, and how many versioning warnings it recorded.
    version: str | None = None
    versions: tuple[str, ...] = ()
    crossed_deploy: bool = False
    warning_count: int = 0

    @property
    def duration(self) -> float | None:
        start = self.started_at or self.created_at
        if start is None or self.ended_at is None:
            return None
        return max(0.0, self.ended_at - start)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "fn_key": self.fn_key, "fn_id": self.fn_id,
            "app_id": self.app_id, "status": self.status, "created_at": self.created_at,
            "started_at": self.started_at, "ended_at": self.ended_at,
            "event_ids": self.event_ids, "parent_run_id": self.parent_run_id,
            "error": self.error, "attempt": self.attempt, "replay_of": self.replay_of,
            "from_step": self.from_step, "duration": self.duration,
            "version": self.version, "versions": list(self.versions),
            "crossed_deploy": self.crossed_deploy, "warning_count": self.warning_count,
        }

    @classmethod
    def from_fields(cls, run_id: str, f: dict[str, str | None]) -> RunSummary:
        err_raw = f.get(ERROR)
        try:
            err = json.loads(err_raw) if err_raw else None
        except ValueError:
            err = {"type": "Error", "message": err_raw}
        status = f.get(ST) or ""
        app, fn = f.get(APP) or "", f.get(FN) or ""
        vf = {k: v for k, v in f.items() if v is not None}
        return cls(
            run_id=run_id,
            fn_key=f.get(FK) or (f"{app}:{fn}" if app else fn),
            fn_id=fn,
            app_id=app,
            status=status,
            created_at=_fnum(f.get(CREATED)),
            started_at=_fnum(f.get(STARTED)),
            ended_at=_fnum(f.get(ENDED)) if status in TERMINAL else None,
            event_ids=json.loads(f.get(EV) or "[]"),
            parent_run_id=f.get(PARENT) or None,
            error=err if status in ("failed", "cancelled") or err else None,
            attempt=int(f.get(ATTEMPT) or 0),
            replay_of=f.get(REPLAY_OF) or None,
            from_step=f.get(FROM_STEP) or None,
            version=f.get(VERSION) or None,
            versions=tuple(versions_of(vf)),
            crossed_deploy=crossed_deploy(vf),
            warning_count=len(warnings_of(vf)),
        )


@dataclass(frozen=True)
class EventSummary:
    event_id: str
    name: str
    ts: float | None
    data: Any
    user: Any = None
    run_count: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "name": self.name, "ts": self.ts, "data": self.data,
                "user": self.user, "run_count": self.run_count}


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing, newest first.

    ``next_cursor`` continues after the last entry (None at the end); ``prev_cursor``
    pages back to the entries just newer than the first one (None on the first page);
    ``total`` is how many entries the whole listing has (None where not counted);
    ``scanned`` is how many index entries were read; ``complete`` is False only for a
    search that stopped looking before the end (its cursor goes on from there).
    """

    items: list[T]
    next_cursor: str | None
    scanned: int
    complete: bool = True
    total: int | None = None
    prev_cursor: str | None = None


@dataclass
class PruneReport:
    runs_removed: int = 0
    events_removed: int = 0
    keys_checked: int = 0
    indexes: list[str] = field(default_factory=list)


def _parse_cursor(cursor: str | None, until_ms: int | None) -> tuple[str, int]:
    if not cursor:
        return ("+inf" if until_ms is None else str(until_ms)), 0
    try:
        score, skip = cursor.split(":")
        float(score)
        return score, int(skip)
    except ValueError:
        raise ConfigError(f"invalid cursor {quoted(cursor)}") from None


def _ms(ts: float | None) -> int | None:
    return None if ts is None else round(ts * 1000)


class History:
    """Queries over one store's indexes (see the module docstring)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.r = store.r
        self.keys = store.keys
        self.index = RunIndex(store)

    # -- reading an index ----------------------------------------------------------------

    def _newer(self, key: Index, mark: str, *, until: float | None,
               limit: int) -> tuple[list[str], list[str], bool]:
        """The ``limit`` entries just newer than ``mark``, newest first, their marks,
        and whether there are newer ones still."""
        score, skip = _parse_cursor(mark, None)
        hi = "+inf" if until is None else str(_ms(until))
        ties = [m for m, _s in mi.rev(self.r, key, score, score, 0, max(0, skip - 1))]
        tie_marks = [f"{score}:{i + 1}" for i in range(len(ties))]
        need = limit - len(ties)
        above: list[tuple[str, float]] = []
        if need > 0:
            above = mi.fwd(self.r, key, f"({score}", hi, 0, need + 1)
        more = len(above) > need if need > 0 else (
            len(ties) > limit or mi.count(self.r, key, f"({score}", hi) > 0)
        above = above[:max(0, need)]
        members, marks = list(ties), list(tie_marks)
        if len(members) > limit:
            members, marks = members[-limit:], marks[-limit:]
        if above:
            # Each entry's mark counts the entries of its score that come first, newest
            # first; only the highest score may have entries beyond those read.
            top = above[-1][1]
            top_total = mi.count(self.r, key, str(int(top)), str(int(top)))
            counts: dict[float, int] = {}
            for _m, sc in above:
                counts[sc] = counts.get(sc, 0) + 1
            seen: dict[float, int] = {}
            up_marks = []
            for _m, sc in above:
                j = seen.get(sc, 0)
                seen[sc] = j + 1
                total = top_total if sc == top else counts[sc]
                up_marks.append(f"{int(sc)}:{total - j}")
            members = [m for m, _sc in reversed(above)] + members
            marks = list(reversed(up_marks)) + marks
        return members, marks, more

    def _page(
        self, key: Index, *, since: float | None, until: float | None, cursor: str | None,
        limit: int, load: Callable[[list[str]], Sequence[T | None]], count: bool = True,
    ) -> Page[T]:
        """One page of an index, newest first: ``load`` turns members into entries
        (None for one whose hash is gone: left out, as pruning will drop it). ``key``
        may be the shards of one index (merged: ``merged_index.py``)."""
        if cursor and cursor.startswith("^"):
            total = self.index.count(key, since=since, until=until) if count else None
            members, marks, more = self._newer(key, cursor[1:], until=until, limit=limit)
            items = [e for e in load(members) if e is not None]
            return Page(items, marks[-1] if marks else cursor[1:], len(members), True, total,
                        ("^" + marks[0]) if more and marks else None)
        # The page and its total in one round trip, then the entries in a second.
        top, skip = _parse_cursor(cursor, _ms(until))
        lo = "-inf" if since is None else str(_ms(since))
        pipe = self.r.pipeline(transaction=False)
        counted = mi.queue_count(pipe, key, lo, "+inf" if until is None else str(_ms(until))) \
            if count else 0
        mi.queue_rev(pipe, key, top, lo, skip, limit + 1)
        res = pipe.execute()
        total = mi.total(res[:counted]) if count else None
        rows = mi.take_rev(res[counted:], key, skip, limit + 1)
        members, marks = [], []
        for m, sc in rows:
            sc_text = str(int(sc))
            if sc_text == top:
                skip += 1
            else:
                top, skip = sc_text, 1
            members.append(m)
            marks.append(f"{top}:{skip}")
        has_more = len(members) > limit
        members, marks = members[:limit], marks[:limit]
        items = [e for e in load(members) if e is not None]
        prev = None
        if cursor and marks:
            first, first_skip = _parse_cursor(marks[0], None)
            hi = "+inf" if until is None else str(_ms(until))
            if first_skip > 1 or mi.count(self.r, key, f"({first}", hi) > 0:
                prev = "^" + marks[0]
        return Page(items, marks[-1] if has_more else None, len(members), True, total, prev)

    def _summaries(self, run_ids: Sequence[str]) -> list[RunSummary | None]:
        if not run_ids:
            return []
        pipe = self.r.pipeline(transaction=False)
        for rid in run_ids:
            pipe.hmget(self.keys.run(rid), _SUMMARY_FIELDS)
        out: list[RunSummary | None] = []
        for rid, values in zip(run_ids, pipe.execute(), strict=True):
            f = {k: text_or_none(v) for k, v in zip(_SUMMARY_FIELDS, values, strict=True)}
            out.append(RunSummary.from_fields(rid, f) if f.get(ST) else None)
        return out

    # -- runs ----------------------------------------------------------------------

    def runs(
        self,
        *,
        fn_key: str | None = None,
        status: str | Iterable[str] | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 50,
        cursor: str | None = None,
        version: str | None = None,
        search: Mapping[str, Any] | None = None,
        event_name: str | None = None,
    ) -> Page[RunSummary]:
        """Runs newest first (by creation), of one function or of all, exactly: with
        a status (or statuses, or ``active``), a version (created on it or with a pass
        that ran on it), the name of the event that started them (a batch run: of any
        of its events), declared search attributes (``{"data.user_id": 42}``, every
        one must match) and a creation window. ``total`` counts them all."""
        if not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise ConfigError(f"limit must be an integer from 1 to {MAX_LIMIT}")
        key = self.index.key_for(self.query(fn_key, status, version, search, event_name),
                                 since=since, until=until)
        return self._page(key, since=since, until=until, cursor=cursor, limit=limit,
                          load=self._summaries)

    @staticmethod
    def query(fn_key: str | None = None, status: str | Iterable[str] | None = None,
              version: str | None = None, search: Mapping[str, Any] | None = None,
              event_name: str | None = None) -> Query:
        if event_name is not None and not isinstance(event_name, str):
            raise ConfigError(f"event_name must be an event's name (a string), not "
                              f"{type(event_name).__name__}")
        terms = tuple(sorted((search or {}).items()))
        for path, _v in terms:
            if not path.startswith(("data.", "output.")):
                raise ConfigError(f"search attribute {path!r} must start with 'data.' or "
                                  "'output.'")
        return Query(fn_key or None, _statuses(status), version or None, terms,
                     event_name or None)

    def count_runs(
        self, fn_key: str | None = None, *, status: str | Iterable[str] | None = None,
        since: float | None = None, until: float | None = None, version: str | None = None,
        search: Mapping[str, Any] | None = None, event_name: str | None = None,
    ) -> int:
        """How many runs a listing with the same filters has (exact, from the indexes)."""
        key = self.index.key_for(self.query(fn_key, status, version, search, event_name),
                                 since=since, until=until)
        return self.index.count(key, since=since, until=until)

    def status_counts(self, fn_key: str | None = None, *, since: float | None = None,
                      until: float | None = None) -> dict[str, int]:
        """Runs created in the window by status (``active`` and each live status
        included), from the indexes."""
        return self.index.status_counts(fn_key, since=since, until=until)

    def runs_of_event(self, event_id: str) -> list[RunSummary]:
        """The runs an event started, newest first (one SMEMBERS, then one HMGET per run)."""
        members = sorted(texts(self.r.smembers(self.keys.event_runs(event_id))))
        found = [s for s in self._summaries(members) if s is not None]
        return sorted(found, key=lambda s: (s.created_at or 0.0, s.run_id), reverse=True)

    def started_by(self, run_ids: Sequence[str], event_name: str) -> list[bool]:
        """Whether each run was started by an event named ``event_name`` (from the
        event-name index: one ZSCORE each)."""
        keys = mi.parts(self.index.key_for(Query(event_name=event_name)))
        pipe = self.r.pipeline(transaction=False)
        for rid in run_ids:
            for key in keys:
                pipe.zscore(key, rid)
        found = pipe.execute() if run_ids else []
        n = len(keys)
        return [any(v is not None for v in found[i * n:(i + 1) * n])
                for i in range(len(run_ids))]

    def summaries(self, run_ids: Sequence[str]) -> list[RunSummary]:
        """The runs with these ids that exist, in the order given."""
        return [s for s in self._summaries(run_ids) if s is not None]

    def runs_resumed_by(self, event_id: str) -> list[RunSummary]:
        """The runs whose ``wait_for_event`` the event ended, newest first."""
        found = [s for s in self._summaries(self.store.waits.resumed_by(event_id)) if s is not None]
        return sorted(found, key=lambda s: (s.created_at or 0.0, s.run_id), reverse=True)

    # -- events --------------------------------------------------------------------

    def events(
        self,
        *,
        name: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 50,
        cursor: str | None = None,
        after_exclusive: bool = False,
        count: bool = True,
    ) -> Page[EventSummary]:
        """Events newest first, of one name (the name's index, kept over the retention)
        or of all; ``after_exclusive`` makes ``since`` strict (live tails)."""
        if not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise ConfigError(f"limit must be an integer from 1 to {MAX_LIMIT}")
        key = self.keys.event_name_index(name) if name else self.keys.events_index
        lo = None if since is None else (since + 0.001 if after_exclusive else since)
        return self._page(key, since=lo, until=until, cursor=cursor, limit=limit,
                          load=self._event_summaries, count=count)

    def event(self, event_id: str) -> EventSummary | None:
        (found,) = self._event_summaries([event_id])
        return found

    def _event_summaries(self, ids: Sequence[str]) -> list[EventSummary | None]:
        if not ids:
            return []
        pipe = self.r.pipeline(transaction=False)
        for eid in ids:
            pipe.get(self.store.event_key(eid))
            pipe.scard(f"{self.store.event_key(eid)}:runs")
        res = pipe.execute()
        out: list[EventSummary | None] = []
        for i, eid in enumerate(ids):
            raw, count = res[2 * i], res[2 * i + 1]
            if not raw:
                out.append(None)
                continue
            ev = json.loads(raw)
            ts = ev.get("ts")
            out.append(EventSummary(
                event_id=eid, name=str(ev.get("name", "")),
                ts=ts / 1000 if isinstance(ts, (int, float)) else None,
                data=ev.get("data"), user=ev.get("user"), run_count=int(count or 0),
            ))
        return out

    # -- pruning -------------------------------------------------------------------

    def _keys(self, pattern: str) -> list[str]:
        return sorted(texts(self.r.scan_iter(match=pattern, count=500)))

    def prune(self, *, now: float | None = None, batch: int = 500) -> PruneReport:
        """Drop index entries older than the retention whose run or event is gone,
        from every index (all runs, per function, status, version, event name, search attribute,
        the ended feed).

        Events expire exactly ``retention`` after they were stored, and a run's hash
        ``retention`` after it ended, so the events' indexes and the ended feed are
        trimmed by score.  A run's hash expires ``retention`` after it
        ended, so an old entry is removed only once its hash no longer exists (a
        run sleeping for longer than the retention keeps its entries).
        """
        now = time.time() if now is None else now
        horizon = int((now - self.store.retention) * 1000)
        rep = PruneReport()
        rep.events_removed += int(self.r.zremrangebyscore(self.keys.events_index, "-inf", horizon))
        for key in self._keys(self.keys.event_name_index_pattern()):
            self.r.zremrangebyscore(key, "-inf", horizon)
        # A run's hash expires ``retention`` after it ended, so the ended feed (scored
        # by the end) is trimmed by score, like the events.
        rep.runs_removed += int(self.r.zremrangebyscore(self.keys.ended_index, "-inf", horizon))
        run_keys = [self.keys.runs_index, *self.keys.runs_index_shards,
                    *self._keys(self.keys.fn_index_pattern())]
        for pattern in self.keys.index_patterns():
            run_keys += self._keys(pattern)
        for key in run_keys:
            rep.indexes.append(key)
            offset = 0
            while True:
                old = [text(m) for m in self.r.zrangebyscore(key, "-inf", horizon,
                                                           start=offset, num=batch)]
                if not old:
                    break
                pipe = self.r.pipeline(transaction=False)
                for rid in old:
                    pipe.exists(self.keys.run(rid))
                alive = pipe.execute()
                rep.keys_checked += len(old)
                gone = [rid for rid, ok in zip(old, alive, strict=True) if not ok]
                if gone:
                    self.r.zrem(key, *gone)
                    rep.runs_removed += len(gone)
                offset += len(old) - len(gone)
                if len(old) < batch:
                    break
        return rep

    def reindex(self, *, force: bool = False) -> int | None:
        """Index the runs created before the status, version, event-name and search indexes
        existed (once; guarded by a lock): see :meth:`RunIndex.reindex`."""
        return self.index.reindex(force=force)


def statuses(status: str | Iterable[str] | None) -> frozenset[str] | None:
    """The statuses a filter names (``active`` included); None for no filter."""
    return _statuses(status)


def _statuses(status: str | Iterable[str] | None) -> frozenset[str] | None:
    if status is None or status == "":
        return None
    names = [s.strip() for s in status.split(",")] if isinstance(status, str) else list(status)
    out: set[str] = set()
    for name in names:
        if name == "active":
            out |= ACTIVE_STATUSES
        elif name in RUN_STATUSES:
            out.add(name)
        elif name:
            raise ConfigError(
                f"unknown run status {quoted(name)}: use one of {', '.join(RUN_STATUSES)} or 'active'"
            )
    return frozenset(out) or None



__all__ = [
    "EventSummary", "History", "Page", "PruneReport", "RunSummary",
    "iso", "parse_time",
]
