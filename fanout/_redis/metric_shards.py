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
``allow-cross-slot-keys`` allows for a key of the same node (``cluster.CROSS_SLOT``;
``node_shards.py`` says how a stale slot map is found and read again).
The counts stay exact and atomic with the change of state they count.  A run whose
node holds no shard (more than 16 masters, or an uneven slot layout) is not counted,
and a warning says so once per process.  The plain writers (the events counter and
the duration histograms, sent once a second) pick any shard.  Readers ``HGETALL``
every shard and add the fields up (:func:`merged`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .node_shards import NodeShards
from .replies import text


class MetricShards(NodeShards):
    """Picks the metrics shard a script on a given key can write."""

    def __init__(self, client: Any, shards: list[str]) -> None:
        super().__init__(client, shards, "metrics", "its runs are not counted")


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
