"""The timer shards against a real Redis: members spread over ``P:timers:{t<k>}`` by
run id (a run's branch timers with it), one scan claims from every shard, and the
single ``P:timers`` set of earlier versions is drained into the shards."""

from __future__ import annotations

import time

import redis
from redis.crc import key_slot

from fanout._redis.keyspace import CLUSTER_TIMER_SHARDS, TIMER_SHARDS, Keyspace
from fanout._redis.store import Store
from fanout._redis.timer_sets import OLD_SETS_EVERY


def test_members_spread_over_the_shards_and_a_run_keeps_one_shard() -> None:
    keys = Keyspace("p")
    used = {keys.timer_key(f"run-{i}") for i in range(400)}
    assert len(used) == TIMER_SHARDS
    assert all(k.startswith("p:timers:{t") and k.endswith("}") for k in used)
    assert keys.timer_key("branch:run-7:step-a") == keys.timer_key("run-7")
    assert keys.timer_key("route:b1") == keys.timer_key("b1")
    assert keys.timers not in keys.timer_shards and keys.timer_keys[-1] == keys.timers


def test_one_scan_claims_due_timers_of_every_shard(clean_db: redis.Redis) -> None:
    store = Store(clean_db)
    past, later = time.time() - 1, time.time() + 60
    for i in range(64):
        store.arm(f"r{i}", past)
    store.arm("not-yet", later)
    due, rearm, nxt = store.claim_due(rearm_s=30, limit=64 * TIMER_SHARDS)
    assert sorted(due) == sorted(f"r{i}" for i in range(64))
    assert nxt == rearm / 1000  # the claimed ones, pushed back until re-timed
    store.drop_claimed(due, rearm)
    assert sum(clean_db.zcard(k) for k in store.keys.timer_keys) == 1
    assert store.timer_counts([]) == (0, 0, None)


def test_the_old_single_set_is_drained_into_the_shards(clean_db: redis.Redis) -> None:
    store = Store(clean_db)
    legacy = store.keys.timers
    now_ms = int(time.time() * 1000)
    clean_db.zadd(legacy, {"old-gone": now_ms - 5, "old-kept": now_ms - 5,
                           "old-later": now_ms + 60_000})
    due, rearm, _ = store.claim_due(rearm_s=30)
    assert sorted(due) == ["old-gone", "old-kept"]
    store.retime(rearm, {"old-gone": None, "old-kept": now_ms + 9_000})
    assert clean_db.zrange(legacy, 0, -1) == [b"old-later"]
    assert clean_db.zscore(store.timer_key("old-kept"), "old-kept") == now_ms + 9_000
    assert clean_db.zscore(store.timer_key("old-gone"), "old-gone") is None
    # The members the scan did not re-time stay where they are, to be claimed again.
    assert store.timer_scores(["old-later", "old-kept", "none"]) == [
        now_ms + 60_000, now_ms + 9_000, None]


def _calls(r: redis.Redis) -> dict[str, int]:
    return {k.removeprefix("cmdstat_"): int(v["calls"])
            for k, v in r.info("commandstats").items()}


