"""Per-function series over time, for the dashboard's charts: runs ended (throughput),
runs failed, the p95 run duration and the backlog (runs in flight), per bucket of the
last hour, day or week.

Read from the metrics rollups (``fanout/_redis/rollups.py``): exact counts from the
store's counters, and a p95 estimated from the run duration histogram's buckets
(linear within the bucket that holds it, as Prometheus's ``histogram_quantile``).

The backlog at the end of a bucket is the runs started minus the runs ended up to
then: exact at the last roll (the cumulative counters the roll kept), and walked back
bucket by bucket by each bucket's started minus ended. Buckets after the last roll
have no backlog yet (None).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .._redis.observations import DURATION_BUCKETS
from .._redis.rollups import rollups_of
from .._redis.store import Store

#: range -> (rollup tier, buckets, label)
RANGES: dict[str, tuple[str, int, str]] = {
    "hour": ("m", 60, "last hour, per minute"),
    "day": ("q", 96, "last day, per 15 minutes"),
    "week": ("h", 168, "last week, per hour"),
}
_BOUNDS = [float(b) for b in DURATION_BUCKETS]


def quantile(buckets: dict[str, int], q: float) -> float | None:
    """The ``q`` quantile (0..1) of a histogram given as per-bucket counts (by ``le``)."""
    total = sum(buckets.values())
    if total <= 0:
        return None
    rank = q * total
    cum = 0
    lower = 0.0
    for le, bound in zip(DURATION_BUCKETS, _BOUNDS, strict=True):
        n = buckets.get(le, 0)
        if n and cum + n >= rank:
            return lower + (bound - lower) * ((rank - cum) / n)
        cum += n
        lower = bound
    return _BOUNDS[-1]  # in the +Inf bucket: at least the largest bound


@dataclass
class Point:
    start: int
    started: int = 0
    completed: int = 0
    failed: int = 0
    other: int = 0  # cancelled and skipped
    step_failures: int = 0
    p95: float | None = None
    #: Runs in flight (started, not ended) at the end of the bucket; None when the
    #: bucket ends after the last roll.
    backlog: int | None = None

    @property
    def ended(self) -> int:
        return self.completed + self.failed + self.other


@dataclass
class FnSeries:
    fn_key: str
    points: list[Point] = field(default_factory=list)

    @property
    def ended(self) -> int:
        return sum(p.ended for p in self.points)

    @property
    def failed(self) -> int:
        return sum(p.failed for p in self.points)

    @property
    def backlog_now(self) -> int | None:
        """The newest known backlog (at the last roll)."""
        values = [p.backlog for p in self.points if p.backlog is not None]
        return values[-1] if values else None

    @property
    def peak_backlog(self) -> int:
        return max((p.backlog for p in self.points if p.backlog is not None), default=0)

    @property
    def peak_p95(self) -> float | None:
        values = [p.p95 for p in self.points if p.p95 is not None]
        return max(values) if values else None


@dataclass
class Charts:
    range: str
    width: int  # seconds per bucket
    label: str
    series: dict[str, FnSeries]
    last_roll: float | None  # when the newest minute was rolled (None: never)
    enabled: bool  # False when the store does not count (Redis Cluster)


def read_charts(store: Store, range_name: str, fn_keys: list[str],
                now: float | None = None) -> Charts:
    if range_name not in RANGES:
        raise ValueError(f"unknown range {range_name!r}: use hour, day or week")
    tier, count, label = RANGES[range_name]
    from .._redis.rollups import TIERS

    width = TIERS[tier][0]
    roll = rollups_of(store)
    if roll is None:
        return Charts(range_name, width, label, {k: FnSeries(k) for k in fn_keys}, None, False)
    now = time.time() if now is None else now
    buckets = roll.read(tier, count, now)
    out = {k: FnSeries(k, [Point(s) for s, _ in buckets]) for k in fn_keys}
    for i, (_start, fields) in enumerate(buckets):
        hists: dict[str, dict[str, int]] = {}
        for name, value in fields.items():
            kind, _, rest = name.partition("|")
            metric, _, labels = rest.partition("|")
            parts = labels.split("|")
            if len(parts) < 2:
                continue
            fk = f"{parts[0]}:{parts[1]}"
            s = out.get(fk)
            if s is None:
                continue
            p = s.points[i]
            if kind == "c" and metric == "runs_started":
                p.started += value
            elif kind == "c" and metric == "runs_ended" and len(parts) == 3:
                if parts[2] == "completed":
                    p.completed += value
                elif parts[2] == "failed":
                    p.failed += value
                else:
                    p.other += value
            elif kind == "c" and metric == "step_failures":
                p.step_failures += value
            elif kind == "h" and metric == "run_duration" and len(parts) == 3:
                hists.setdefault(fk, {})[parts[2]] = value
        for fk, hist in hists.items():
            out[fk].points[i].p95 = quantile(hist, 0.95)
    last_at, last = roll.last_counts()
    if last_at is not None:
        _backlogs(out, last, last_at + 60)
    return Charts(range_name, width, label, out, roll.last_roll(), True)


def in_flight(counts: dict[str, int]) -> dict[str, int]:
    """Runs started minus runs ended per function key, from cumulative counters."""
    out: dict[str, int] = {}
    for name, value in counts.items():
        kind, _, rest = name.partition("|")
        metric, _, labels = rest.partition("|")
        parts = labels.split("|")
        if kind != "c" or len(parts) < 2:
            continue
        fk = f"{parts[0]}:{parts[1]}"
        if metric == "runs_started":
            out[fk] = out.get(fk, 0) + value
        elif metric == "runs_ended":
            out[fk] = out.get(fk, 0) - value
    return out


def _backlogs(series: dict[str, FnSeries], last: dict[str, int], rolled_until: float) -> None:
    """Fill each point's backlog, walking back from the last roll (``rolled_until``:
    the end of the minute rolled last)."""
    flight = in_flight(last)
    for fk, s in series.items():
        value = flight.get(fk, 0)
        for p in reversed(s.points):
            if p.start >= rolled_until:
                continue  # not rolled yet
            p.backlog = max(0, value)
            value -= p.started - p.ended


__all__ = ["RANGES", "Charts", "FnSeries", "Point", "in_flight", "quantile", "read_charts"]
