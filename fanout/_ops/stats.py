"""Numbers the dashboard draws: per-function throughput, failure rate and duration
percentiles over the last hour and day, cron's next and skipped ticks, the fleet's
overview, and run search by id or by a field of the triggering event.

Everything is read from the history indexes, newest first, with a bound on how many
runs one figure may scan (``max_scan``); a figure drawn from a partial scan says so."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .._core.function import FunctionDef
from .._errors import ConfigError
from .._redis.history import ACTIVE_STATUSES, History, RunSummary
from .._redis.insight import TimerBacklog, run_events, timer_backlog

HOUR = 3600.0
DAY = 86400.0
DEFAULT_MAX_SCAN = 5000


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
    p50: float | None = None  # seconds, of runs that ended
    p95: float | None = None

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
    complete: bool = True  # False when the day had more runs than max_scan


def recent_runs(
    history: History, *, fn_key: str | None, since: float, max_scan: int = DEFAULT_MAX_SCAN
) -> tuple[list[RunSummary], bool]:
    """Runs created since ``since``, newest first, and whether the scan was complete."""
    out: list[RunSummary] = []
    cursor: str | None = None
    while True:
        page = history.runs(fn_key=fn_key, since=since, limit=1000, cursor=cursor,
                            max_scan=max_scan)
        out.extend(page.items)
        if page.next_cursor is None:
            return out, page.complete
        if len(out) >= max_scan:
            return out, False
        cursor = page.next_cursor


def window(runs: Sequence[RunSummary], *, now: float, seconds: float) -> WindowStats:
    start = now - seconds
    counts = {"completed": 0, "failed": 0, "cancelled": 0, "skipped": 0, "active": 0}
    durations: list[float] = []
    n = 0
    for r in runs:
        if (r.created_at or 0.0) < start:
            continue
        n += 1
        if r.status in ACTIVE_STATUSES:
            counts["active"] += 1
        elif r.status in counts:
            counts[r.status] += 1
        if r.status in ("completed", "failed") and r.duration is not None:
            durations.append(r.duration)
    durations.sort()
    return WindowStats(seconds, n, counts["completed"], counts["failed"], counts["cancelled"],
                       counts["skipped"], counts["active"], percentile(durations, 50),
                       percentile(durations, 95))


def hourly(runs: Sequence[RunSummary], *, now: float, buckets: int = 24) -> list[Bucket]:
    """The last ``buckets`` hours, oldest first: runs that completed, failed, other."""
    top = math.floor(now / HOUR) * HOUR + HOUR  # the end of the current hour
    rows = [[top - (buckets - i) * HOUR, 0, 0, 0] for i in range(buckets)]
    for r in runs:
        t = r.created_at or 0.0
        i = int((t - rows[0][0]) // HOUR)
        if 0 <= i < buckets:
            col = 1 if r.status == "completed" else 2 if r.status == "failed" else 3
            rows[i][col] += 1
    return [Bucket(float(a), int(b), int(c), int(d)) for a, b, c, d in rows]


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
    max_scan: int = DEFAULT_MAX_SCAN,
) -> FunctionStats:
    now = time.time() if now is None else now
    runs, complete = recent_runs(history, fn_key=fn.key, since=now - DAY, max_scan=max_scan)
    last = runs[0] if runs else None
    if last is None:  # nothing in the day: the newest run ever, if any
        page = history.runs(fn_key=fn.key, limit=1)
        last = page.items[0] if page.items else None
    return FunctionStats(
        fn.key, window(runs, now=now, seconds=HOUR), window(runs, now=now, seconds=DAY),
        hourly(runs, now=now), last.created_at if last else None, last.status if last else None,
        next_ticks(fn, now=now), complete,
    )


def day_counts(history: History, *, fn_key: str | None, now: float | None = None,
               max_scan: int = DEFAULT_MAX_SCAN) -> dict[str, int]:
    """Runs created in the last day by status (``active`` groups the four live ones)."""
    now = time.time() if now is None else now
    runs, _complete = recent_runs(history, fn_key=fn_key, since=now - DAY, max_scan=max_scan)
    out: dict[str, int] = {}
    for r in runs:
        out[r.status] = out.get(r.status, 0) + 1
    return out


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
             functions: int, now: float | None = None,
             max_scan: int = DEFAULT_MAX_SCAN) -> Overview:
    now = time.time() if now is None else now
    runs, complete = recent_runs(history, fn_key=None, since=now - HOUR, max_scan=max_scan)
    return Overview(queues, timer_backlog(history.store, now), workers,
                    window(runs, now=now, seconds=HOUR), functions, complete, now)


def _window_json(w: WindowStats) -> dict[str, Any]:
    return {"runs": w.runs, "completed": w.completed, "failed": w.failed,
            "cancelled": w.cancelled, "skipped": w.skipped, "active": w.active,
            "per_minute": round(w.per_minute, 4), "failure_rate": w.failure_rate,
            "p50_s": w.p50, "p95_s": w.p95}


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
    """``path=value``: runs whose event's ``data`` has ``value`` at ``path`` (dots
    separate keys; the value is compared as JSON when it parses, else as text)."""

    path: tuple[str, ...]
    value: Any

    @classmethod
    def parse(cls, text: str) -> DataQuery:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if key.startswith("data."):
            key = key[len("data."):]
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(
                f"cannot search for {text!r}: give a run id, an event id, or field=value "
                "(for example user.id=42 or plan=\"pro\")"
            )
        raw = raw.strip()
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        return cls(tuple(key.split(".")), value)

    def matches(self, event: dict[str, Any] | None) -> bool:
        node: Any = (event or {}).get("data")
        for part in self.path:
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        if node == self.value:
            return True
        return isinstance(self.value, str) and not isinstance(node, str) and json.dumps(node) == self.value


def search_runs(
    history: History, query: DataQuery, *, fn_key: str | None, limit: int = 50,
    max_scan: int = 2000,
) -> tuple[list[RunSummary], int, bool]:
    """Runs (newest first) whose triggering event matches; also how many runs were
    scanned and whether the scan reached the end of the index."""
    found: list[RunSummary] = []
    scanned = 0
    for chunk in _chunks(history, fn_key=fn_key, max_scan=max_scan):
        scanned += len(chunk)
        for run, event in zip(chunk, run_events(history.store, [r.run_id for r in chunk]),
                              strict=True):
            if query.matches(event):
                found.append(run)
                if len(found) >= limit:
                    return found, scanned, False
        if scanned >= max_scan:
            return found, scanned, False
    return found, scanned, True


def _chunks(history: History, *, fn_key: str | None, max_scan: int) -> Iterator[list[RunSummary]]:
    cursor: str | None = None
    while True:
        page = history.runs(fn_key=fn_key, limit=200, cursor=cursor, max_scan=max_scan)
        if page.items:
            yield page.items
        if page.next_cursor is None:
            return
        cursor = page.next_cursor