def test_a_scan_runs_the_claim_script_only_on_due_shards(clean_db: redis.Redis) -> None:
    """An idle scan reads each set's earliest timer (one ZRANGE each, no script); a
    timer armed meanwhile by another process is claimed in the same scan; a set the
    last scan left due is claimed without being read first."""
    store = Store(clean_db, prefix="scan")
    store.timer_peek_every = 0  # every scan reads every set (see the test below)
    store.arm("later", time.time() + 3600)
    store.claim_due(rearm_s=30)
    clean_db.config_resetstat()
    due, _rearm, nxt = store.claim_due(rearm_s=30)
    calls = _calls(clean_db)
    assert due == [] and nxt is not None and nxt > time.time() + 3000
    assert calls.get("zrange") == len(store.keys.timer_shards)  # the old set: 1 scan in 8
    assert "evalsha" not in calls and "zrangebyscore" not in calls
    # Armed elsewhere (as a pass arms its lease), due now: found by this scan's read.
    clean_db.zadd(store.timer_key("r1"), {"r1": int(time.time() * 1000) - 5})
    clean_db.config_resetstat()
    due, rearm, _ = store.claim_due(rearm_s=30)
    assert due == ["r1"] and _calls(clean_db).get("evalsha") == 1
    store.drop_claimed(due, rearm)
    # More due in one set than a scan claims there: the next scan claims it first.
    for i in range(3):
        clean_db.zadd(store.timer_key("r1"), {f"branch:r1:s{i}": 1})
    due, rearm, _ = store.claim_due(rearm_s=30, limit=TIMER_SHARDS)  # one per set
    assert len(due) == 1
    clean_db.config_resetstat()
    again, _rearm2, _ = store.claim_due(rearm_s=30, limit=TIMER_SHARDS)
    assert len(again) == 1 and set(again).isdisjoint(due)
    calls = _calls(clean_db)
    # One script (on that set), a read of each other set, and the script's own ZRANGE.
    assert calls.get("evalsha") == 1
    assert calls.get("zrange") == (len(store.keys.timer_shards) - 1) + 1


def test_a_cluster_has_48_shards_and_drains_the_16_of_earlier_versions(
        clean_db: redis.Redis) -> None:
    """On a cluster the timers spread over 48 sets, the k-th in the k-th 48th of the
    slots (16 on each of 3 masters); the 16 sets of one Redis (and of earlier versions
    on a cluster) are drained: a timer left there is found, and moved to its new set
    when claimed."""
    keys, one = Keyspace("p", cluster=True), Keyspace("p")
    assert len(keys.timer_shards) == CLUSTER_TIMER_SHARDS
    # The masters of a 3-node cluster as redis-cli --cluster create splits the slots.
    masters = [0 if s <= 5460 else 1 if s <= 10922 else 2
               for s in (key_slot(k.encode()) for k in keys.timer_shards)]
    assert masters == [0] * 16 + [1] * 16 + [2] * 16
    assert keys.old_timer_keys == [*one.timer_shards, keys.timers]
    assert set(keys.timer_shards).isdisjoint(keys.old_timer_keys)
    assert len({keys.timer_key(f"run-{i}") for i in range(3000)}) == CLUSTER_TIMER_SHARDS
    store = Store(clean_db, prefix="p")
    store.keys = keys  # as on a cluster
    moved = [f"run-{i}" for i in range(3)]
    now_ms = int(time.time() * 1000)
    old = {m: one.timer_key(m) for m in moved}
    assert all(keys.timer_homes(m) == [keys.timer_key(m), old[m], keys.timers] for m in moved)
    for m in moved:
        clean_db.zadd(old[m], {m: now_ms - 5})
    later = "branch:" + moved[2] + ":s"
    clean_db.zadd(old[moved[2]], {later: now_ms + 60_000})
    assert store.timer_scores(moved) == [now_ms - 5] * 3
    due, rearm, _ = store.claim_due(rearm_s=30)
    assert sorted(due) == sorted(moved)
    store.retime(rearm, {moved[0]: now_ms + 9_000, moved[1]: None, moved[2]: now_ms + 7_000})
    assert clean_db.zscore(keys.timer_key(moved[0]), moved[0]) == now_ms + 9_000
    assert clean_db.zscore(keys.timer_key(moved[2]), moved[2]) == now_ms + 7_000
    assert all(clean_db.zscore(old[m], m) is None for m in moved)
    assert clean_db.zscore(keys.timer_key(moved[1]), moved[1]) is None
    # Not claimed (not due): stays in its old set until then, and is found there.
    assert store.timer_scores([later]) == [now_ms + 60_000]


