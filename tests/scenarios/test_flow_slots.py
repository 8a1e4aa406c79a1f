"""The flow-control Lua scripts against a real Redis, step by step (no worker):
slots with leases, waiting lists in priority order, hand-over to the woken waiter,
GCRA, the sliding-window rate limit, debounce and batch bookkeeping."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from fanout._core.flow_math import gcra
from fanout._redis.store import Store
from tests.support import redis_for

S, W = "fanout:fc:cc:{t}:k", "fanout:fc:ccw:{t}:k"
S2, W2 = "fanout:fc:cc:{t}:k2", "fanout:fc:ccw:{t}:k2"


@pytest.fixture
def store(clean_db: redis.Redis) -> Store:
    clean_db.flushdb()
    return Store(redis_for(__name__))


def _dec(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [_dec(v) for v in value]
    return value


def acquire(store: Store, holder: str, waiter: str, now: int, score: int, *limits: int,
            keys: tuple[str, ...] = (S, W), lease: int = 10_000) -> list[str]:
    return _dec(store.scripts.run("fc_slots_acquire", keys,
                             [holder, waiter, now, now + lease, score, now + 5000, *limits]))


def release(store: Store, holder: str, now: int, *limits: int, keys: tuple[str, ...] = (S, W),
            forget: str = "") -> list[str]:
    return _dec(store.scripts.run("fc_slots_release", keys, [holder, forget, now, now + 5000, *limits]))


def test_slots_wait_and_hand_over_in_priority_order(store: Store) -> None:
    t = 1_000_000
    assert acquire(store, "r1:a", "p|f|r1", t, t, 2) == ["ok"]
    assert acquire(store, "r2:a", "p|f|r2", t, t, 2) == ["ok"]
    assert acquire(store, "r3:a", "p|f|r3", t + 1, t + 1, 2) == ["wait"]
    assert acquire(store, "r4:a", "p|f|r4", t + 2, t + 2, 2) == ["wait"]
    # r5 arrives last but with 60 s of priority: it is first in line
    assert acquire(store, "r5:a", "p|f|r5", t + 3, t + 3 - 60_000, 2) == ["wait"]
    assert release(store, "r1:a", t + 10, 2) == ["p|f|r5"]
    # the slot is reserved for r5: a newcomer cannot take it
    assert acquire(store, "r6:a", "p|f|r6", t + 11, t + 11, 2) == ["wait"]
    assert acquire(store, "r5:b", "p|f|r5", t + 12, t + 3 - 60_000, 2) == ["ok"]
    assert release(store, "r2:a", t + 20, 2) == ["p|f|r3"]
    assert release(store, "r5:b", t + 30, 2) == ["p|f|r4"]
    assert store.r.zcard(W) == 1  # r6 still waits


def test_a_waiter_arriving_early_waits_behind_older_waiters(store: Store) -> None:
    t = 2_000_000
    acquire(store, "a:1", "p|f|a", t, t, 1)
    assert acquire(store, "b:1", "p|f|b", t + 1, t + 1, 1) == ["wait"]
    # the holder's slot expires (its worker died): the next caller hands it to b
    assert acquire(store, "c:1", "p|f|c", t + 20_000, t + 20_000, 1) == ["wait", "p|f|b"]
    assert acquire(store, "b:2", "p|f|b", t + 20_001, t + 1, 1)[0] == "ok"


def test_a_reservation_nobody_claims_expires(store: Store) -> None:
    t = 3_000_000
    acquire(store, "a:1", "p|f|a", t, t, 1)
    acquire(store, "b:1", "p|f|b", t + 1, t + 1, 1)
    assert release(store, "a:1", t + 2, 1) == ["p|f|b"]  # b is woken but never comes
    assert acquire(store, "c:1", "p|f|c", t + 3, t + 3, 1) == ["wait"]
    assert acquire(store, "c:2", "p|f|c", t + 6000, t + 3, 1)[0] == "ok"


def test_two_constraints_are_taken_together(store: Store) -> None:
    t = 4_000_000
    keys = (S, W, S2, W2)
    assert acquire(store, "a:1", "p|f|a", t, t, 1, 5, keys=keys) == ["ok"]
    assert acquire(store, "b:1", "p|f|b", t, t, 1, 5, keys=keys) == ["wait"]
    assert store.r.zcard(S2) == 1  # b holds nothing while it waits
    assert store.r.zscore(W, "p|f|b") is not None and store.r.zscore(W2, "p|f|b") is None
    assert release(store, "a:1", t + 1, 1, 5, keys=keys) == ["p|f|b"]
    assert acquire(store, "b:2", "p|f|b", t + 2, t, 1, 5, keys=keys) == ["ok"]
    assert store.r.zrange(S2, 0, -1) == [b"b:2"]


def test_an_ended_waiter_gives_its_reservation_on(store: Store) -> None:
    t = 5_000_000
    acquire(store, "a:1", "p|f|a", t, t, 1)
    acquire(store, "b:1", "p|f|b", t + 1, t + 1, 1)
    acquire(store, "c:1", "p|f|c", t + 2, t + 2, 1)
    assert release(store, "a:1", t + 3, 1) == ["p|f|b"]
    assert release(store, "", t + 4, 1, forget="p|f|b") == ["p|f|c"]  # b was cancelled


def test_throttle_script_matches_the_python_gcra(store: Store) -> None:
    key = "fanout:fc:thr:{x}"
    now, period = 10_000_000, 1000
    tat, expected = 0.0, []
    for _ in range(5):
        start, tat = gcra(tat, now, period, 2, 2)
        expected.append(start)
    got = [float(_dec(store.scripts.run("fc_throttle", [key], [f"r{i}", now, period, 2, 2])))
           for i in range(5)]
    assert got == expected == [now, now, now + 500, now + 1000, now + 1500]
    # a retried router gets the same start for the same run
    assert float(_dec(store.scripts.run("fc_throttle", [key], ["r3", now + 5, period, 2, 2]))) == now + 1000


def test_rate_limit_window_slides(store: Store) -> None:
    key = "fanout:fc:rate:{x}"
    t = 20_000_000
    got = [int(store.scripts.run("fc_rate", [key], [f"r{i}", t + i, 1000, 3])) for i in range(5)]
    assert got == [1, 1, 1, 0, 0]
    assert int(store.scripts.run("fc_rate", [key], ["r1", t + 10, 1000, 3])) == 1  # a retry
    assert int(store.scripts.run("fc_rate", [key], ["r9", t + 1001, 1000, 3])) == 1  # r0 left


def test_debounce_pointer(store: Store) -> None:
    key = "fanout:fc:deb:{x}"
    t = 30_000_000

    def deb(run: str, now: int, closed: str = "") -> list[str]:
        return _dec(store.scripts.run("fc_debounce", [key], [run, now, 1000, 2500, closed]))

    assert deb("a", t) == ["a", f"{t + 1000}.000", "new"]
    assert deb("a", t + 1) == ["a", f"{t + 1000}.000", "new"]  # the opener, retried
    assert deb("b", t + 800) == ["a", f"{t + 1800}.000", "pending"]
    assert deb("c", t + 2000) == ["a", f"{t + 2500}.000", "pending"]  # capped by timeout
    assert deb("d", t + 2100, closed="a") == ["d", f"{t + 3100}.000", "new"]


def test_batch_pointer(store: Store) -> None:
    key = "fanout:fc:bat:{x}"
    t = 40_000_000

    def add(run: str) -> list[Any]:
        return _dec(store.scripts.run("fc_batch", [key], [run, t, 3, 1000, ""]))

    assert add("a") == ["a", f"{t + 1000}.000", 1, 1, 0]
    assert add("b") == ["a", f"{t + 1000}.000", 2, 0, 0]
    assert add("c") == ["a", f"{t + 1000}.000", 3, 0, 1]  # full: closed
    assert add("d") == ["d", f"{t + 1000}.000", 1, 1, 0]
