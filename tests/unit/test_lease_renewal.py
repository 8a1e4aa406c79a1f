"""Lease renewal against a real Redis: only a lease still held moves its recovery
timer, and a lost lease is reported so the process stops renewing it.

A pass that ended (``end_pass`` cleared the lease and armed the watchdog) but whose
process is still alive, say stuck in a publish, must not keep pushing the run's
timer back: the watchdog is what recovers the run.
"""

from __future__ import annotations

import time

import redis

from fanout._redis.store import Store


def make_run(store: Store, run_id: str, token: str) -> None:
    store.r.hset(store.run_key(run_id), mapping={"st": "running", "lease": token, "lu": "0"})


def test_a_held_lease_moves_its_timer(clean_db: redis.Redis) -> None:
    store = Store(clean_db)
    make_run(store, "r1", "tok")
    store.arm("r1", time.time() + 1)
    until = int((time.time() + 30) * 1000)
    assert store.renew_leases([("r1", "lease", "tok")], until) == []
    assert clean_db.zscore(store.timer_key("r1"), "r1") == until
    assert float(clean_db.hget(store.run_key("r1"), "lu") or 0) == until / 1000


def test_a_lost_lease_leaves_the_timer_alone(clean_db: redis.Redis) -> None:
    store = Store(clean_db)
    make_run(store, "r2", "")  # the pass ended: the lease is cleared
    watchdog = int((time.time() + 20) * 1000)
    clean_db.zadd(store.timer_key("r2"), {"r2": watchdog})
    make_run(store, "r3", "someone-else")  # taken over by another worker
    clean_db.zadd(store.timer_key("r3"), {"r3": watchdog})
    make_run(store, "r4", "tok4")
    clean_db.zadd(store.timer_key("r4"), {"r4": watchdog})
    until = int((time.time() + 2) * 1000)
    lost = store.renew_leases(
        [("r2", "lease", "tok2"), ("r3", "lease", "tok3"), ("r4", "lease", "tok4")], until
    )
    assert lost == [("r2", "lease"), ("r3", "lease")]
    assert clean_db.zscore(store.timer_key("r2"), "r2") == watchdog
    assert clean_db.zscore(store.timer_key("r3"), "r3") == watchdog
    assert clean_db.zscore(store.timer_key("r4"), "r4") == until


def test_a_branch_lease_is_reported_with_its_field(clean_db: redis.Redis) -> None:
    store = Store(clean_db)
    clean_db.hset(store.run_key("r5"), mapping={"st": "running", "bl:a": "other"})
    assert store.renew_leases([("r5", "bl:a", "mine")], int(time.time() * 1000)) == [
        ("r5", "bl:a")
    ]


def test_the_renewing_thread_drops_a_lost_lease(clean_db: redis.Redis) -> None:
    from fanout._celery.leases import Leases
    from tests.support import wait_for

    store = Store(clean_db)
    make_run(store, "r6", "mine")
    make_run(store, "r7", "")  # already ended
    leases = Leases(lambda: store, 0.3)
    far = int((time.time() + 60) * 1000)
    leases.hold("r6", "lease", "mine", far)
    leases.hold("r7", "lease", "gone", far)
    wait_for(lambda: leases.score("r7") == 0, timeout=10)
    assert leases.score("r6") not in (0, far)  # still held, renewed
    leases.release("r6", "lease")


def test_a_lease_taken_again_during_a_renewal_is_kept() -> None:
    """The renewal of an old token comes back lost while a newer pass in the same
    process already holds the run with a new token: the new hold is untouched."""
    from fanout._celery.leases import Leases

    leases = Leases(lambda: None, 30.0)  # type: ignore[arg-type, return-value]
    with leases._lock:
        leases._held[("r8", "lease")] = ("new", 111)
        leases._held[("r9", "lease")] = ("new", 222)
    leases._renewed([("r8", "lease", "old"), ("r9", "lease", "old")], {("r8", "lease")}, 999)
    assert leases._held[("r8", "lease")] == ("new", 111)
    assert leases._held[("r9", "lease")] == ("new", 222)
    leases._renewed([("r9", "lease", "new")], set(), 999)
    assert leases._held[("r9", "lease")] == ("new", 999)
    leases._renewed([("r9", "lease", "new")], {("r9", "lease")}, 1000)
    assert ("r9", "lease") not in leases._held
