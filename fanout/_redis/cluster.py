"""Redis Cluster as the state store: ``redis+cluster://host:port`` (or ``rediss+cluster://``).

Every key of one run shares a hash tag (``{run id}``) and every Lua script declares
only keys of one slot, so each script is routed to one node.  Pipelines mix keys of
several slots; redis-py splits them per node.  Scripts go as ``EVALSHA``: one run
alone goes straight to the primary of its first key's slot, by the cluster client's
slot map (:func:`node_client`), and through the cluster client's own routing only on
a redirect, ``NOSCRIPT`` or a lost connection (:data:`VIA_CLUSTER`); in a pipeline
redis-py routes it, and :meth:`~fanout._redis.scripts.Scripts.execute` loads every
script on every primary after a ``NOSCRIPT`` (e.g. a restarted node).

When every primary runs Redis 7.0 or later, every script is loaded with the flag
``allow-cross-slot-keys`` (:data:`CROSS_SLOT`): a run script then also writes the
metrics shard and the timer set that live on the run's node (``node_shards.py``).
"""

from __future__ import annotations

from typing import Any

from redis import Redis
from redis.cluster import ClusterPipeline, RedisCluster
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ConnectionError,
    NoScriptError,
    TimeoutError,
    TryAgainError,
)

CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")

#: The first line of every script on a cluster whose primaries run Redis 7.0 or later.
CROSS_SLOT = "#!lua flags=allow-cross-slot-keys\n"

#: What a script sent straight to its node (:func:`node_client`) gives up on, to go
#: through the cluster client instead, which follows the redirect (a MOVED is an
#: AskError), reads the slot map again, loads the script or waits out a failover. A
#: redirect or NOSCRIPT means the script did not run; a connection lost or timed out
#: after sending is retried the same way by the cluster client itself.
VIA_CLUSTER = (AskError, TryAgainError, ClusterDownError, NoScriptError, ConnectionError,
               TimeoutError)


def node_client(client: Any, key: str) -> Redis | None:
    """The plain client of the primary that serves ``key`` by the cluster client's slot
    map (None when the map has no node for it). A script sent through it skips the
    cluster client's routing, which costs more Python than the call itself."""
    nodes = client.nodes_manager.slots_cache.get(key_slot(key.encode()))
    conn = nodes[0].redis_connection if nodes else None
    return conn if isinstance(conn, Redis) else None


class _Pipeline(ClusterPipeline):
    @property
    def command_stack(self) -> list[tuple[Any, Any]]:
        """The queued commands as (args, options), like a plain pipeline's stack
        (a cluster pipeline keeps them elsewhere; Scripts.execute re-sends them)."""
        return [(c.args, c.options) for c in self._execution_strategy.command_queue]

    @command_stack.setter
    def command_stack(self, stack: list[tuple[Any, Any]]) -> None:
        self._execution_strategy.command_queue = []  # type: ignore[misc]
        for args, options in stack:
            self.execute_command(*args, **options)  # type: ignore[no-untyped-call]


class _Client(RedisCluster):
    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)  # type: ignore[no-untyped-call]
        pipe.__class__ = _Pipeline
        return pipe


def cluster_connect(url: str) -> Any:
    """A Redis Cluster client seeded from any node in ``url``."""
    return _Client.from_url(
        url.replace("+cluster", "", 1), health_check_interval=30, socket_keepalive=True
    )


def counts_on_cluster(client: Any) -> bool:
    """Whether every primary runs Redis 7.0 or later (script flags; one INFO each)."""
    infos = client.info("server", target_nodes=RedisCluster.PRIMARIES)
    if isinstance(infos, dict) and "redis_version" in infos:
        infos = {"one": infos}
    versions = [str(i.get("redis_version", "0")) for i in infos.values()]
    return bool(versions) and all(int(v.split(".")[0]) >= 7 for v in versions)
