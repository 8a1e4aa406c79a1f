"""The timer sets: claiming due timers, re-timing them, counting them.

A timer is a member of one of the timer shards, sorted sets ``P:timers:{t<k>}`` (16
on one Redis; 48 ``P:timers:{T<k>.<i>}`` on a cluster; by run id, ``keyspace.py``)
scored by its due time in ms: a
run id (its lease, watchdog or wake-up), ``branch:<run>:<step>`` or
``route:<batch>``.  The run transitions in ``store.py`` arm and remove them with the
same pipelines as their scripts; this mixin of :class:`~fanout._redis.store.Store`
holds what the timer thread and the gauges do with them.  ``P:timers``, the single
set of earlier versions, is claimed from too, and a timer claimed from a set that is
not its home (that one, or on a cluster one of the 16 shards of earlier versions)
moves to its shard, so a worker on this version drains them. Nothing is armed in
those sets any more, so a scan reads them only every :data:`OLD_SETS_EVERY` scans.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis

from .._core.run_record import watchdog_field
from .keyspace import Keyspace
from .replies import texts
from .scripts import Scripts

#: A scan reads the timer sets of earlier versions once in this many scans (the first
#: one included): about every 2 s when idle, instead of every 0.25 s.
OLD_SETS_EVERY = 8


class TimerSets:
    """Timer operations of the store (a mixin: :class:`~fanout._redis.store.Store`)."""

    r: redis.Redis
    keys: Keyspace
    scripts: Scripts
    watchdog: float
    # Timers claimed from a set that is not their shard (P:timers, or an old shard on a
    # cluster) -> that set; re-timed into their shard.
    _legacy_claims: dict[str, str]
    # Each set's earliest timer (ms) as the last scan saw it; a set not here was empty.
    _timer_heads: dict[str, int]
    _timer_scans: int  # the scans that read every set
    _timer_peeked: float  # when the last of those began (time.monotonic)
    #: Every set is read at most this often (seconds); the sets known due are claimed
    #: from on every scan.
    timer_peek_every: float

    def timer_key(self, member: str) -> str:
        """The sorted set (shard) that holds the timer ``member``."""
        return self.keys.timer_key(member)

    def claim_due(
        self, *, rearm_s: float, limit: int = 512
    ) -> tuple[list[str], int, float | None]:
        """Claim the due timers of every shard (and of the old single set): (members,
        the score they were re-armed at, the time in seconds the earliest remaining
        timer is due, or None if there is none).

        Only due shards run ``claim_due.lua``. One pipeline claims from the shards the
        last scan saw due (their earliest timer, as that scan left it, is past) and
        reads the earliest timer of every other one (``ZRANGE 0 0``: one command
        instead of a script's three); a shard that read shows due is claimed in a
        second round trip. So every set is looked at on every scan, and a timer
        armed elsewhere, lost or late, is still found; an idle scan costs one command
        per set. Under load the thread scans again at once while timers are due; those
        scans claim from the sets known due only, and every set is read at most once per
        :attr:`timer_peek_every` seconds (the thread's poll interval, so a timer armed
        elsewhere is found as soon as when idle). The sets of earlier versions, where
        nothing is armed any more, are read once in :data:`OLD_SETS_EVERY` such reads,
        and on every scan while the last read left one due (so a backlog there drains
        as fast as before)."""
        now = time.time()
        now_ms = int(now * 1000)
        rearm = int((now + rearm_s) * 1000)
        self._legacy_claims.clear()  # the last scan re-timed what it claimed
        heads = self._timer_heads
        mono = time.monotonic()
        peeking = mono - self._timer_peeked >= self.timer_peek_every
        if not peeking:
            keys = [k for k in self.keys.timer_keys if heads.get(k, now_ms + 1) <= now_ms]
        else:
            self._timer_scans += 1
            old = self.keys.old_timer_keys
            keys = self.keys.timer_keys if (self._timer_scans - 1) % OLD_SETS_EVERY == 0 else \
                [*self.keys.timer_shards, *(k for k in old if heads.get(k, now_ms + 1) <= now_ms)]
        kept = {k: v for k, v in heads.items() if k not in keys}  # not read: as last seen
        claim = [k for k in keys if heads.get(k, now_ms + 1) <= now_ms]
        peek = [k for k in keys if k not in claim]
        pipe = self.r.pipeline(transaction=False)
        self._queue_claims(pipe, claim, now_ms, rearm, limit)
        for key in peek:
            pipe.zrange(key, 0, 0, withscores=True)
        try:
            replies = self._execute_claims(pipe, claim)
        except Exception:
            # The next scan reads every set again: one that sent nothing (only the
            # sets known due, none) must not pass for Redis being back.
            self._timer_peeked = float("-inf")
            raise
        if peeking:
            self._timer_peeked = mono
        heads = {}
        due = self._claimed(claim, replies[:len(claim)], heads)
        for key, first in zip(peek, replies[len(claim):], strict=True):
            if first:
                heads[key] = int(first[0][1])
        late = [k for k in peek if heads.get(k, now_ms + 1) <= now_ms]
        if late:
            pipe = self.r.pipeline(transaction=False)
            self._queue_claims(pipe, late, now_ms, rearm, limit)
            try:
                replies = self._execute_claims(pipe, late)
            except Exception:
                self._timer_peeked = float("-inf")
                raise
            due += self._claimed(late, replies, heads)
        heads.update(kept)  # the old sets not read this time: as the last read left them
        self._timer_heads = heads
        return due, rearm, min(heads.values()) / 1000 if heads else None

    def _queue_claims(self, pipe: Any, keys: Sequence[str], now_ms: int, rearm: int,
                      limit: int) -> None:
        per_key = max(1, limit // len(self.keys.timer_shards))
        for key in keys:
            self.scripts.queue(pipe, "claim_due", [key], [now_ms, rearm, per_key])

    def _execute_claims(self, pipe: Any, keys: Sequence[str]) -> list[Any]:
        if not keys:
            return list(pipe.execute())
        # On NOSCRIPT, load this script only: the timer thread runs beside the passes,
        # and loading every script here would move their loads out of the passes.
        return self.scripts.execute(pipe, only=("claim_due",))

    def _claimed(self, keys: Sequence[str], replies: Sequence[Any],
                 heads: dict[str, int]) -> list[str]:
        """The members ``claim_due.lua`` returned for ``keys``; each set's earliest
        remaining timer goes into ``heads``."""
        due: list[str] = []
        for key, (*members, first) in zip(keys, replies, strict=True):
            claimed = texts(members)
            due += claimed
            for member in claimed:
                if self.keys.timer_key(member) != key:
                    self._legacy_claims[member] = key
            if first not in (b"", ""):
                heads[key] = int(float(first))
        return due

    def queue_timer_counts(self, pipe: Any, now_ms: int) -> None:
        """Queue ZCARD, ZCOUNT up to ``now_ms`` and the lowest entry of every timer set;
        :meth:`timer_counts` reads the replies (``3 * len(keys.timer_keys)`` of them)."""
        for key in self.keys.timer_keys:
            pipe.zcard(key)
            pipe.zcount(key, "-inf", now_ms)
            pipe.zrange(key, 0, 0, withscores=True)

    @staticmethod
    def timer_counts(replies: Sequence[Any]) -> tuple[int, int, float | None]:
        """(timers, overdue timers, the oldest overdue one's due time in seconds)."""
        total = overdue = 0
        oldest: float | None = None
        for i in range(0, len(replies), 3):
            card, over, first = replies[i:i + 3]
            total, overdue = total + int(card), overdue + int(over)
            if over and first:
                due = float(first[0][1]) / 1000.0
                oldest = due if oldest is None else min(oldest, due)
        return total, overdue, oldest

    def timer_scores(self, members: Sequence[str]) -> list[float | None]:
        """Each member's timer (ms), in its shard or in a set of earlier versions (its
        shard's first); one round trip."""
        by_key: dict[str, list[str]] = {}
        for m in members:
            for key in self.keys.timer_homes(m):
                by_key.setdefault(key, []).append(m)
        pipe = self.r.pipeline(transaction=False)
        for key, group in by_key.items():
            pipe.zmscore(key, group)
        found: dict[str, float | None] = {}
        homes = {m: self.keys.timer_homes(m) for m in members}
        for key, scores in zip(by_key, pipe.execute() if members else [], strict=True):
            for m, score in zip(by_key[key], scores, strict=True):
                if score is not None and (found.get(m) is None or homes[m].index(key) == 0):
                    found[m] = score
        return [found.get(m) for m in members]

    def drop_claimed(self, members: Sequence[str], rearm: int) -> None:
        """Remove timers whose score is still ``rearm`` (nobody re-armed them since)."""
        self.retime(rearm, {m: None for m in members})

    def retime(self, expected: int, members: Mapping[str, int | None]) -> None:
        """Set (or, for None, remove) timers whose score is still ``expected``, one
        script per shard.  A timer claimed from a set that is not its shard is removed
        there and, if it has a new time, armed in its shard (unless one is armed there)."""
        by_key: dict[str, list[Any]] = {}
        moved: dict[str, int] = {}
        for member, score in members.items():
            src = self._legacy_claims.pop(member, None)
            if src is not None:
                by_key.setdefault(src, [expected]).extend((member, ""))
                if score is not None:
                    moved[member] = score
                continue
            key = self.keys.timer_key(member)
            by_key.setdefault(key, [expected]).extend((member, "" if score is None else score))
        if not by_key:
            return
        pipe = self.r.pipeline(transaction=False)
        for key, args in by_key.items():
            self.scripts.queue(pipe, "drop_claimed", [key], args)
        for member, score in moved.items():
            pipe.zadd(self.keys.timer_key(member), {member: score}, nx=True)
        self.scripts.execute(pipe, only=("drop_claimed",))

    def watchdog_backoff(self, members: Sequence[str]) -> dict[str, int]:
        """The next watchdog due time (ms) for each fired timer: doubling, at most 1 h.

        The count lives in the run hash (``wd`` or ``wd:<step>``) and is reset when a
        pass or branch begins."""
        pipe = self.r.pipeline(transaction=False)
        for member in members:
            if member.startswith("branch:"):
                _, rid, sid = member.split(":", 2)
                pipe.hincrby(self.keys.run(rid), watchdog_field(sid), 1)
            else:
                pipe.hincrby(self.keys.run(member), watchdog_field(None), 1)
        now = time.time()
        out: dict[str, int] = {}
        for member, n in zip(members, pipe.execute(), strict=True):
            delay = min(3600.0, self.watchdog * 2 ** max(0, int(n) - 1))
            out[member] = int((now + delay) * 1000)
        return out

    def arm(self, member: str, due: float) -> None:
        self.r.zadd(self.keys.timer_key(member), {member: int(due * 1000)})

    def drop_timer(self, member: str) -> None:
        self.r.zrem(self.keys.timer_key(member), member)

