"""First-page latency of every run filter with N runs in Redis (default 1,000,000).

Fills a private redis-server (or FANOUT_BENCH_REDIS_URL) with N runs through the
store's own run scripts, pipelined: ``create_run`` (``Store.create_runs``) then
``finish_run`` for each run, so every index is written as a worker writes it. The
runs belong to 10 functions, two versions each; 1 % of them failed and the failed
ones are the OLDEST (the case a newest-first scan handles worst); the function
``bench:order`` declares the search attribute ``data.user_id``; one event per run
is stored under one of 20 names (``bench/ev<i mod 20>``: the runs of ``bench/ev7`` are
half of ``bench:fn7``'s), and the runs are indexed by it. Creation times spread over the last 6 days.

Then, for each filter, the first page (50 runs, with its total) is read ``--repeat``
times and the median and p95 latency are printed, with the Redis commands one read
sends. Nothing is cached between reads (a temporary union or intersection is built
again each time).

    .venv/bin/python -m bench.history_scale [--n 1000000] [--repeat 50]

With ``--postgres URL`` (a PostgreSQL server, e.g. ``postgresql://127.0.0.1:5432``) it
measures the history store instead: it creates a database ``fanout_bench_<pid>`` on
that server (dropped at the end), fills ``fanout_runs`` with the same N runs by
``COPY`` (the rows the copier would write; the indexes built after the load), and
reads the same first pages through ``PgHistory.runs``, plus a JSONB search over the
event data and one over the output.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import redis

from bench._redis import bench_redis
from fanout._core.run_record import new_run_fields
from fanout._redis.history import History
from fanout._redis.store import Store

FUNCTIONS = 10
EVENT_NAMES = 20
SPAN = 6 * 86400.0


class Counting(redis.connection.Connection):
    n = 0

    def send_command(self, *args: object, **kwargs: object) -> None:
        Counting.n += 1
        super().send_command(*args, **kwargs)

    def pack_commands(self, commands: object) -> object:
        cmds = list(commands)  # type: ignore[call-overload]
        Counting.n += len(cmds)
        return super().pack_commands(cmds)


def fill(store: Store, n: int, batch: int = 2000) -> None:
    """``n`` runs created and ended through the run scripts, oldest first."""
    now = time.time()
    failed = max(1, n // 100)
    sa = json.dumps(["data.user_id"])
    for start in range(0, n, batch):
        runs = []
        events = []
        for i in range(start, min(n, start + batch)):
            f = i % FUNCTIONS
            fn_key = "bench:order" if f == 0 else f"bench:fn{f}"
            created = now - SPAN + SPAN * i / n
            eid = f"ev-{i:08d}"
            name = f"bench/ev{i % EVENT_NAMES}"
            event = {"name": name, "data": {"user_id": i % 100_000}, "id": eid,
                     "ts": int(created * 1000)}
            creation: dict[str, Any] = {"v": f"v{1 + (i // FUNCTIONS) % 2}"}
            if f == 0:
                creation["sa"] = sa
            runs.append((f"run-{i:08d}", fn_key, new_run_fields(
                fn_key.split(":")[1], "bench", fn_key, event, event_ids=[eid],
                created=repr(created), creation=creation)))
            events.append((eid, json.dumps(event), int(created * 1000), name))
        store.store_events(events)
        store.create_runs(runs)
        pipe = store.r.pipeline(transaction=False)
        for idx, (rid, _fk, _f) in enumerate(runs, start):
            status = "failed" if idx < failed else "completed"
            store.scripts.queue(pipe, "finish_run", store.indexed_run_keys(rid),
                                ["", status, repr(time.time()), store.retention, "out", "null"])
        store.scripts.execute(pipe)
        if start and start % 100_000 < batch:
            print(f"  {start:,} runs", flush=True)


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float, int, Any]:
    samples = []
    Counting.n = 0
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        samples.append(time.perf_counter() - t)
    samples.sort()
    p95 = samples[min(len(samples) - 1, int(round(0.95 * len(samples))) - 1)]
    return statistics.median(samples) * 1000, p95 * 1000, Counting.n // repeat, out


def _pg_rows(n: int) -> Any:
    """The rows of the same N runs as :func:`fill`, as the copier writes them."""
    from fanout._postgres.store import row_of

    now = time.time()
    failed = max(1, n // 100)
    for i in range(n):
        f = i % FUNCTIONS
        fn_key = "bench:order" if f == 0 else f"bench:fn{f}"
        created = now - SPAN + SPAN * i / n
        eid = f"ev-{i:08d}"
        event = {"name": f"bench/ev{i % EVENT_NAMES}", "data": {"user_id": i % 100_000},
                 "id": eid, "ts": int(created * 1000)}
        status = "failed" if i < failed else "completed"
        rec: dict[str, Any] = {
            "st": status, "fn": fn_key.split(":")[1], "app": "bench", "fk": fn_key,
            "ev": [eid], "event": event, "c": repr(created), "t0": repr(created),
            "t1": repr(created + 0.05), "v": f"v{1 + (i // FUNCTIONS) % 2}", "seq": "2",
            "out": {"order_id": i, "ok": status == "completed"},
            "err": {"type": "Error", "message": "boom"} if status == "failed" else None}
        if f == 0:
            rec["sa"] = ["data.user_id"]
        yield row_of(f"run-{i:08d}", {k: v for k, v in rec.items() if v is not None})


def postgres_main(server: str, n: int, repeat: int) -> None:
    import psycopg

    from fanout._postgres.store import COLUMNS, SCHEMA, TABLE, PgHistory

    name = f"fanout_bench_{os.getpid()}"
    with psycopg.connect(f"{server.rstrip('/')}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{server.rstrip('/')}/{name}"
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SCHEMA.split(";")[0])  # the table; the indexes after the load
            t = time.perf_counter()
            with conn.cursor() as cur, cur.copy(
                    f"COPY {TABLE} ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for k, row in enumerate(_pg_rows(n)):
                    copy.write_row(row)
                    if k and k % 200_000 == 0:
                        print(f"  {k:,} rows", flush=True)
            loaded = time.perf_counter() - t
            t = time.perf_counter()
            conn.execute(SCHEMA)
            conn.execute(f"VACUUM ANALYZE {TABLE}")
            indexed = time.perf_counter() - t
            size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))"
                                ).fetchone()
        print(f"copied {n:,} runs in {loaded:.0f} s, indexes built in {indexed:.0f} s; "
              f"database {size[0] if size else '?'}")
        h = PgHistory(url)
        now = time.time()
        rows: list[tuple[str, Callable[[], Any]]] = [
            ("all runs", lambda: h.runs(limit=50)),
            ("status=failed", lambda: h.runs(status="failed", limit=50)),
            ("status=failed, fn", lambda: h.runs(fn_key="bench:fn1", status="failed",
                                                 limit=50)),
            ("function", lambda: h.runs(fn_key="bench:fn3", limit=50)),
            ("function + version", lambda: h.runs(fn_key="bench:fn3", version="v2",
                                                   limit=50)),
            ("version (all functions)", lambda: h.runs(version="v2", limit=50)),
            ("status=failed + version", lambda: h.runs(fn_key="bench:fn3", status="failed",
                                                       version="v2", limit=50)),
            ("time range (last hour)", lambda: h.runs(since=now - 3600, limit=50)),
            ("status=completed, last day", lambda: h.runs(status="completed",
                                                          since=now - 86400, limit=50)),
            ("event name (runs)", lambda: h.runs(event_name="bench/ev7", limit=50)),
            ("search data.user_id, fn", lambda: h.runs(
                fn_key="bench:order", search={"data.user_id": 4240}, limit=50)),
            ("search data.user_id, all fns", lambda: h.runs(
                search={"data.user_id": 4240}, limit=50)),
            ("search output.order_id", lambda: h.runs(
                search={"output.order_id": 777_777 % n}, limit=50)),
        ]
        print(f"{'first page of 50 (with total)':32} {'median':>9} {'p95':>9}  total")
        for label, fn in rows:
            med, p95, _cmds, out = timed(fn, repeat)
            print(f"{label:32} {med:7.2f}ms {p95:7.2f}ms  {out.total} "
                  f"({len(out.runs)} on the page)")
        h.close()
    finally:
        with psycopg.connect(f"{server.rstrip('/')}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.history_scale")
    ap.add_argument("--n", type=int, default=1_000_000, help="runs to store (1,000,000)")
    ap.add_argument("--repeat", type=int, default=50, help="reads per filter (50)")
    ap.add_argument("--postgres", metavar="URL", help="measure the PostgreSQL history store "
                    "on this server instead (a scratch database is created and dropped)")
    args = ap.parse_args(argv)
    if args.postgres:
        postgres_main(args.postgres, args.n, args.repeat)
        return
    with bench_redis() as url:
        pool = redis.ConnectionPool.from_url(url, connection_class=Counting)
        r = redis.Redis(connection_pool=pool)
        r.flushdb()
        store = Store(r, metrics=False)
        t = time.perf_counter()
        fill(store, args.n)
        print(f"stored {args.n:,} runs in {time.perf_counter() - t:.0f} s; "
              f"used_memory {r.info('memory')['used_memory_human']}; keys {r.dbsize():,}")
        hist = History(store)
        now = time.time()
        rows: list[tuple[str, Callable[[], Any]]] = [
            ("all runs", lambda: hist.runs(limit=50)),
            ("status=failed", lambda: hist.runs(status="failed", limit=50)),
            ("status=failed, fn", lambda: hist.runs(fn_key="bench:fn1", status="failed",
                                                    limit=50)),
            ("function", lambda: hist.runs(fn_key="bench:fn3", limit=50)),
            ("function + version", lambda: hist.runs(fn_key="bench:fn3", version="v2",
                                                      limit=50)),
            ("version (all functions)", lambda: hist.runs(version="v2", limit=50)),
            ("status=failed + version", lambda: hist.runs(fn_key="bench:fn3", status="failed",
                                                          version="v2", limit=50)),
            ("time range (last hour)", lambda: hist.runs(since=now - 3600, limit=50)),
            ("status=completed, last day", lambda: hist.runs(status="completed",
                                                             since=now - 86400, limit=50)),
            ("event name (events)", lambda: hist.events(name="bench/ev7", limit=50)),
            ("event name (runs)", lambda: hist.runs(event_name="bench/ev7", limit=50)),
            ("event name + fn", lambda: hist.runs(fn_key="bench:fn7", event_name="bench/ev7",
                                                  limit=50)),
            ("status=failed + event name", lambda: hist.runs(status="failed",
                                                             event_name="bench/ev7", limit=50)),
            ("search attribute, fn", lambda: hist.runs(
                fn_key="bench:order", search={"data.user_id": 4240}, limit=50)),
            ("search attribute, all fns", lambda: hist.runs(
                search={"data.user_id": 4240}, limit=50)),
            ("counts by status, last day", lambda: hist.status_counts(
                since=now - 86400, until=now)),
        ]
        print(f"{'first page of 50 (with total)':32} {'median':>9} {'p95':>9} {'cmds':>6}  total")
        for label, fn in rows:
            med, p95, cmds, out = timed(fn, args.repeat)
            total = getattr(out, "total", None)
            if total is None and isinstance(out, dict):
                total = sum(v for k, v in out.items() if k != "active")
            items = len(out.items) if hasattr(out, "next_cursor") else 0
            print(f"{label:32} {med:7.2f}ms {p95:7.2f}ms {cmds:6d}  {total} ({items} on the page)")
        # Millions of keys: let the server free them in the background (a blocking flush
        # outlasts the client's socket timeout).
        r.flushdb(asynchronous=True)


if __name__ == "__main__":
    main()
