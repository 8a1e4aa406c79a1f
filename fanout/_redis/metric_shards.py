"""The metrics hash on a Redis Cluster: one hash per slot range, summed by readers.

On one Redis the counters live in one hash, ``P:metrics``, which the run scripts
name as ``KEYS[2]``.  On a cluster a script's declared keys must share the run's
slot, and one global hash would also take every count on one node.  So the counts
go to :data:`~fanout._redis.keyspace.METRICS_SHARDS` hashes ``P:metrics:{m<k>.<i>}``,
the k-th in the k-th sixteenth of the slots (``keyspace.metrics_shard_tags``): on a
cluster whose masters hold contiguous ranges of at least 1,024 slots, every master
holds one or more of them.

A run script counts into a shard on the run's own node, at no extra command: the
store passes ``KEYS[2]`` = the run hash's name followed by the shard's name (in the
run's slot, so redis-py and Redis route the call by it), the script takes the
shard's name from it (``lua/_predicates.lua``) and writes it, which the flag
``allow-cross-slot-keys`` allows for a key of the same node (``cluster.CROSS_SLOT``).
The counts stay exact and atomic with the change of state they count.  A run whose
node holds no shard (more than 16 masters, or an uneven slot layout) is not counted,
and a warning says so once per process.  The plain writers (the events counter and
the duration histograms, sent once a second) pick any shard.  Readers ``HGETALL``
every shard and add the fields up (:func:`merged`).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

from redis.crc import key_slot

from .replies import text

log = logging.getLogger("fanout")


class MetricShards:
    """Picks the metrics shard a script on a given key can write."""

    def __init__(self, client: Any, shards: list[str]) -> None:
        self.client = client
        self.shards = list(shards)
        self._slots = [key_slot(s.encode()) for s in self.shards]
        self._warned = False

    def _node(self, slot: int) -> str | None:
        nodes = self.client.nodes_manager.slots_cache.get(slot)
        return str(nodes[0].name) if nodes else None

    def local(self, key: str) -> str | None:
        """A shard on the node that serves ``key`` (by the client's slot map), spread
        by ``key`` over the node's shards; None when that node holds none."""
        node = self._node(key_slot(key.encode()))
        mine = [s for s, slot in zip(self.shards, self._slots, strict=True)
                if node is not None and self._node(slot) == node]
        if not mine:
            if not self._warned:
                self._warned = True
                log.warning("fanout: the cluster node %s holds none of the %d metrics "
                            "shards; its runs are not counted", node, len(self.shards))
            return None
        return mine[zlib.crc32(key.encode()) % len(mine)]

    def script_key(self, key: str) -> str | None:
        """``KEYS[2]`` of a run script on ``key``: ``key`` then the local shard's name."""
        shard = self.local(key)
        return None if shard is None else key + shard

    def any(self, name: str) -> str:
        """A shard for a plain write about ``name``."""
        return self.shards[zlib.crc32(name.encode()) % len(self.shards)]


def merged(hashes: Iterable[Mapping[Any, Any]]) -> dict[str, str]:
    """``HGETALL`` replies of several metrics hashes as one: each field's values added
    (as integers when they all are, else as floats)."""
    out: dict[str, str] = {}
    for raw in hashes:
        for k, v in raw.items():
            name, value = text(k), text(v)
            if name not in out:
                out[name] = value
                continue
            try:
                out[name] = str(int(out[name]) + int(value))
            except ValueError:
                try:
                    out[name] = repr(float(out[name]) + float(value))
                except ValueError:
                    continue
    return out


__all__ = ["MetricShards", "merged"]
