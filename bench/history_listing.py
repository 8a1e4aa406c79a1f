"""How fast is "the latest 50 runs of a function" with a million runs stored?

Inserts N index entries for one function (default 1,000,000; the index is what
grows) plus run hashes for the newest 2,000, then times History.runs(limit=50),
a page deep in the history (cursor), and a status-filtered page, and counts the
Redis commands each sends.

    .venv/bin/python -m bench.history_listing [N]
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import redis

from bench._redis import bench_redis
from fanout._redis.history import History
from fanout._redis.store import Store


class Counting(redis.connection.Connection):
    n = 0

    def send_command(self, *args: object, **kwargs: object) -> None:
        Counting.n += 1
        super().send_command(*args, **kwargs)

    def pack_commands(self, commands: object) -> object:
        cmds = list(commands)  # type: ignore[call-overload]
        Counting.n += len(cmds)
        return super().pack_commands(cmds)


def fill(store: Store, fn_key: str, n: int, hashes: int) -> None:
    base = int((time.time() - n * 0.1 - 60) * 1000)  # one run every 100 ms, up to now
    r = store.r
    for start in range(0, n, 50_000):
        pipe = r.pipeline(transaction=False)
        chunk = {f"run-{i:08d}": base + i * 100 for i in range(start, min(n, start + 50_000))}
        pipe.zadd(store.fn_index(fn_key), chunk)
        pipe.zadd(f"{store.p}:idx:runs", chunk)
        pipe.execute()
    pipe = r.pipeline(transaction=False)
    for i in range(n - hashes, n):
        c = (base + i * 100) / 1000
        pipe.hset(store.run_key(f"run-{i:08d}"), mapping={
            "st": "failed" if i % 10 == 0 else "completed", "fn": "big", "app": "bench",
            "fk": fn_key, "c": repr(c), "t0": repr(c + 0.002), "t1": repr(c + 0.05),
            "ev": json.dumps([f"ev-{i}"]), "event": "{}", "seq": "4",
            "s:a": json.dumps({"id": "a", "st": "completed", "out": {"x": 1}}),
        })
    pipe.execute()


def timed(fn: object, repeat: int = 50) -> tuple[float, int]:
    samples = []
    Counting.n = 0
    for _ in range(repeat):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1000, Counting.n // repeat


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    with bench_redis() as url:
        pool = redis.ConnectionPool.from_url(url, connection_class=Counting)
        r = redis.Redis(connection_pool=pool)
        r.flushdb()
        store = Store(r)
        t = time.perf_counter()
        fill(store, "bench:big", n, 2000)
        print(f"inserted {n:,} index entries in {time.perf_counter() - t:.1f}s; "
              f"used_memory {r.info('memory')['used_memory_human']}")
        hist = History(store)
        first = hist.runs(fn_key="bench:big", limit=50)
        ms, cmds = timed(lambda: hist.runs(fn_key="bench:big", limit=50))
        print(f"latest 50 runs:            {ms:6.2f} ms median, {cmds} commands")
        ms, cmds = timed(lambda: hist.runs(fn_key="bench:big", limit=50, cursor=first.next_cursor))
        print(f"next page (cursor):        {ms:6.2f} ms median, {cmds} commands")
        ms, cmds = timed(lambda: hist.runs(fn_key="bench:big", status="failed", limit=50))
        print(f"latest 50 failed runs:     {ms:6.2f} ms median, {cmds} commands")
        ms, cmds = timed(lambda: hist.runs(fn_key="bench:big", since=time.time() - 86400, limit=50))
        print(f"latest 50, last 24h:       {ms:6.2f} ms median, {cmds} commands")
        r.flushdb()


if __name__ == "__main__":
    main()
