"""Flow control's state in Redis: its keys and every command it sends.

One :class:`FlowStore` per :class:`~fanout._redis.store.Store` (``store.flow``).
The decisions several workers could race on are Lua scripts (``lua/fc_*.lua``),
run through :meth:`Store.script`; the plain reads and writes around them are the
methods here, each one round trip, with the commands in the order the flow
runtime has always sent them.  The key layout is in ``docs/internals.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._core.flow import bucket

if TYPE_CHECKING:
    from .store import Store


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class FlowStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    # -- keys ----------------------------------------------------------------------------

    def key(self, kind: str, *parts: str) -> str:
        """``P:fc:<kind>:{B}``: one flow-control key under its own hash tag."""
        return f"{self.store.p}:fc:{kind}:{{{bucket(*parts)}}}"

    def concurrency_keys(self, app_id: str, buckets: Sequence[str]) -> list[str]:
        """slots, waiting [, slots, waiting]: all of an app's under one hash tag."""
        p, out = self.store.p, []
        for b in buckets:
            out += [f"{p}:fc:cc:{{{app_id}}}:{b}", f"{p}:fc:ccw:{{{app_id}}}:{b}"]
        return out

    # -- run fields ----------------------------------------------------------------------

    def expire_run(self, run_id: str) -> None:
        """Give a run that will never start (a skipped one) the retention TTL."""
        self.store.r.expire(self.store.run_key(run_id), self.store.retention)

    def stamp_first_pass(self, run_id: str, stamp: str) -> None:
        """Record when the run's first pass began (``tf0``), once."""
        self.store.r.hsetnx(self.store.run_key(run_id), "tf0", stamp)

    def clear_waiting_since(self, run_id: str) -> None:
        """The run holds its slots now: forget since when it waited (``ccw``)."""
        self.store.r.hdel(self.store.run_key(run_id), "ccw")

    def close_batch(self, run_id: str, update: Mapping[str, str], drop: Sequence[str]) -> None:
        """Write a batch run's gathered events and drop its ``be:*`` fields."""
        pipe = self.store.r.pipeline(transaction=False)
        pipe.hset(self.store.run_key(run_id), mapping=update)  # type: ignore[arg-type]
        if drop:
            pipe.hdel(self.store.run_key(run_id), *drop)
        pipe.execute()

    def index_event_run(self, event_id: str, run_id: str) -> None:
        """List ``run_id`` among the runs of an event folded into it (debounce, batch)."""
        store = self.store
        key = f"{store.event_key(event_id)}:runs"
        pipe = store.r.pipeline(transaction=False)
        pipe.sadd(key, run_id)
        pipe.expire(key, store.retention)
        pipe.execute()

    # -- concurrency ---------------------------------------------------------------------

    def still_waiting(self, waiting_keys: Sequence[str], waiter: str) -> bool:
        """Whether ``waiter`` is still in any of these waiting lists."""
        pipe = self.store.r.pipeline(transaction=False)
        for key in waiting_keys:
            pipe.zscore(key, waiter)
        return not all(score is None for score in pipe.execute())

    # -- cancel listeners ----------------------------------------------------------------

    def add_cancel_listeners(self, run_id: str, entries: Sequence[tuple[str, str, int]]) -> None:
        """Register a run in (listener key, spec JSON, TTL) cancel-on-event hashes."""
        pipe = self.store.r.pipeline(transaction=False)
        for key, spec, ttl in entries:
            pipe.hset(key, run_id, spec)
            pipe.expire(key, ttl)
        pipe.execute()

    def drop_cancel_listener(self, keys: Sequence[str], run_id: str) -> None:
        pipe = self.store.r.pipeline(transaction=False)
        for key in keys:
            pipe.hdel(key, run_id)
        pipe.execute()

    def cancel_listeners(self, key: str) -> dict[str, str]:
        """The runs listening on one cancel key: run id -> spec JSON."""
        return {_s(k): _s(v) for k, v in self.store.r.hgetall(key).items()}

    def drop_listeners(self, key: str, run_ids: Sequence[str]) -> None:
        self.store.r.hdel(key, *run_ids)

    def fn_runs_between(
        self, fn_key: str, lo: int | str, hi: int | str, offset: int, page: int
    ) -> list[str]:
        """A page of a function's run ids created between ``lo`` and ``hi`` (ms)."""
        return [_s(m) for m in self.store.r.zrangebyscore(
            self.store.fn_index(fn_key), lo, hi, start=offset, num=page)]
