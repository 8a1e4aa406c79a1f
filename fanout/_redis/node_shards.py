"""Shards a run script may write beside its run hash on a Redis Cluster.

A script's declared keys must share one slot (the run's, ``{<run id>}``), so a key of
another slot is named by appending it to the run hash's name (``KEYS[i]`` = run key +
shard name; the script takes it apart, ``lua/_predicates.lua``), and the scripts carry
the flag ``allow-cross-slot-keys`` (``cluster.CROSS_SLOT``, Redis 7.0 or later), which
lets them touch such a key as long as the node serving the run holds it.  Two families
are written this way:

- the metrics hashes ``P:metrics:{m<k>.<i>}`` (``metric_shards.py``), and
- the timer sets ``P:timers:{T<k>.<i>}``: a run's timer lives in a set on the run's own
  node, so the script that moves the run moves its timer too and a pass is one
  ``EVALSHA`` to one node (``keyspace.Keyspace.timer_key``).

:class:`NodeShards` picks, for a key, one of the shards on the node serving that key, by
the client's slot map.  The map can be stale (slots resharded since the client read it):
the script then fails before it writes anything (it reads each such key first, so Redis
refuses it at once with "non local key"), the store calls :meth:`NodeShards.refresh`,
which reads the map again (at most once a second), and sends the operation the way it
goes when no shard is local: the script alone on the run's slot, and the other key's
write beside it in the same pipeline.
"""

from __future__ import annotations

import logging
import time
import zlib
from typing import Any

import redis
from redis.crc import key_slot

log = logging.getLogger("fanout")

#: The node each shard lives on is read again from the client's map this often (s):
#: redis-py moves single slots in its map in place after a MOVED reply.
REMAP_EVERY = 5.0


def non_local(exc: BaseException) -> bool:
    """A script refused because it named a key its node does not serve."""
    return isinstance(exc, redis.exceptions.ResponseError) and "non local key" in str(exc)


class NodeShards:
    """Picks the shard on the node that serves a given key."""

    def __init__(self, client: Any, shards: list[str], what: str, without: str) -> None:
        self.client = client
        self.shards = list(shards)
        self.what = what
        self.without = without  # what becomes of a run whose node holds no shard
        self._slots = [key_slot(s.encode()) for s in self.shards]
        self._by_node: dict[str, list[str]] = {}
        self._mapped_from: object = None
        self._mapped_at = float("-inf")
        self._refreshed = float("-inf")
        self._told = float("-inf")
        self._warned = False

    def _cache(self) -> Any:
        return self.client.nodes_manager.slots_cache

    def _node(self, cache: Any, slot: int) -> str | None:
        nodes = cache.get(slot)
        return str(nodes[0].name) if nodes else None

    def _map(self) -> dict[str, list[str]]:
        cache, now = self._cache(), time.monotonic()
        if cache is not self._mapped_from or now - self._mapped_at >= REMAP_EVERY:
            by_node: dict[str, list[str]] = {}
            for shard, slot in zip(self.shards, self._slots, strict=True):
                node = self._node(cache, slot)
                if node is not None:
                    by_node.setdefault(node, []).append(shard)
            self._by_node, self._mapped_from, self._mapped_at = by_node, cache, now
        return self._by_node

    def local(self, key: str, spread: str | None = None) -> str | None:
        """A shard on the node that serves ``key``, chosen among that node's shards by
        ``spread`` (default ``key``); None when that node holds none."""
        by_node = self._map()
        node = self._node(self._cache(), key_slot(key.encode()))
        mine = by_node.get(node) if node is not None else None
        if not mine:
            if not self._warned:
                self._warned = True
                log.warning("fanout: the cluster node %s holds none of the %d %s shards; "
                            "%s", node, len(self.shards), self.what, self.without)
            return None
        return mine[zlib.crc32((spread if spread is not None else key).encode()) % len(mine)]

    def script_key(self, key: str, spread: str | None = None) -> str | None:
        """A ``KEYS`` entry of a run script on ``key``: ``key`` then the local shard's
        name (None when the node holds none)."""
        shard = self.local(key, spread)
        return None if shard is None else key + shard

    def any(self, name: str) -> str:
        """A shard for a plain write about ``name``."""
        return self.shards[zlib.crc32(name.encode()) % len(self.shards)]

    def refresh(self) -> None:
        """Read the cluster's slot map again (a script found it stale); at most once a
        second per process."""
        now = time.monotonic()
        if now - self._refreshed < 1.0:
            return
        self._refreshed = now
        if now - self._told >= 60.0:  # a reshard moving many slots: said once a minute
            self._told = now
            log.warning("fanout: a script named a %s shard its node no longer serves "
                        "(slots moved); reading the cluster's slot map again", self.what)
        try:
            self.client.nodes_manager.initialize()
        except redis.RedisError as exc:  # the operation goes on by the other path
            log.warning("fanout: reading the cluster's slot map failed: %s", exc)
        self._mapped_from = None


__all__ = ["NodeShards", "REMAP_EVERY", "non_local"]
