"""On a Redis Cluster a run's timer lives on the run's own node, and the scripts of a
pass move it themselves: a pass is one ``EVALSHA`` to one node, as on one Redis.

The run-store stories of ``tests/unit/test_run_store_contract.py`` are played on a
local 3-master cluster and must answer as the in-memory store does, replies, run hash
and timers alike: once with the client's slot map right (the scripts move the timers),
and once with it wrong about where the timer sets live, as after slots moved. Then each
script is refused before it writes anything ("non local key"), the store reads the slot
map again and sends the script and the timer's write in one pipeline instead.
"""

from __future__ import annotations

import time
import uuid
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from fanout._core.memory_store import MemoryRunStore
from fanout._redis.store import Store
from tests.scenarios.test_cluster import Cluster, build
from tests.unit.test_run_store_contract import LEASE_MS, RUN, STORIES, _play, fields

PASS_OPS = ("begin_pass", "end_pass", "go_on", "finish_run")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    yield c
    c.stop()


def _store(cluster: Cluster) -> Store:
    _, fo = build(cluster.url)
    store = Store(fo.runtime.store.r, prefix=f"ct{uuid.uuid4().hex[:6]}")
    assert store.timer_sets is not None, "the cluster's scripts cannot name the timer sets"
    return store


def _node(store: Store, key: str) -> str:
    return str(store.r.nodes_manager.slots_cache[key_slot(key.encode())][0].name)


class _Counted:
    """Counts the pipelines the store opens (a pass that moves its timer in its script
    opens none)."""

    def __init__(self, store: Store) -> None:
        self.store, self.pipelines, self.inner = store, 0, store.r.pipeline

    def __call__(self, *a: Any, **kw: Any) -> Any:
        self.pipelines += 1
        return self.inner(*a, **kw)


@pytest.mark.parametrize("name", list(STORIES))
def test_a_pass_moves_the_runs_timer_on_its_own_node(cluster: Cluster, name: str) -> None:
    store = _store(cluster)
    home = store.keys.timer_key(RUN)
    assert _node(store, home) == _node(store, store.keys.run(RUN))
    counted = _Counted(store)
    ops = {op: getattr(store, op) for op in PASS_OPS}

    def no_pipeline(op: str) -> Any:
        def call(*a: Any, **kw: Any) -> Any:
            before = counted.pipelines
            out = ops[op](*a, **kw)
            assert counted.pipelines == before, f"{op} used a pipeline"
            return out
        return call

    routed: list[Any] = []
    inner_execute = store.r.execute_command

    def execute_command(*a: Any, **kw: Any) -> Any:
        routed.append(a[0])
        return inner_execute(*a, **kw)

    store.r.pipeline = counted  # type: ignore[method-assign]
    store.r.execute_command = execute_command  # type: ignore[method-assign]
    for op in PASS_OPS:
        setattr(store, op, no_pipeline(op))
    assert _play(store, STORIES[name]) == _play(MemoryRunStore(), STORIES[name])
    # Every script went straight to its node's connection, none through the cluster
    # client's routing (Scripts.run, cluster.node_client).
    assert "EVALSHA" not in routed, routed
    held = {k for k in store.keys.timer_keys if store.r.zscore(k, RUN) is not None}
    assert held <= {home}, held


@pytest.mark.parametrize("name", list(STORIES))
def test_a_stale_slot_map_sends_the_timer_beside_the_script(
    cluster: Cluster, name: str
) -> None:
    store = _store(cluster)
    sets = store.timer_sets
    assert sets is not None
    run_node = _node(store, store.keys.run(RUN))
    elsewhere = next(s for s in store.keys.timer_shards if _node(store, s) != run_node)
    refreshed: list[int] = []
    real_refresh = sets.refresh

    def refresh() -> None:
        refreshed.append(1)
        real_refresh()

    # A map that places every timer set on every node: the script names a set its node
    # does not serve, as after a reshard the client has not seen yet.
    sets.local = lambda key, spread=None: elsewhere  # type: ignore[method-assign]
    sets.refresh = refresh  # type: ignore[method-assign]
    assert _play(store, STORIES[name]) == _play(MemoryRunStore(), STORIES[name])
    assert refreshed, "no script was refused: the stale map was not exercised"
    held = {k for k in store.keys.timer_keys if store.r.zscore(k, RUN) is not None}
    assert held <= {elsewhere}, held


