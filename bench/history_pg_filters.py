"""First pages of the history store's version and event-name filters, alone and with a
function, a status or each other, with N runs in PostgreSQL (default 1,000,000).

Loads the rows of ``bench.history_scale`` (the same N runs) into a scratch database
``fanout_bench_tags_<pid>`` on the server by ``COPY``, then migrates it as a deployment
does, through ``PgHistory.create_schema`` (the indexes, the tags table filled from the
rows, its ``VACUUM``), then ``VACUUM ANALYZE`` of the runs, and reads each first page
(50 runs and the total) ``--repeat`` times: the median, p95 and range. The database is
dropped at the end.

    .venv/bin/python -m bench.history_pg_filters --postgres postgresql://127.0.0.1:5432 [--n 1000000] [--repeat 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import psycopg

from bench.history_scale import _pg_rows
from fanout._postgres.store import COLUMNS, SCHEMA, TABLE, PgHistory


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.history_pg_filters")
    ap.add_argument("--postgres", required=True, metavar="URL", help="a PostgreSQL server")
    ap.add_argument("--n", type=int, default=1_000_000, help="runs to store (1,000,000)")
    ap.add_argument("--repeat", type=int, default=30, help="reads per filter (30)")
    args = ap.parse_args(argv)
    server = args.postgres.rstrip("/")
    name = f"fanout_bench_tags_{os.getpid()}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{server}/{name}"
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SCHEMA.split(";")[0])  # the table alone, as before the migration
            t = time.perf_counter()
            with conn.cursor() as cur, cur.copy(
                    f"COPY {TABLE} ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for row in _pg_rows(args.n):
                    copy.write_row(row)
            loaded = time.perf_counter() - t
        h = PgHistory(url)
        t = time.perf_counter()
        h.create_schema()
        migrated = time.perf_counter() - t
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"VACUUM ANALYZE {TABLE}")
        print(f"loaded {args.n:,} runs in {loaded:.0f} s; create_schema (indexes, tags "
              f"filled and vacuumed) {migrated:.0f} s")
        rows: list[tuple[str, Callable[[], Any]]] = [
            ("version (all functions)", lambda: h.runs(version="v2", limit=50)),
            ("function + version", lambda: h.runs(fn_key="bench:fn3", version="v2", limit=50)),
            ("status=failed + version", lambda: h.runs(status="failed", version="v2",
                                                       limit=50)),
            ("status=failed, fn + version", lambda: h.runs(
                fn_key="bench:fn3", status="failed", version="v2", limit=50)),
            ("event name", lambda: h.runs(event_name="bench/ev7", limit=50)),
            ("function + event name", lambda: h.runs(fn_key="bench:fn7",
                                                     event_name="bench/ev7", limit=50)),
            ("version, last hour", lambda: h.runs(version="v2", since=time.time() - 3600,
                                                  limit=50)),
            ("event name + version (none match)", lambda: h.runs(
                event_name="bench/ev7", version="v2", limit=50)),
        ]
        print(f"{'first page of 50 (with total)':34} {'median':>9} {'p95':>9} "
              f"{'min-max':>17}  total")
        for label, fn in rows:
            samples = []
            out = None
            for _ in range(args.repeat):
                t = time.perf_counter()
                out = fn()
                samples.append(time.perf_counter() - t)
            samples.sort()
            p95 = samples[min(len(samples) - 1, int(round(0.95 * len(samples))) - 1)]
            print(f"{label:34} {statistics.median(samples) * 1000:7.2f}ms {p95 * 1000:7.2f}ms "
                  f"{samples[0] * 1000:7.1f}-{samples[-1] * 1000:.1f}ms  {out.total if out else 0}")
        h.close()
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


if __name__ == "__main__":
    main()
