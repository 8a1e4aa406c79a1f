"""Redis Cluster as the state store: ``redis+cluster://host:port`` (or ``rediss+cluster://``).

Every key of one run shares a hash tag (``{run id}``) and every Lua script touches
only the keys it is given, so each script runs on one slot.  Pipelines mix keys
of several slots; redis-py splits them per node.  redis-py refuses ``EVALSHA`` in
a cluster pipeline, so there the script's source is sent with ``EVAL`` (each node
caches compiled scripts).
"""

from __future__ import annotations

from typing import Any

from redis.cluster import ClusterPipeline, RedisCluster

from .replies import text

CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")


class _Pipeline(ClusterPipeline):
    sources: dict[str, str] = {}

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        return self.execute_command(  # type: ignore[no-untyped-call]
            "EVAL", self.sources[sha], numkeys, *keys_and_args
        )


class _Client(RedisCluster):
    def register_script(self, script: Any) -> Any:
        registered = super().register_script(script)
        _Pipeline.sources[registered.sha] = text(script)
        return registered

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)  # type: ignore[no-untyped-call]
        pipe.__class__ = _Pipeline
        return pipe


def cluster_connect(url: str) -> Any:
    """A Redis Cluster client seeded from any node in ``url``."""
    return _Client.from_url(
        url.replace("+cluster", "", 1), health_check_interval=30, socket_keepalive=True
    )