def test_a_timer_placed_by_run_id_alone_moves_to_the_runs_node_when_it_fires(
    cluster: Cluster,
) -> None:
    """Timers armed by the previous version (the set by crc32 of the run id alone, on
    any node) are found, read, claimed when due and moved to their run's node."""
    store = _store(cluster)
    shards = store.keys.timer_shards
    runs = [f"up-{i}" for i in range(60)]
    by_id = {m: shards[zlib.crc32(m.encode()) % len(shards)] for m in runs}
    moved = [m for m in runs if by_id[m] != store.keys.timer_key(m)]
    assert len(moved) > 20, "about 2 in 3 runs live on another node than their old set"
    now_ms = int(time.time() * 1000)
    for m in moved:
        store.r.zadd(by_id[m], {m: now_ms - 5})
    assert store.timer_scores(moved) == [now_ms - 5] * len(moved)
    due, rearm, _ = store.claim_due(rearm_s=30)
    assert set(moved) <= set(due)
    store.retime(rearm, {m: now_ms + 9_000 for m in moved})
    for m in moved:
        home = store.keys.timer_key(m)
        assert _node(store, home) == _node(store, store.keys.run(m))
        assert store.r.zscore(home, m) == now_ms + 9_000
        assert store.r.zscore(by_id[m], m) is None


def test_scripts_flushed_from_every_node_are_loaded_again(cluster: Cluster) -> None:
    """As after a restart of every node: a script sent straight to its node answers
    NOSCRIPT, goes through the cluster client, which loads it, and the story answers as
    before."""
    store = _store(cluster)
    for port in cluster.ports:
        redis.Redis(port=port).script_flush()
    name = next(iter(STORIES))
    assert _play(store, STORIES[name]) == _play(MemoryRunStore(), STORIES[name])


def _move_slot(slot: int, src: int, dst: int, ports: list[int]) -> None:
    """Move one slot and its keys from the node on port ``src`` to the one on ``dst``
    (as ``redis-cli --cluster reshard`` does, one slot)."""
    s, d = redis.Redis(port=src), redis.Redis(port=dst)
    src_id, dst_id = (text.decode() for text in (s.execute_command("CLUSTER", "MYID"),
                                                 d.execute_command("CLUSTER", "MYID")))
    d.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
    s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
    while keys := s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
        s.execute_command("MIGRATE", "127.0.0.1", dst, "", 0, 5000, "KEYS", *keys)
    for port in ports:
        redis.Redis(port=port).execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)


def test_a_pass_after_its_timer_set_moved_to_another_node() -> None:
    """Slots resharded under a running fleet: the set that holds a run's timer moves to
    another node. The next pass's script names it where it was and is refused before
    writing; the store reads the slot map again, the pass ends, and the run's timer is
    armed in a set on the run's node again."""
    c = Cluster()
    try:
        store = _store(c)
        assert _play(store, STORIES[next(iter(STORIES))])  # the scripts are loaded
        rid = "moving"
        store.create_runs([(rid, "a:f", fields())])
        assert store.begin_pass(rid, "t1", LEASE_MS, 0).head == "ok"
        home = store.keys.timer_key(rid)
        assert store.r.zscore(home, rid) == LEASE_MS
        run_port = int(_node(store, home).rsplit(":", 1)[1])
        other = next(p for p in c.ports if p != run_port)
        _move_slot(key_slot(home.encode()), run_port, other, c.ports)
        # The client still places the set on the run's node.
        assert store.keys.timer_key(rid) == home
        due = (int(time.time()) + 60) * 1000
        ended = store.end_pass(rid, "t1", "sleeping", wake=due / 1000)
        assert ended.seq == 1
        new_home = store.keys.timer_key(rid)
        assert new_home != home
        assert _node(store, new_home) == _node(store, store.keys.run(rid))
        assert store.r.zscore(new_home, rid) == due
        # The lease's timer left in the moved set fires later as a stale offer; the
        # next scan that claims it moves it home (test_timer_shards).
        assert store.r.zscore(home, rid) == LEASE_MS
        assert store.run_fields(rid)["seq"] == "1"
    finally:
        c.stop()
