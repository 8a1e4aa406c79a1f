"""Numbers the dashboard draws: per-function throughput, failure rate and duration
percentiles over the last hour and day, cron's next and skipped ticks, the fleet's
overview, and run search by id or by a field of the triggering event.

Every count is exact: one ``ZCOUNT`` of a status index over the window (see
``fanout/_redis/run_index.py``), never a scan. The duration percentiles are drawn
from the newest ended runs of the window, at most ``DURATION_SAMPLE`` of them (the
figure says how many)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .._core.function import FunctionDef
from .._core.run_record import OUTPUT
from .._errors import ConfigError
from .._redis.history import History, RunSummary
from .._redis.insight import TimerBacklog, run_events, timer_backlog

HOUR = 3600.0
DAY = 86400.0
DURATION_SAMPLE = 2000


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of already sorted values (``None`` when empty)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(frozen=True)
class WindowStats:
    """Runs created in one window (the last hour or day)."""

    seconds: float
    runs: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    skipped: int = 0
    active: int = 0
    p50: float | None = None  # seconds, of the newest runs that ended (``sampled`` of them)
    p95: float | None = None
    sampled: int = 0

    @property
    def per_minute(self) -> float:
        return self.runs / (self.seconds / 60.0)

    @property
    def failure_rate(self) -> float | None:
        """Failed over ended (completed + failed); ``None`` before any run ended."""
        ended = self.completed + self.failed
        return None if ended == 0 else self.failed / ended


@dataclass(frozen=True)
class Bucket:
    start: float
    ok: int
    failed: int
    other: int


@dataclass(frozen=True)
class FunctionStats:
    fn_key: str
    hour: WindowStats
    day: WindowStats
    hourly: list[Bucket]  # the day in 24 buckets, oldest first
    last_run_at: float | None
    last_status: str | None
    next_ticks: list[datetime] = field(default_factory=list)
    complete: bool = True  # False on a Redis Cluster, which keeps no status index


def window(history: History, *, fn_key: str | None, now: float, seconds: float,
           sample: int = DURATION_SAMPLE) -> WindowStats:
    """The runs created in the ``seconds`` before ``now``: exact counts by status from
    the indexes; duration percentiles of the newest ``sample`` completed or failed."""
    since = now - seconds
    if not history.store.indexed:  # a Redis Cluster keeps no status index: no figures
        return WindowStats(seconds, history.count_runs(fn_key, since=since, until=now))
    counts = history.index.status_counts(fn_key, since=since, until=now, live=False)
    durations: list[float] = []
    for status in ("completed", "failed"):
        if counts.get(status):
            page = history.runs(fn_key=fn_key, status=status, since=since, until=now,
                                limit=min(sample, 1000))
            durations += [r.duration for r in page.items if r.duration is not None]
    durations.sort()
    total = sum(counts.values())
    return WindowStats(seconds, total, counts.get("completed", 0), counts.get("failed", 0),
                       counts.get("cancelled", 0), counts.get("skipped", 0),
                       counts.get("active", 0), percentile(durations, 50),
                       percentile(durations, 95), len(durations))


def hourly(history: History, *, fn_key: str | None, now: float,
           buckets: int = 24) -> list[Bucket]:
    """The last ``buckets`` hours, oldest first: runs that completed, failed, other
    (exact: three ``ZCOUNT`` per hour, in one round trip)."""
    top = math.floor(now / HOUR) * HOUR + HOUR  # the end of the current hour
    starts = [top - (buckets - i) * HOUR for i in range(buckets)]
    if not history.store.indexed:
        return [Bucket(float(start), 0, 0, 0) for start in starts]
    keys = history.keys
    every = keys.runs_indexes(fn_key)
    ok, bad = keys.status_index("completed", fn_key), keys.status_index("failed", fn_key)
    rows = history.index.count_many([
        (key, start, start + HOUR - 0.001) for start in starts for key in (every, ok, bad)])
    out = []
    for i, start in enumerate(starts):
        n, c, f = rows[3 * i: 3 * i + 3]
        out.append(Bucket(float(start), c, f, max(0, n - c - f)))
    return out


def next_ticks(fn: FunctionDef, *, now: float, count: int = 3) -> list[datetime]:
    """The next ``count`` cron ticks over all of the function's cron triggers."""
    at = datetime.fromtimestamp(now, timezone.utc)
    out: list[datetime] = []
    for trig in fn.cron_triggers:
        sched = trig.schedule
        t = at
        for _ in range(count):
            t = sched.next_after(t)
            out.append(t)
    return sorted(set(out))[:count]


def function_stats(
    history: History, fn: FunctionDef, *, now: float | None = None,
) -> FunctionStats:
    now = time.time() if now is None else now
    page = history.runs(fn_key=fn.key, limit=1)
    last = page.items[0] if page.items else None
    return FunctionStats(
        fn.key, window(history, fn_key=fn.key, now=now, seconds=HOUR),
        window(history, fn_key=fn.key, now=now, seconds=DAY),
        hourly(history, fn_key=fn.key, now=now), last.created_at if last else None,
        last.status if last else None, next_ticks(fn, now=now), history.store.indexed,
    )


def day_counts(history: History, *, fn_key: str | None,
               now: float | None = None) -> dict[str, int]:
    """Runs created in the last day by status, exact (``active`` groups the four live
    ones, each of which is counted too); statuses with no runs are left out."""
    now = time.time() if now is None else now
    if not history.store.indexed:
        return {}
    counts = history.status_counts(fn_key, since=now - DAY, until=now)
    return {k: v for k, v in counts.items() if v}


