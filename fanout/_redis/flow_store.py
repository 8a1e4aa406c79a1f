"""Flow control's state in Redis: its keys, its scripts and every command it sends.

One :class:`FlowStore` per :class:`~fanout._redis.store.Store` (``store.flow``).  Each
decision several workers could race on is one Lua script (``lua/fc_*.lua``) behind a
typed method here: the caller passes ids, times in seconds and limits, and gets a
typed answer; the argument order, the time units and the reply's shape stay here.
The plain reads and writes around them are methods too, each one round trip.  The
key layout is in ``docs/internals.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from .._core.event import dumps
from .._core.run_record import FIRST_PASS, WAITING_SINCE
from .keyspace import Keyspace
from .replies import field_map, text, texts
from .scripts import Scripts


class Debounced(NamedTuple):
    """The pending run of a debounce key: ``new`` (the caller creates it, also on a
    retry of the event that opened it) or ``pending`` (an earlier event's run)."""

    run_id: str
    due: float  # seconds
    head: str


class Batched(NamedTuple):
    """The open batch an event joins: its run, when it is due, the event's position,
    whether this event opened it and whether it is now full (and closed)."""

    run_id: str
    due: float  # seconds
    position: int
    opened: bool
    full: bool


class Slots(NamedTuple):
    """A concurrency acquire: ``taken`` (a slot in every constraint) or not (the run
    waits), and the waiters the script handed a slot to (to be woken)."""

    taken: bool
    woken: list[str]


class FlowStore:
    def __init__(self, client: Any, keys: Keyspace, scripts: Scripts, retention: int,
                 *, indexed: bool = False) -> None:
        self.r = client
        # Whether the run scripts keep the run indexes (not on a cluster: lua/_indexes.lua).
        self.indexed = indexed
        self.keys = keys
        self.scripts = scripts
        self.retention = retention

    # -- keys ----------------------------------------------------------------------------

    def key(self, kind: str, *parts: str) -> str:
        """``P:fc:<kind>:{B}``: one flow-control key under its own hash tag."""
        return self.keys.flow(kind, *parts)

    def concurrency_keys(self, app_id: str, buckets: Sequence[str]) -> list[str]:
        """slots, waiting [, slots, waiting]: all of an app's under one hash tag."""
        return self.keys.concurrency(app_id, buckets)

    # -- admission: one script per gate ----------------------------------------------------

    def claim_idempotency(self, key: str, run_id: str, seconds: int) -> str:
        """The run that owns an idempotency key (``run_id`` when the claim is ours, also
        on a retry)."""
        return text(self.scripts.run("fc_claim", [key], [run_id, seconds]))

    def admit_rate(self, key: str, run_id: str, now: float, period_s: float,
                   limit: int) -> bool:
        """Whether a run fits the rate limit's sliding window (a retry is admitted again)."""
        return bool(int(self.scripts.run(
            "fc_rate", [key], [run_id, int(now * 1000), int(period_s * 1000), limit])))

    def throttle_start(self, key: str, run_id: str, now: float, period_s: float, limit: int,
                       burst: int) -> float:
        """When a throttled run may start (seconds; the same answer to a retry)."""
        raw = self.scripts.run("fc_throttle", [key], [
            run_id, int(now * 1000), int(period_s * 1000), limit, burst])
        return float(text(raw)) / 1000

    def singleton(self, key: str, run_id: str, mode: str, ended: str = "") -> tuple[str, str]:
        """Claim a singleton key: ``('ok', previous)``, ``('held', holder)`` (skip) or
        ``('replaced', previous)`` (cancel). ``ended``: a holder known to have ended."""
        res = self.scripts.run("fc_singleton", [key], [run_id, mode, ended])
        return text(res[0]), text(res[1])

    def release_owner(self, key: str, run_id: str) -> bool:
        """Delete an owner hash (singleton, open debounce, open batch) if ``run_id``
        owns it."""
        return bool(int(self.scripts.run("fc_release", [key], [run_id])))

    def debounce(self, key: str, run_id: str, now: float, period_s: float,
                 timeout_s: float | None, closed: str = "") -> Debounced:
        """The pending run of a debounce key, its start pushed back by this event.
        ``closed``: a pending run found already started (a new debounce opens)."""
        res = self.scripts.run("fc_debounce", [key], [
            run_id, int(now * 1000), int(period_s * 1000), int((timeout_s or 0) * 1000), closed,
        ])
        return Debounced(text(res[0]), float(text(res[1])) / 1000, text(res[2]))

    def debounce_run(self, run_id: str, event: Mapping[str, Any], ts: int,
                     due: float) -> float | None:
        """Give a pending debounced run this later event and push its start back to
        ``due``; its new wake time, or None when it has started (or ended)."""
        wake = self.scripts.run("fc_debounce_run", [self.keys.run(run_id)], [
            dumps(event), dumps([event.get("id")]), ts, f"{due:.3f}"])
        return float(text(wake)) if wake else None

    def batch(self, key: str, run_id: str, now: float, max_size: int, timeout_s: float,
              closed: str = "") -> Batched:
        """Join the open batch of a key (or open one); a full batch is closed.
        ``closed``: an open batch found already started (a new batch opens)."""
        res = self.scripts.run("fc_batch", [key], [
            run_id, int(now * 1000), max_size, int(timeout_s * 1000), closed,
        ])
        return Batched(text(res[0]), float(text(res[1])) / 1000, int(res[2]),
                       bool(int(res[3])), bool(int(res[4])))

    def batch_run(self, run_id: str, field: str, item: Mapping[str, Any],
                  full: bool) -> tuple[bool, float]:
        """Add an event (the run field ``field``) to a batch run that has not started:
        (added, wake in seconds, 0 when the batch is not full). The run is indexed under
        the event's name too (a batch run is listed by each name of its events)."""
        keys = [self.keys.run(run_id)]
        if self.indexed:
            keys += ["", self.keys.functions_index]
        event = item.get("e")
        name = event.get("name") if isinstance(event, Mapping) else None
        added, wake = self.scripts.run("fc_batch_run", keys, [
            field, dumps(item), "1" if full else "0", name if isinstance(name, str) else ""])
        return bool(int(added)), float(text(wake) or 0)

    # -- concurrency --------------------------------------------------------------------

    def acquire_slots(self, keys: Sequence[str], holder: str, waiter: str, now: float,
                      lease_ms: int, score: int, reserve_ms: int,
                      limits: Sequence[int]) -> Slots:
        """Take a slot in each constraint at once, or wait (ordered by ``score``)."""
        res = self.scripts.run("fc_slots_acquire", keys, [
            holder, waiter, int(now * 1000), lease_ms, score, reserve_ms, *limits])
        return Slots(text(res[0]) == "ok", texts(res[1:]))

    def release_slots(self, keys: Sequence[str], holder: str, waiter: str, now: float,
                      reserve_ms: int, limits: Sequence[int]) -> list[str]:
        """Give ``holder``'s slots back (and forget ``waiter``; '' for none); returns the
        waiters handed the room."""
        return texts(self.scripts.run("fc_slots_release", keys, [
            holder, waiter, int(now * 1000), reserve_ms, *limits]))

    def still_waiting(self, waiting_keys: Sequence[str], waiter: str) -> bool:
        """Whether ``waiter`` is still in any of these waiting lists."""
        pipe = self.r.pipeline(transaction=False)
        for key in waiting_keys:
            pipe.zscore(key, waiter)
        return not all(score is None for score in pipe.execute())

    # -- run fields ----------------------------------------------------------------------

    def stamp_first_pass(self, run_id: str, stamp: str) -> None:
        """Record when the run's first pass began (``tf0``), once."""
        self.r.hsetnx(self.keys.run(run_id), FIRST_PASS, stamp)

    def clear_waiting_since(self, run_id: str) -> None:
        """The run holds its slots now: forget since when it waited (``ccw``)."""
        self.r.hdel(self.keys.run(run_id), WAITING_SINCE)

    def close_batch(self, run_id: str, update: Mapping[str, str], drop: Sequence[str]) -> None:
        """Write a batch run's gathered events and drop its ``be:*`` fields."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hset(self.keys.run(run_id), mapping=update)
        if drop:
            pipe.hdel(self.keys.run(run_id), *drop)
        pipe.execute()

    # -- cancel listeners ----------------------------------------------------------------

    def add_cancel_listeners(self, run_id: str, entries: Sequence[tuple[str, str, int]]) -> None:
        """Register a run in (listener key, spec JSON, TTL) cancel-on-event hashes."""
        pipe = self.r.pipeline(transaction=False)
        for key, spec, ttl in entries:
            pipe.hset(key, run_id, spec)
            pipe.expire(key, ttl)
        pipe.execute()

    def drop_cancel_listener(self, keys: Sequence[str], run_id: str) -> None:
        pipe = self.r.pipeline(transaction=False)
        for key in keys:
            pipe.hdel(key, run_id)
        pipe.execute()

    def cancel_listeners(self, key: str) -> dict[str, str]:
        """The runs listening on one cancel key: run id -> spec JSON."""
        return field_map(self.r.hgetall(key))

    def drop_listeners(self, key: str, run_ids: Sequence[str]) -> None:
        self.r.hdel(key, *run_ids)
