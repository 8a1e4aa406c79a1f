"""On a Redis Cluster the store's pipelines go straight to the nodes' connections, one
plain pipeline per node, by the cluster client's slot map (``cluster._Pipeline``).

Played on a local 3-master cluster: the replies come back in the order the commands
were queued and equal what the cluster client's own routing answers; a node that
refuses a command because its slot moved (the client's map is stale) has that command
sent again through the cluster client, which follows the redirect; errors are raised
or returned in place as a cluster pipeline does; a pipeline holding a command with
several keys goes through the cluster client whole.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.cluster import ClusterPipeline
from redis.crc import key_slot

from fanout._redis.cluster import cluster_connect
from tests.scenarios.test_cluster import Cluster
from tests.scenarios.test_cluster_timers import _move_slot


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    yield c
    c.stop()


class _ViaCluster:
    """Counts the commands the cluster client's own pipeline routing sends."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent = 0
        inner = ClusterPipeline.execute

        def execute(pipe: Any, raise_on_error: bool = True) -> Any:
            self.sent += len(pipe)
            return inner(pipe, raise_on_error)

        monkeypatch.setattr(ClusterPipeline, "execute", execute)


def _queue(pipe: Any, tag: str) -> None:
    for i in range(40):
        key = f"p:{tag}:{{k{i}}}"
        pipe.hset(key, mapping={"a": str(i), "b": "x"})
        pipe.hincrby(key, "n", i)
        pipe.hmget(key, "a", "n", "missing")
        pipe.zadd(f"{key}:z", {"m": i}, nx=True)
        pipe.zrange(f"{key}:z", 0, -1, withscores=True)
        pipe.expire(key, 600)
        pipe.delete(f"{key}:gone")


def test_replies_in_order_as_the_cluster_client_answers(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = cluster_connect(cluster.url)
    tag = uuid.uuid4().hex[:6]
    expected = ClusterPipeline.execute(_filled(client.pipeline(transaction=False), f"{tag}a"))
    via = _ViaCluster(monkeypatch)
    pipe = _filled(client.pipeline(transaction=False), f"{tag}b")
    assert len(pipe) == 280
    got = pipe.execute()
    assert via.sent == 0, "the pipeline went through the cluster client's routing"
    assert got == expected
    assert len(pipe) == 0, "the pipeline is empty again after execute"
    nodes = {client.nodes_manager.slots_cache[key_slot(f"p:{tag}b:{{k{i}}}".encode())][0].name
             for i in range(40)}
    assert len(nodes) == 3, "the keys spread over every node"


def _filled(pipe: Any, tag: str) -> Any:
    _queue(pipe, tag)
    return pipe


def test_a_command_whose_slot_moved_follows_the_redirect(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = cluster_connect(cluster.url)
    tag = uuid.uuid4().hex[:6]
    moving = f"p:{tag}:{{moving}}"
    slot = key_slot(moving.encode())
    src = int(client.nodes_manager.slots_cache[slot][0].port)
    dst = next(p for p in cluster.ports if p != src)
    client.set(moving, "before")
    _move_slot(slot, src, dst, cluster.ports)
    # The client has not seen the move: it still sends the slot to ``src``.
    assert int(client.nodes_manager.slots_cache[slot][0].port) == src
    via = _ViaCluster(monkeypatch)
    pipe = client.pipeline(transaction=False)
    pipe.get(moving)
    pipe.set(moving, "after")
    for i in range(10):
        pipe.set(f"p:{tag}:{{still{i}}}", i)
    assert pipe.execute() == [b"before", True] + [True] * 10
    assert via.sent == 2, "only the moved slot's commands went through the cluster client"
    assert redis.Redis(port=dst).get(moving) == b"after"
    assert int(client.nodes_manager.slots_cache[slot][0].port) == dst


def test_errors_are_raised_or_returned_in_place(cluster: Cluster) -> None:
    client = cluster_connect(cluster.url)
    tag = uuid.uuid4().hex[:6]
    client.set(f"p:{tag}:{{s}}", "text")
    pipe = client.pipeline(transaction=False)
    pipe.set(f"p:{tag}:{{a}}", 1)
    pipe.hset(f"p:{tag}:{{s}}", "f", "v")  # WRONGTYPE
    pipe.get(f"p:{tag}:{{a}}")
    replies = pipe.execute(raise_on_error=False)
    assert replies[0] is True and replies[2] == b"1"
    assert isinstance(replies[1], redis.ResponseError) and "WRONGTYPE" in str(replies[1])
    pipe.set(f"p:{tag}:{{b}}", 2)
    pipe.hset(f"p:{tag}:{{s}}", "f", "v")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        pipe.execute()
    assert client.get(f"p:{tag}:{{b}}") == b"2", "the commands before the error ran"
    assert len(pipe) == 0


def test_a_command_with_several_keys_sends_the_pipeline_through_the_cluster_client(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = cluster_connect(cluster.url)
    tag = uuid.uuid4().hex[:6]
    via = _ViaCluster(monkeypatch)
    pipe = client.pipeline(transaction=False)
    pipe.zadd(f"p:{tag}:{{u}}:a", {"x": 1})
    pipe.zadd(f"p:{tag}:{{u}}:b", {"y": 2})
    pipe.zunionstore(f"p:{tag}:{{u}}:c", [f"p:{tag}:{{u}}:a", f"p:{tag}:{{u}}:b"])
    assert pipe.execute() == [1, 1, 2]
    assert via.sent == 3
