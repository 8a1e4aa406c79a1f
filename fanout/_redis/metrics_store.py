"""Fleet-wide counts kept in the store, and reading them back for a scrape.

Workers run as prefork pools on many machines, so no process can hold the counts:
they live in one Redis hash, ``P:metrics`` (on a Redis Cluster, in 16 shards that
readers add up: ``metric_shards.py``). The counters are updated by the Lua
scripts a pass already runs (``create_run``, ``save_step``, ``end_pass``,
``finish_run``, ``cancel_run``) at no extra round trip, atomically with the change
of state they count (a redelivered message or a lost lease counts nothing twice):
one ``HINCRBY`` each (helpers in ``lua/_metrics.lua``), the labels read with the
run fields the script already reads. The duration histograms are measured by the
same scripts (which attempt is new is decided there, under the same atomicity) but
returned to the worker process, which adds them to the same fields in one pipeline
a second (``observations.py``): up to a second late, and a SIGKILLed process loses
its last second of them. One ``HGETALL`` returns the whole fleet's counts to any
process that scrapes.

Fields (``<app>|<fn>`` are the function's app id and function id)::

    c|runs_started|<app>|<fn>            runs created (event, cron, invoke, replay)
    c|runs_ended|<app>|<fn>|<status>     completed, failed, cancelled, skipped
    c|step_failures|<app>|<fn>           attempts that raised (retried or not)
    c|events|<name>                      events stored by send / emit / send_event
    h|<hist>|<app>|<fn>|<le>             observations in the bucket ending at <le>
    hu|<hist>|<app>|<fn>                 the sum of the observations (microseconds)

with ``<hist>`` one of ``run_duration`` (creation to end), ``step_duration`` (one
attempt's execution) and ``queue_delay`` (from when a pass could start to when it
did). Each executed attempt of a run or send_event step is one ``step_duration``
observation, so the ``step_attempts`` counter is read from that histogram's count. A bucket counts only its own observations; readers make them cumulative.
The timer gauges are read from the timers sorted set at scrape time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .metric_shards import merged
from .observations import DURATION_BUCKETS
from .store import Store

HISTOGRAMS = ("run_duration", "step_duration", "queue_delay")
COUNTERS = ("runs_started", "runs_ended", "step_attempts", "step_failures", "events")


@dataclass
class Histogram:
    """One histogram series: per-bucket counts (not cumulative) and the sum."""

    buckets: dict[str, int] = field(default_factory=dict)
    sum: float = 0.0

    @property
    def count(self) -> int:
        return sum(self.buckets.values())

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, count of observations <= le) for every fixed bucket and +Inf."""
        out, total = [], 0
        for le in (*DURATION_BUCKETS, "+Inf"):
            total += self.buckets.get(le, 0)
            out.append((le, total))
        return out


@dataclass
class MetricsSnapshot:
    """What the store counted, as of one read.

    ``counters`` maps a counter name to {label tuple: value}: (app, fn) for the run
    and step counters, (app, fn, status) for ``runs_ended``, (name,) for ``events``.
    ``histograms`` maps a histogram name to {(app, fn): Histogram}.
    """

    counters: dict[str, dict[tuple[str, ...], int]]
    histograms: dict[str, dict[tuple[str, str], Histogram]]
    timers: int
    timers_overdue: int
    oldest_overdue_age: float
    enabled: bool
    read_at: float

    def counter(self, name: str, *labels: str) -> int:
        """One counter's value (0 when never counted)."""
        return self.counters.get(name, {}).get(tuple(labels), 0)


def parse_fields(raw: dict[str, str]) -> tuple[dict[str, dict[tuple[str, ...], int]],
                                               dict[str, dict[tuple[str, str], Histogram]]]:
    """The metrics hash's fields as counters and histograms (unknown fields are skipped)."""
    counters: dict[str, dict[tuple[str, ...], int]] = {name: {} for name in COUNTERS}
    hists: dict[str, dict[tuple[str, str], Histogram]] = {name: {} for name in HISTOGRAMS}
    for key, value in raw.items():
        kind, _, rest = key.partition("|")
        name, _, rest = rest.partition("|")
        try:
            if kind == "c" and name == "events":
                counters["events"][(rest,)] = int(value)
            elif kind == "c" and name in counters:
                parts = tuple(rest.split("|"))
                if len(parts) == (3 if name == "runs_ended" else 2):
                    counters[name][parts] = int(value)
            elif kind in ("h", "hu", "hs") and name in hists:
                parts = tuple(rest.split("|"))
                want = 3 if kind == "h" else 2
                if len(parts) != want:
                    continue
                series = hists[name].setdefault((parts[0], parts[1]), Histogram())
                if kind == "h":
                    series.buckets[parts[2]] = int(value)
                elif kind == "hu":
                    series.sum += int(value) / 1e6
                else:  # a float sum in seconds, as written before the sums were integers
                    series.sum += float(value)
        except ValueError:
            continue
    counters["step_attempts"] = {k: h.count for k, h in hists["step_duration"].items()}
    return counters, hists


def read_metrics(store: Store, *, now: float | None = None) -> MetricsSnapshot:
    """Read the counts and the timer gauges in one round trip (after sending this
    process's own buffered observations, so a process reads what it observed)."""
    if store.observations is not None:
        store.observations.flush_quietly()
    now = time.time() if now is None else now
    now_ms = int(now * 1000)
    pipe = store.r.pipeline(transaction=False)
    sources = store.metrics_read_keys  # the hash, or its shards on a cluster
    for key in sources:
        pipe.hgetall(key)
    store.queue_timer_counts(pipe, now_ms)
    res = pipe.execute()
    raw = merged(res[:len(sources)])
    total, overdue, oldest = store.timer_counts(res[len(sources):])
    counters, hists = parse_fields(raw)
    age = 0.0 if oldest is None else max(0.0, now - oldest)
    return MetricsSnapshot(counters=counters, histograms=hists, timers=int(total),
                           timers_overdue=int(overdue), oldest_overdue_age=age,
                           enabled=store.metrics_key is not None, read_at=now)


__all__ = ["DURATION_BUCKETS", "Histogram", "MetricsSnapshot", "parse_fields", "read_metrics"]