def test_the_old_sets_are_read_every_eighth_scan_or_while_due(clean_db: redis.Redis) -> None:
    """Nothing is armed in the sets of earlier versions: an idle scan reads them once in
    OLD_SETS_EVERY scans; one that still holds due timers is read on every scan."""
    store = Store(clean_db, prefix="old")
    store.keys = Keyspace("old", cluster=True)
    store.timer_peek_every = 0
    reads: list[int] = []
    for _ in range(2 * OLD_SETS_EVERY):
        clean_db.config_resetstat()
        store.claim_due(rearm_s=30)
        reads.append(_calls(clean_db).get("zrange", 0))
    shards, every = len(store.keys.timer_shards), len(store.keys.timer_keys)
    assert reads == ([every] + [shards] * (OLD_SETS_EVERY - 1)) * 2
    # A backlog in an old set: claimed on every scan until it is gone.
    now_ms = int(time.time() * 1000)
    clean_db.zadd(store.keys.timers, {f"r{i}": now_ms - 5 for i in range(40)})
    got: list[str] = []
    for _ in range(OLD_SETS_EVERY + 2):
        due, rearm, _ = store.claim_due(rearm_s=30, limit=CLUSTER_TIMER_SHARDS * 10)
        store.drop_claimed(due, rearm)
        got += due
    assert sorted(got) == sorted(f"r{i}" for i in range(40))
    assert clean_db.zcard(store.keys.timers) == 0


def test_a_scan_right_after_another_claims_only_where_due(clean_db: redis.Redis) -> None:
    """Under load the thread scans again at once while timers are due: such a scan
    claims from the sets known due only; every set is read again once
    ``timer_peek_every`` has passed, so a timer armed elsewhere is found then."""
    store = Store(clean_db, prefix="busy")
    store.timer_peek_every = 3600.0
    now_ms = int(time.time() * 1000)
    for i in range(3):
        clean_db.zadd(store.timer_key("r1"), {f"branch:r1:s{i}": now_ms - 5})
    due, rearm, _ = store.claim_due(rearm_s=30, limit=TIMER_SHARDS)  # reads every set
    assert len(due) == 1
    clean_db.zadd(store.timer_key("r2"), {"r2": now_ms - 5})  # armed elsewhere
    assert store.timer_key("r2") != store.timer_key("r1")
    clean_db.config_resetstat()
    again, _r, _ = store.claim_due(rearm_s=30, limit=TIMER_SHARDS)
    calls = _calls(clean_db)
    assert len(again) == 1 and again[0].startswith("branch:r1:")
    assert calls.get("evalsha") == 1 and calls.get("zrange") == 1  # the script's own
    store.timer_peek_every = 0  # the interval has passed: every set is read again
    found, _r, _ = store.claim_due(rearm_s=30, limit=TIMER_SHARDS * 4)
    assert "r2" in found


def test_a_failed_scan_is_not_followed_by_one_that_sends_nothing(clean_db: redis.Redis) -> None:
    # Through an outage the timer thread must keep failing until Redis is back: a scan
    # right after a failed one reads every set again, rather than reading only the sets
    # known due (none) and passing for a scan that reached Redis.
    store = Store(clean_db)
    store.claim_due(rearm_s=30)  # a good scan: every set read, nothing due
    sent: list[int] = []
    real = store._execute_claims

    def broken(pipe: object, keys: list[str]) -> list[object]:
        raise redis.ConnectionError("down")

    store._execute_claims = broken  # type: ignore[method-assign]
    store._timer_peeked = float("-inf")
    try:
        store.claim_due(rearm_s=30)
    except redis.ConnectionError:
        pass
    else:
        raise AssertionError("the scan did not reach the broken pipeline")

    def counting(pipe: object, keys: list[str]) -> list[object]:
        sent.append(len(pipe))  # type: ignore[arg-type]
        return real(pipe, keys)  # type: ignore[arg-type]

    store._execute_claims = counting  # type: ignore[method-assign]
    store.claim_due(rearm_s=30)  # at once, within the peek interval
    assert sent and sent[0] >= len(store.keys.timer_shards)