@dataclass(frozen=True)
class Overview:
    queues: dict[str, int | None]
    timers: TimerBacklog
    workers: list[str] | None  # None: the broker cannot broadcast a ping
    hour: WindowStats
    functions: int
    complete: bool
    now: float


def overview(history: History, *, queues: dict[str, int | None], workers: list[str] | None,
             functions: int, now: float | None = None) -> Overview:
    now = time.time() if now is None else now
    return Overview(queues, timer_backlog(history.store, now), workers,
                    window(history, fn_key=None, now=now, seconds=HOUR), functions,
                    history.store.indexed, now)


def _window_json(w: WindowStats) -> dict[str, Any]:
    return {"runs": w.runs, "completed": w.completed, "failed": w.failed,
            "cancelled": w.cancelled, "skipped": w.skipped, "active": w.active,
            "per_minute": round(w.per_minute, 4), "failure_rate": w.failure_rate,
            "p50_s": w.p50, "p95_s": w.p95, "durations_sampled": w.sampled}


def overview_json(ov: Overview, stats: Sequence[FunctionStats]) -> dict[str, Any]:
    """What ``/api/overview`` answers (durations in seconds, times as epoch seconds)."""
    return {
        "now": ov.now,
        "queues": ov.queues,
        "timers": {"total": ov.timers.total, "overdue": ov.timers.overdue,
                   "oldest_overdue_age_s": ov.timers.oldest_age(ov.now)},
        "workers": ov.workers,
        "last_hour": _window_json(ov.hour),
        "complete": ov.complete,
        "functions": [
            {"fn": s.fn_key, "last_hour": _window_json(s.hour), "last_day": _window_json(s.day),
             "hourly": [[b.start, b.ok, b.failed, b.other] for b in s.hourly],
             "last_run_at": s.last_run_at, "last_status": s.last_status,
             "next_ticks": [t.isoformat() for t in s.next_ticks], "complete": s.complete}
            for s in stats
        ],
    }


# -- search ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataQuery:
    """``path=value``: runs whose event's ``data`` (or, for ``output.<path>``, whose
    output) has ``value`` at ``path`` (dots separate keys; the value is compared as
    JSON when it parses, else as text). A path without a root is under ``data``."""

    path: tuple[str, ...]
    value: Any
    root: str = "data"

    @classmethod
    def parse(cls, text: str) -> DataQuery:
        key, sep, raw = text.partition("=")
        key = key.strip()
        root = "data"
        for prefix in ("data.", "output."):
            if key.startswith(prefix):
                root, key = prefix[:-1], key[len(prefix):]
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(
                f"cannot search for {text!r}: give a run id, an event id, or field=value "
                "(for example user.id=42, data.plan=\"pro\" or output.order_id=7)"
            )
        raw = raw.strip()
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        return cls(tuple(key.split(".")), value, root)

    @property
    def attribute(self) -> str:
        """The path as a search attribute names it (``data.user_id``)."""
        return ".".join((self.root, *self.path))

    def matches(self, event: dict[str, Any] | None) -> bool:
        return self.matches_value((event or {}).get("data"))

    def matches_value(self, node: Any) -> bool:
        for part in self.path:
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        if node == self.value:
            return True
        return isinstance(self.value, str) and not isinstance(node, str) and json.dumps(node) == self.value


@dataclass(frozen=True)
class SearchPage:
    """What a search found: ``looked`` runs looked at by this call, of ``total`` in
    the listing searched; ``next_cursor`` goes on from where it stopped (None: it
    looked at every run). ``exact`` says a search attribute's index answered."""

    items: list[RunSummary]
    next_cursor: str | None
    looked: int
    total: int
    exact: bool = False

    @property
    def complete(self) -> bool:
        return self.next_cursor is None


def search_runs(
    history: History, query: DataQuery, *, fn_key: str | None, limit: int = 50,
    budget: int = 2000, cursor: str | None = None, indexed: bool = False,
) -> SearchPage:
    """Runs (newest first) whose event data or output matches ``query``.

    With ``indexed`` (the path is a declared search attribute of the function, or of
    every function searched) the attribute's index answers exactly, a page at a time.
    Otherwise the runs are read newest first from ``cursor`` until ``limit`` matched
    or ``budget`` runs were looked at; the page then says how far it looked and its
    cursor goes on from there."""
    if indexed:
        page = history.runs(fn_key=fn_key, search={query.attribute: query.value},
                            limit=limit, cursor=cursor)
        return SearchPage(page.items, page.next_cursor, page.scanned, page.total or 0, True)
    found: list[RunSummary] = []
    looked = 0
    nxt = cursor
    total = history.count_runs(fn_key)
    while looked < budget and len(found) < limit:
        page = history.runs(fn_key=fn_key, limit=min(200, budget - looked), cursor=nxt)
        looked += page.scanned
        ids = [r.run_id for r in page.items]
        docs: list[Any]
        if query.root == "output":
            docs = [_json(raw) for raw in history.store.runs_field(ids, OUTPUT)]
        else:
            docs = [(ev or {}).get("data") for ev in run_events(history.store, ids)]
        found += [r for r, doc in zip(page.items, docs, strict=True) if query.matches_value(doc)]
        nxt = page.next_cursor
        if nxt is None:
            break
    return SearchPage(found, nxt, looked, total, False)


def _json(raw: str | None) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None
