"""Reading a run index that may be split in shards, exactly, as if it were one set.

On one Redis the sets listing every run (``P:idx:runs``) and a function's runs
(``P:idx:fn:<fk>``) are single sorted sets. On a Redis Cluster each one set would
take a write per run on one node (more than 2 % of the store's commands), so there a
run is listed in the shard of its id (``keyspace.Keyspace.runs_index_of``), one of
:data:`~fanout._redis.keyspace.INDEX_SHARDS` sets spread over the masters, and the
readers merge the shards (and the unsharded set of earlier versions). An
:data:`Index` is one set's name or a tuple of shard names.

The merge keeps the order of one sorted set: by score, then by member (bytes), so a
listing of the shards pages exactly as the single set would, and a cursor
(``"<score>:<skip>"``: the entries of that score already seen) means the same on
both. Reading the ``num`` entries after ``start`` reads the first ``start + num`` of
every shard (in one pipeline, one command per shard) and merges them: the first
``start + num`` of the merge are exact, since every shard gave at least as many as it
can place there. ``start`` is the count of entries already seen at the cursor's
score only (runs created in the same millisecond), so this stays small. A run listed
in two of the sets (only while the unsharded set of an upgraded store still holds
it) is read once. Counts add one ``ZCOUNT`` per shard.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, cast

from .replies import text

#: One sorted set, or the shards of one (read merged).
Index = str | tuple[str, ...]

Row = tuple[str, float]


def parts(index: Index) -> tuple[str, ...]:
    """The sets an index is made of."""
    return (index,) if isinstance(index, str) else index


def _rows(raw: Any) -> list[Row]:
    return [(text(m), float(s)) for m, s in cast("list[tuple[Any, float]]", raw)]


def _merge(lists: Sequence[list[Row]], *, desc: bool) -> list[Row]:
    """Rows of several sorted lists as one, by (score, member), duplicates once."""
    if len(lists) == 1:
        return lists[0]
    out: list[Row] = []
    key = _order_key
    for row in heapq.merge(*lists, key=key, reverse=desc):
        if not out or out[-1] != row:
            out.append(row)
    return out


def _order_key(row: Row) -> tuple[float, bytes]:
    return row[1], row[0].encode()


def queue_count(pipe: Any, index: Index, lo: str, hi: str) -> int:
    """Queue a ``ZCOUNT`` per set; returns how many replies :func:`total` adds."""
    for key in parts(index):
        pipe.zcount(key, lo, hi)
    return len(parts(index))


def total(replies: Sequence[Any]) -> int:
    return sum(int(n) for n in replies)


def count(r: Any, index: Index, lo: str, hi: str) -> int:
    if isinstance(index, str):
        return int(r.zcount(index, lo, hi))
    pipe = r.pipeline(transaction=False)
    queue_count(pipe, index, lo, hi)
    return total(pipe.execute())


def queue_rev(pipe: Any, index: Index, top: str, lo: str, start: int, num: int) -> int:
    """Queue the read of entries ``start`` to ``start + num`` of the index from score
    ``top`` down to ``lo``, newest first; :func:`take_rev` merges the replies."""
    if isinstance(index, str):
        pipe.zrevrangebyscore(index, top, lo, start=start, num=num, withscores=True)
        return 1
    for key in index:
        pipe.zrevrangebyscore(key, top, lo, start=0, num=start + num, withscores=True)
    return len(index)


def take_rev(replies: Sequence[Any], index: Index, start: int, num: int) -> list[Row]:
    if isinstance(index, str):
        return _rows(replies[0])
    return _merge([_rows(x) for x in replies], desc=True)[start:start + num]


def rev(r: Any, index: Index, top: str, lo: str, start: int, num: int) -> list[Row]:
    """Entries ``start`` to ``start + num`` from score ``top`` down to ``lo``."""
    pipe = r.pipeline(transaction=False)
    queue_rev(pipe, index, top, lo, start, num)
    return take_rev(pipe.execute(), index, start, num)


def fwd(r: Any, index: Index, lo: str, hi: str, start: int, num: int) -> list[Row]:
    """Entries ``start`` to ``start + num`` from score ``lo`` up to ``hi``, oldest first."""
    if isinstance(index, str):
        return _rows(r.zrangebyscore(index, lo, hi, start=start, num=num, withscores=True))
    pipe = r.pipeline(transaction=False)
    for key in index:
        pipe.zrangebyscore(key, lo, hi, start=0, num=start + num, withscores=True)
    return _merge([_rows(x) for x in pipe.execute()], desc=False)[start:start + num]


def merged_walk(walks: Sequence[Iterable[list[Row]]], chunk: int) -> Iterator[list[Row]]:
    """Chunks of several walks (each oldest first, in chunks) as one walk."""
    flat = [(row for part in w for row in part) for w in walks]
    out: list[Row] = []
    last: Row | None = None
    for row in heapq.merge(*flat, key=_order_key):
        if row == last:
            continue
        last = row
        out.append(row)
        if len(out) == chunk:
            yield out
            out = []
    if out:
        yield out


__all__ = ["Index", "count", "fwd", "merged_walk", "parts", "queue_count", "queue_rev", "rev",
           "take_rev", "total"]
