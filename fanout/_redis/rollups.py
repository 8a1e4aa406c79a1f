"""Time-bucketed rollups of the metrics hash, for the dashboard's charts.

``P:metrics`` is cumulative: it says how many runs ended since counting began, not
when. Once a minute, one process of the fleet turns it into buckets: the sender
thread of each process's observation buffer (``observations.py``) calls
:meth:`Rollups.tick` after each send; the first process to claim the minute that
just ended (``SET ... NX``) reads the metrics hash and the copy it kept at the last
roll, and adds the difference of the charted fields to three buckets (the first
process to find no copy takes one at once, as the baseline: what was counted before
it is not charted):

    P:metrics:roll:m:<t>      hash  one minute        (kept 8 days: the hour's chart)
    P:metrics:roll:q:<t>      hash  fifteen minutes   (kept 8 days: the day's chart)
    P:metrics:roll:h:<t>      hash  one hour          (kept 35 days: the week's chart)
    P:metrics:roll:last       hash  the charted fields at the last roll, and @at
    P:metrics:roll:claim:<m>  string who rolls minute <m> (10 minutes)

``<t>`` is the bucket's start in epoch seconds. The charted fields are the run
counters (``c|runs_started``, ``c|runs_ended``, ``c|step_failures``) and the run
duration histogram (``h|run_duration``, ``hu|run_duration``), with the metrics
hash's own names.

What it costs: per process, one ``SET NX`` a minute (about 1/60 of a command per
one-second send); for the process that wins, one round trip of two ``HGETALL`` and
one pipeline of ``HINCRBY``s (three per changed field) and five other commands. Nothing
is written per run. A minute in which no process sends (no worker observed
anything) is added to the next minute that is rolled. A roll waits two seconds into
the minute, so every process has sent the minute that ended.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from .keyspace import Keyspace
from .metric_shards import merged
from .replies import text

log = logging.getLogger("fanout")

#: tier -> (bucket width in seconds, time to live in seconds)
TIERS: dict[str, tuple[int, int]] = {
    "m": (60, 8 * 86400),
    "q": (900, 8 * 86400),
    "h": (3600, 35 * 86400),
}
CHARTED = ("c|runs_started|", "c|runs_ended|", "c|step_failures|", "h|run_duration|",
           "hu|run_duration|")
_SETTLE = 2.0


def charted(field: str) -> bool:
    return field.startswith(CHARTED)


class Rollups:
    """The rollup buckets beside one metrics hash."""

    def __init__(self, client: Any, metrics_key: str, *,
                 sources: Sequence[str] | None = None) -> None:
        self.r = client
        self.metrics_key = metrics_key
        # The hashes holding the counts: the metrics hash, or its shards on a Redis
        # Cluster (metric_shards.py), added up.
        self.sources = list(sources) if sources else [metrics_key]
        self._tried = 0
        self._based = False
        self._warned = 0.0

    def bucket_key(self, tier: str, start: int) -> str:
        return Keyspace.rollup(self.metrics_key, tier, start)

    @property
    def last_key(self) -> str:
        return Keyspace.rollup_last(self.metrics_key)

    def tick(self, now: float | None = None) -> bool:
        """Roll the minute that ended, if no process has; True when this one did."""
        now = time.time() if now is None else now
        minute = int(now // 60)
        if not self._based:
            # The first roll of a fleet only records where counting stands; take that
            # baseline at once, so the minutes after it are charted.
            self._based = True
            if not self.r.exists(self.last_key):
                self.roll(minute - 1)
        if minute <= self._tried or now - minute * 60 < _SETTLE:
            return False
        self._tried = minute
        done = minute - 1
        claim = Keyspace.rollup_claim(self.metrics_key, done)
        if not self.r.set(claim, str(os.getpid()), nx=True, ex=600):
            return False
        self.roll(done)
        return True

    def tick_quietly(self, now: float | None = None) -> None:
        try:
            self.tick(now)
        except Exception as exc:  # noqa: BLE001 - charts never stop a worker
            t = time.monotonic()
            if t - self._warned >= 60.0:
                self._warned = t
                log.warning("fanout: could not roll the metrics into %s:roll:* (the charts "
                            "miss this minute; tried again next minute): %s",
                            self.metrics_key, exc)

    def roll(self, minute: int) -> dict[str, int]:
        """Add what changed since the last roll to the buckets of ``minute``; the deltas."""
        pipe = self.r.pipeline(transaction=False)
        for key in self.sources:
            pipe.hgetall(key)
        pipe.hgetall(self.last_key)
        *cur_raws, last_raw = pipe.execute()
        cur: dict[str, int] = {}
        for name, raw in merged(cur_raws).items():
            if charted(name):
                try:
                    cur[name] = int(raw)
                except ValueError:
                    continue
        last = {text(k): text(v) for k, v in last_raw.items()}
        at = int(last.pop("@at", "0") or 0)
        if at >= minute:
            return {}  # rolled already (a slow roll of a later minute)
        deltas: dict[str, int] = {}
        if at:  # the very first roll only records where counting stands
            for name, value in cur.items():
                before = int(last.get(name, "0") or 0)
                d = value - before if value >= before else value  # a reset hash counts anew
                if d:
                    deltas[name] = d
        pipe = self.r.pipeline(transaction=False)
        if deltas:
            for tier, (width, ttl) in TIERS.items():
                key = self.bucket_key(tier, (minute * 60) // width * width)
                for name, d in deltas.items():
                    pipe.hincrby(key, name, d)
                pipe.expire(key, ttl)
        pipe.delete(self.last_key)
        pipe.hset(self.last_key, mapping={**{k: str(v) for k, v in cur.items()},
                                          "@at": str(minute)})
        pipe.execute()
        return deltas

    def read(self, tier: str, count: int, now: float | None = None) -> list[tuple[int, dict[str, int]]]:
        """The last ``count`` buckets of ``tier`` (oldest first) up to the one holding
        ``now``: ``(start, {field: delta})``; one pipeline of ``count`` HGETALLs."""
        width, _ttl = TIERS[tier]
        now = time.time() if now is None else now
        top = int(now // width) * width
        starts = [top - (count - 1 - i) * width for i in range(count)]
        pipe = self.r.pipeline(transaction=False)
        for s in starts:
            pipe.hgetall(self.bucket_key(tier, s))
        out = []
        for s, raw in zip(starts, pipe.execute(), strict=True):
            fields: dict[str, int] = {}
            for k, v in raw.items():
                try:
                    fields[text(k)] = int(text(v))
                except ValueError:
                    continue
            out.append((s, fields))
        return out

    def last_counts(self) -> tuple[int | None, dict[str, int]]:
        """The charted fields as they stood at the last roll (cumulative, as in the
        metrics hash), and that minute's start in epoch seconds (None before any)."""
        raw = {text(k): text(v) for k, v in self.r.hgetall(self.last_key).items()}
        at = raw.pop("@at", None)
        counts: dict[str, int] = {}
        for name, value in raw.items():
            try:
                counts[name] = int(value)
            except ValueError:
                continue
        return (None if at is None else int(at) * 60), counts

    def last_roll(self) -> int | None:
        """The minute (epoch seconds of its start) rolled last, or None before any."""
        at = self.r.hget(self.last_key, "@at")
        return None if at is None else int(text(at)) * 60


def rollups_of(store: Any) -> Rollups | None:
    """The rollups of a :class:`~fanout._redis.store.Store` (None when it does not count)."""
    if store.metrics_key is None:
        return None
    return Rollups(store.r, store.metrics_key, sources=store.metrics_read_keys)


__all__ = ["CHARTED", "TIERS", "Rollups", "charted", "rollups_of"]
