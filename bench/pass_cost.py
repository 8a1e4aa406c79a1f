"""Workload A's Redis cost per run, split into what the runs cost and what the
worker's background loops cost per second (the timer scan, the pause refresh, the
metrics flush, kombu's idle polling).

``python -m bench`` reports commands per run as the whole server's count over the
run's wall time, so on a slow or loaded machine the per-second loops make the
figure grow with the wall time. Here one worker (``--pool prefork -c 2``, counting
on) first sits idle for ``--idle`` seconds on its own redis-server, which gives the
background rate (commands and round trips per second); then it runs workload A,
and the background rate times the wall time is taken out of the total:

    per run = (total - background per second x wall time) / N

which does not depend on how fast the machine was. The scan's share is shown on its
own: ``ZRANGE`` and ``ZRANGEBYSCORE`` are the timer scan's alone in workload A.

    .venv/bin/python -m bench.pass_cost --n 1000 --reps 2

It measures the tree it runs from (its ``fanout`` and its ``bench``), so copying this
file into another tree's ``bench/`` measures that tree.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from .harness import CeleryWorker, RedisServer, command_delta
from .workloads import DONE, FANOUT_APP, Settings, _fanout_client, _log, fanout_env


def _reads(server: RedisServer) -> int:
    return int(server.client.info("stats")["total_reads_processed"])


def measure(n: int, idle: float, log_dir: Path) -> dict[str, Any]:
    settings = Settings(log_dir=log_dir)
    server = RedisServer()
    worker = None
    try:
        client = _fanout_client(server.url)
        worker = CeleryWorker(FANOUT_APP, concurrency=settings.concurrency,
                              env=fanout_env(server.url), log=_log(settings, "pass-cost"))
        time.sleep(2.0)  # the worker's first scans and loads
        c0, r0, t0 = server.commandstats(), _reads(server), time.monotonic()
        time.sleep(idle)
        c1, r1, t1 = server.commandstats(), _reads(server), time.monotonic()
        # Our own INFO calls: r0's (c1's own is command_delta's); the reads of c1 and r1.
        bg = command_delta(c0, c1, {"info": 1})
        bg_s = t1 - t0
        bg_cmds, bg_reads = sum(bg.values()) / bg_s, (r1 - r0 - 2) / bg_s
        import fanout

        eid = f"load-{uuid.uuid4().hex}"
        start = time.monotonic()
        client.send_sync(fanout.Event(name="bench/load", data={"n": n}, id=eid))
        polls = 0
        while int(server.client.get(DONE) or 0) < n:
            polls += 1
            if time.monotonic() - start > max(300, n / 5):
                raise TimeoutError(f"only {int(server.client.get(DONE) or 0)}/{n} runs done")
            time.sleep(0.02)
        wall = time.monotonic() - start
        c2, r2 = server.commandstats(), _reads(server)
        run = command_delta(c1, c2, {"get": polls, "info": 1})
        reads = r2 - r1 - polls - 2
        total = sum(run.values())
        scan = {k: v for k, v in run.items() if k in ("zrange", "zrangebyscore")}
        return {
            "n": n, "wall_s": round(wall, 2), "runs_per_s": round(n / wall, 1),
            "background_cmds_per_s": round(bg_cmds, 1),
            "background_round_trips_per_s": round(bg_reads, 1),
            "background_by_command_per_s": {k: round(v / bg_s, 1) for k, v in
                                            sorted(bg.items(), key=lambda kv: -kv[1])},
            "cmds_per_run_total": round(total / n, 2),
            "round_trips_per_run_total": round(reads / n, 2),
            "cmds_per_run": round((total - bg_cmds * wall) / n, 2),
            "round_trips_per_run": round((reads - bg_reads * wall) / n, 2),
            "scan_reads_per_run": {k: round(v / n, 2) for k, v in scan.items()},
            "by_command_per_run": {k: round(v / n, 2) for k, v in
                                   sorted(run.items(), key=lambda kv: -kv[1])},
        }
    finally:
        if worker is not None:
            worker.stop()
        server.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pass_cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--idle", type=float, default=10.0, help="seconds idle before the run")
    p.add_argument("--json", type=Path, help="write every repetition here")
    args = p.parse_args(argv)
    log_dir = Path(tempfile.mkdtemp(prefix="fanout-pass-cost-"))
    reps = []
    for i in range(args.reps):
        r = measure(args.n, args.idle, log_dir)
        reps.append(r)
        print(f"[pass_cost] rep {i + 1}: {json.dumps(r)}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(reps, indent=1))

    def med(key: str) -> str:
        vals = [float(r[key]) for r in reps]
        return f"{statistics.median(vals):.2f} [{min(vals):.2f}–{max(vals):.2f}]"

    for key in ("cmds_per_run", "round_trips_per_run", "cmds_per_run_total",
                "round_trips_per_run_total", "background_cmds_per_s",
                "background_round_trips_per_s", "runs_per_s"):
        print(f"{key}: {med(key)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
