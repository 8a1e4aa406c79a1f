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

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from redis.crc import key_slot

from fanout._core.memory_store import MemoryRunStore
from fanout._redis.store import Store
from tests.scenarios.test_cluster import Cluster, build
from tests.unit.test_run_store_contract import RUN, STORIES, _play

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

    store.r.pipeline = counted  # type: ignore[method-assign]
    for op in PASS_OPS:
        setattr(store, op, no_pipeline(op))
    assert _play(store, STORIES[name]) == _play(MemoryRunStore(), STORIES[name])
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
