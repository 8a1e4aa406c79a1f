"""Redis Cluster as the state store: ``redis+cluster://host:port`` (or ``rediss+cluster://``).

Every key of one run shares a hash tag (``{run id}``) and every Lua script declares
only keys of one slot, so each script is routed to one node.  Scripts go as
``EVALSHA``: one run alone goes straight to the primary of its first key's slot, by
the cluster client's slot map (:func:`node_client`), and through the cluster client's
own routing only on a redirect, ``NOSCRIPT`` or a lost connection
(:data:`VIA_CLUSTER`).  Pipelines mix keys of several slots: one is split by the same
map into a plain pipeline per node (:meth:`_Pipeline.execute`), and only what a node
refuses goes through the cluster client's routing;
:meth:`~fanout._redis.scripts.Scripts.execute` loads every script on every primary
after a ``NOSCRIPT`` (e.g. a restarted node).

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


#: Commands whose only key is their first argument: a pipeline of these (and of
#: scripts) is sent straight to the nodes' connections (:meth:`_Pipeline.execute`).
_ONE_KEY = frozenset(
    b"EXPIRE GET HDEL HGET HGETALL HINCRBY HMGET HSET INCRBY LINDEX LPUSH LTRIM SADD "
    b"SCARD SET SMEMBERS SREM ZADD ZCARD ZCOUNT ZMSCORE ZRANGE ZRANGEBYSCORE ZREM "
    b"ZREMRANGEBYRANK ZREMRANGEBYSCORE ZREVRANGE ZREVRANGEBYSCORE ZSCORE".split()
)
_ONE_KEY_ALONE = frozenset((b"DEL", b"EXISTS", b"UNLINK"))  # when they name one key
_SCRIPT = frozenset((b"EVALSHA", b"EVAL"))


def _first_key(args: tuple[Any, ...]) -> str | bytes | None:
    """The key that routes a pipelined command, or None for one this module does not
    route itself (several keys, no key, or a command it does not know)."""
    name = args[0]
    name = (name.encode() if isinstance(name, str) else bytes(name)).upper()
    if name in _SCRIPT:
        return args[3] if len(args) > 3 and int(args[2]) > 0 else None
    if name in _ONE_KEY or (name in _ONE_KEY_ALONE and len(args) == 2):
        key = args[1]
        return key if isinstance(key, (str, bytes)) else None
    return None


def _by_node(client: Any, commands: list[Any]) -> dict[int, tuple[Redis, list[int]]] | None:
    """The queued commands grouped by the primary that serves each one's key, by the
    cluster client's slot map; None when one of them cannot be routed that way."""
    groups: dict[int, tuple[Redis, list[int]]] = {}
    for i, command in enumerate(commands):
        key = _first_key(command.args)
        node = None if key is None else node_client(
            client, key if isinstance(key, str) else key.decode())
        if node is None:
            return None
        groups.setdefault(id(node), (node, []))[1].append(i)
    return groups


class _Pipeline(ClusterPipeline):
    def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Send the queued commands straight to the connections of their nodes, one
        plain pipeline per node (the cluster client's own routing costs about as much
        Python again per command). A command a node refuses with a redirect,
        ``TRYAGAIN``, ``CLUSTERDOWN`` or ``NOSCRIPT``, and every command of a node whose
        connection failed, goes again through the cluster client's pipeline, which
        follows the redirect, reads the slot map again or reports the error. A
        pipeline holding a command this module does not route (several keys, a
        transaction) goes through the cluster client whole."""
        strategy = getattr(self, "_execution_strategy", None)
        commands = getattr(strategy, "command_queue", None)
        plain = type(strategy).__name__ == "PipelineStrategy"  # not a transaction
        groups = _by_node(self, commands) if commands and plain else None
        if groups is None:
            return list(super().execute(raise_on_error))
        assert commands is not None
        try:
            return self._send_by_node(commands, groups, raise_on_error)
        finally:
            self.reset()  # type: ignore[no-untyped-call]

    def _send_by_node(self, commands: list[Any], groups: dict[int, tuple[Redis, list[int]]],
                      raise_on_error: bool) -> list[Any]:
        replies: list[Any] = [None] * len(commands)
        again: list[int] = []
        for node, positions in groups.values():
            pipe = node.pipeline(transaction=False)
            for i in positions:
                pipe.execute_command(*commands[i].args, **commands[i].options)  # type: ignore[no-untyped-call]
            try:
                got = pipe.execute(raise_on_error=False)
            except VIA_CLUSTER:
                again += positions
                continue
            for i, reply in zip(positions, got, strict=True):
                if isinstance(reply, VIA_CLUSTER):
                    again.append(i)
                else:
                    replies[i] = reply
        if again:
            again.sort()
            self.reset()  # type: ignore[no-untyped-call]
            for i in again:
                self.execute_command(*commands[i].args, **commands[i].options)  # type: ignore[no-untyped-call]
            # With the caller's raise_on_error: redis-py retries a pipeline that raised
            # CLUSTERDOWN or a lost connection (a failover under way), not one that
            # returns the error in place.
            sent = ClusterPipeline.execute(self, raise_on_error=raise_on_error)
            for i, reply in zip(again, sent, strict=True):
                replies[i] = reply
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
        return replies

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
