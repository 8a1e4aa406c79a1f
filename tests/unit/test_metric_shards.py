"""The metrics shards of a Redis Cluster: where they are, and how readers add them up."""

from __future__ import annotations

from redis.crc import key_slot

from fanout._redis.keyspace import METRICS_SHARDS, Keyspace
from fanout._redis.metric_shards import merged


def test_one_shard_in_each_sixteenth_of_the_slots() -> None:
    shards = Keyspace("p").metrics_shards
    assert len(shards) == METRICS_SHARDS
    assert [key_slot(s.encode()) // 1024 for s in shards] == list(range(METRICS_SHARDS))


def test_readers_add_the_shards_up() -> None:
    got = merged([{b"c|runs_started|a|f": b"2", b"hs|x": b"0.5"},
                  {b"c|runs_started|a|f": b"3", b"hs|x": b"0.25", b"c|events|e": b"1"}])
    assert got == {"c|runs_started|a|f": "5", "hs|x": "0.75", "c|events|e": "1"}
