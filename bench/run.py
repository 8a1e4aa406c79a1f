"""``python -m bench``: run the benchmark, write a markdown table and a JSON file.

Systems are interleaved (A B A B ...) within each repetition because this kind of
machine drifts; ratios are computed per repetition (paired) and summarized as
median [min–max].  Results go to ``bench/results/<stamp>.{md,json}`` and
``bench/results/latest.md``; ``docs/performance.md`` keeps a copy of a run.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import workloads as wl
from bench.harness import ROOT, machine_info

RESULTS = ROOT / "bench" / "results"
TARGETS = {  # issue 24's
    "fanout_vs_celery": 1.0,
    "checkpoint_vs_celery": 0.30,
    "cmds_per_run": 50,
    "round_trips_per_run": 13,
    "first_step_p50_vs_celery": 2.0,
    "first_step_p99_vs_celery": 3.0,
    "per_step_overhead_ms": 2.0,
    "sleep_lateness_p99_ms": 1000.0,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--workloads", default="A,B,C,D",
                   help="comma-separated subset of A (fan-out), B (latency), C (crash), "
                        "D (timers); default all")
    p.add_argument("--n", default=None,
                   help="fan-out sizes for A (default 1000,10000); with --scale the one large "
                        "N (default 1000000), with --cluster or --profile the N (default "
                        "10000 and 5000)")
    p.add_argument("--big", action="store_true", help="add N=100000 to workload A")
    p.add_argument("--reps", type=int, default=3, help="repetitions of each measurement")
    p.add_argument("--systems", default="fanout,fanout-cp,celery,dbos",
                   help="systems for workload A (dbos is skipped when unavailable; "
                        "celery-1 is hand-written Celery with one task per run, the three "
                        "steps inline: the floor of one task per run, for checkpoint mode)")
    p.add_argument("--concurrency", type=int, default=2,
                   help="worker processes for every system (celery -c, DBOS processes)")
    p.add_argument("--latency-count", type=int, default=1000,
                   help="sequential runs per latency variant (B)")
    p.add_argument("--crash-n", type=int, default=5000, help="fan-out size under kill -9 (C)")
    p.add_argument("--timer-count", type=int, default=1000, help="sleeps and waits (D)")
    p.add_argument("--recovery-timeout", type=float, default=4.0,
                   help="fanout recovery_timeout during the crash workload (C)")
    p.add_argument("--dbos-url", default="postgresql://postgres@127.0.0.1:5432/postgres",
                   help="PostgreSQL for DBOS (a database is created per run)")
    p.add_argument("--dbos-threads", type=int, default=4,
                   help="workflows each DBOS process runs at once")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: N=200, 1 repetition, 100 latency runs, 100 timers")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--scale", action="store_true",
                   help="workload A at a large N, unattended: throughput vs N=10,000, worker "
                        "RSS, Redis memory per run, key families, memory after retention")
    p.add_argument("--retention", type=float, default=None,
                   help="--scale: the workers' retention in seconds (default: 1.2 x the "
                        "projected run time + 60 s)")
    p.add_argument("--no-retention-wait", action="store_true",
                   help="--scale: keep the default retention and skip the wait for it (the "
                        "wait is as long as the run; measure memory after retention at a "
                        "smaller N)")
    p.add_argument("--reference-n", type=int, default=10_000,
                   help="--scale: the N of the reference run (default 10000)")
    p.add_argument("--cluster", action="store_true",
                   help="workload A with the store on a 3-master Redis Cluster: each node's "
                        "share of the store's commands, and the top keys")
    p.add_argument("--cluster-reps", type=int, default=2,
                   help="--cluster: throughput pairs (3 masters, 1 server) run after the "
                        "accounting pair, interleaved and without MONITOR (default 2)")
    p.add_argument("--failover", action="store_true",
                   help="workload A on 3 cluster masters with a replica each, one master "
                        "failed over mid-fan-out: runs lost or stuck, steps run twice, the "
                        "outage as the workers saw it (bench/failover.py)")
    p.add_argument("--failover-mode", default="force,kill",
                   help="--failover: comma-separated subset of force (CLUSTER FAILOVER FORCE "
                        "on the replica), kill (kill -9, automatic election), takeover "
                        "(kill -9, then CLUSTER FAILOVER TAKEOVER)")
    p.add_argument("--failover-at", type=float, default=0.5,
                   help="--failover: the share of runs done when the master fails over")
    p.add_argument("--settle", type=float, default=180.0,
                   help="--failover: seconds after the failover for every run to complete")
    p.add_argument("--node-timeout", type=int, default=3000,
                   help="--failover: cluster-node-timeout in ms")
    p.add_argument("--failover-probe", action="store_true",
                   help="--failover: also time SET against SET + WAIT 1 on a replicated "
                        "cluster, and try a write on a promoted master under "
                        "min-replicas-to-write 1")
    p.add_argument("--profile", action="store_true",
                   help="py-spy on the worker's pool processes during workload A: where a "
                        "pass's time goes, by fanout function (with --cluster: the store on "
                        "3 cluster masters, the broker on its own server)")
    p.add_argument("--render", type=Path, metavar="JSON",
                   help="measure nothing: print the markdown report of a saved run's JSON")
    args = p.parse_args(argv)
    args.scale_n = int(args.n) if args.scale and args.n else 1_000_000
    args.cluster_n = int(args.n) if args.cluster and args.n else 10_000
    args.profile_n = int(args.n) if args.profile and args.n else 5_000
    args.cluster_n = args.profile_n if args.profile else args.cluster_n
    args.failover_n = int(args.n) if args.failover and args.n else 10_000
    if args.n is None:
        args.n = "1000,10000"
    if args.quick:
        args.n, args.reps, args.latency_count = "200", 1, 100
        args.crash_n, args.timer_count = 300, 100
    return args


def summarize(values: list[float]) -> dict[str, float]:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}


def fmt(s: dict[str, float], digits: int = 2, unit: str = "") -> str:
    if math.isnan(s["median"]):
        return "–"
    return (f"{s['median']:.{digits}f}{unit} [{s['min']:.{digits}f}–{s['max']:.{digits}f}]")


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.stamp = stamp
        self.settings = wl.Settings(
            log_dir=args.out / f"logs-{stamp}", concurrency=args.concurrency,
            dbos_url=args.dbos_url, dbos_processes=args.concurrency,
            dbos_threads=args.dbos_threads, recovery_timeout=args.recovery_timeout,
        )
        self.results: list[dict[str, Any]] = []
        self.notes: list[str] = []

    def record(self, workload: str, system: str, rep: int, fn: Callable[[], dict[str, Any]],
               **key: Any) -> None:
        label = f"{workload} {system} {key or ''} rep {rep + 1}"
        print(f"[bench] {label} ...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        try:
            res = fn()
            res["ok"] = True
        except Exception as exc:  # noqa: BLE001 - a failed measurement is reported, not fatal
            traceback.print_exc()
            res = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        res.update(workload=workload, system=system, rep=rep, rev=wl.git_rev(), **key)
        self.results.append(res)
        brief = {k: round(v, 3) if isinstance(v, float) else v for k, v in res.items()
                 if k in ("wall_s", "runs_per_s", "cpu_s", "redis_cmds_per_run",
                          "per_step_overhead_p50_ms", "lost_runs", "lateness_p99_ms",
                          "resolve_p99_ms", "error")}
        print(f"[bench]   {brief} ({time.monotonic() - t0:.0f}s)", file=sys.stderr, flush=True)

    def run(self) -> None:
        a, s = self.args, self.settings
        todo = {w.strip().upper() for w in a.workloads.split(",")}
        sizes = [int(x) for x in a.n.split(",") if x]
        if a.big:
            sizes.append(100_000)
        systems = [x.strip() for x in a.systems.split(",") if x.strip()]
        if "dbos" in systems:
            reason = wl.dbos_available(s)
            if reason:
                systems.remove("dbos")
                self.notes.append(f"DBOS skipped: {reason}")
        runners: dict[str, Callable[[int], dict[str, Any]]] = {
            "fanout": lambda n: wl.fanout_fanout(s, n, checkpoint=False),
            "fanout-cp": lambda n: wl.fanout_fanout(s, n, checkpoint=True),
            "celery": lambda n: wl.celery_fanout(s, n),
            "celery-1": lambda n: wl.celery_fanout(s, n, one_task=True),
            "dbos": lambda n: wl.dbos_fanout(s, n),
        }
        for rep in range(a.reps):
            if "A" in todo:
                for n in sizes:
                    for system in systems:  # interleaved: A B C A B C ...
                        self.record("A", system, rep, lambda system=system, n=n: runners[system](n),
                                    n=n)
            if "B" in todo:
                self.record("B", "fanout", rep,
                            lambda: wl.latency_fanout(s, a.latency_count, checkpoint=False))
                self.record("B", "celery", rep, lambda: wl.latency_celery(s, a.latency_count))
                self.record("B", "fanout-cp", rep,
                            lambda: wl.latency_fanout(s, a.latency_count, checkpoint=True))
            if "C" in todo:
                self.record("C", "fanout", rep, lambda: wl.crash(s, a.crash_n, "fanout"),
                            n=a.crash_n)
                self.record("C", "celery", rep, lambda: wl.crash(s, a.crash_n, "celery"),
                            n=a.crash_n)
            if "D" in todo:
                self.record("D-sleep", "fanout", rep, lambda: wl.timers_sleep(s, a.timer_count))
                self.record("D-wait", "fanout", rep, lambda: wl.timers_wait(s, a.timer_count))

    # -- reporting ---------------------------------------------------------------------

    def rows(self, workload: str, system: str, **key: Any) -> list[dict[str, Any]]:
        return [r for r in self.results if r["workload"] == workload and r["system"] == system
                and r.get("ok") and all(r.get(k) == v for k, v in key.items())]

    def paired_ratio(self, workload: str, a: str, b: str, metric: str, **key: Any) -> dict[str, float]:
        ra = {r["rep"]: r[metric] for r in self.rows(workload, a, **key)}
        rb = {r["rep"]: r[metric] for r in self.rows(workload, b, **key)}
        return summarize([ra[k] / rb[k] for k in ra if k in rb and rb[k]])

    def paired_diff(self, workload: str, a: str, b: str, metric: str, **key: Any) -> dict[str, float]:
        ra = {r["rep"]: r[metric] for r in self.rows(workload, a, **key)}
        rb = {r["rep"]: r[metric] for r in self.rows(workload, b, **key)}
        return summarize([ra[k] - rb[k] for k in ra if k in rb])

    def markdown(self, info: dict[str, Any]) -> str:
        a = self.args
        out = [f"# Benchmark results ({time.strftime('%Y-%m-%d %H:%M', time.localtime())}, "
               f"fanout {wl.git_head()}, {wl.git_rev()})", ""]
        out.append(f"Machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory_gib']} GiB, "
                   f"Python {info['python']}, Redis {info['redis_server']}, "
                   + ", ".join(f"{k} {v}" for k, v in info["packages"].items()) + ".")
        out.append(f"Every system: {a.concurrency} worker processes (Celery `--pool prefork "
                   f"-c {a.concurrency}`; DBOS {a.concurrency} processes × {a.dbos_threads} "
                   f"workflows). {a.reps} repetitions, interleaved; cells are median [min–max].")
        out.append("")
        sizes = sorted({r["n"] for r in self.results if r["workload"] == "A" and "n" in r})
        systems = [s for s in ("fanout", "fanout-cp", "celery", "celery-1", "dbos")
                   if any(r["system"] == s and r["workload"] == "A" for r in self.results)]
        if sizes:
            out += ["## A. Fan-out: a loader sends N events, each starts a 3-step function", "",
                    "| N | system | time (s) | runs/s | CPU-s (all processes) | Redis cmds/run "
                    "| Redis round trips/run | peak RSS (MB) | time vs Celery |",
                    "|---|---|---|---|---|---|---|---|---|"]
            for n in sizes:
                for system in systems:
                    rows = self.rows("A", system, n=n)
                    if not rows:
                        failed = [r for r in self.results if r["workload"] == "A"
                                  and r["system"] == system and r.get("n") == n]
                        if failed:
                            out.append(f"| {n} | {system} | failed: {failed[0].get('error', '')[:60]} "
                                       "| | | | | | |")
                        continue
                    ratio = ("1" if system == "celery" else
                             fmt(self.paired_ratio("A", system, "celery", "wall_s", n=n)))
                    out.append(
                        f"| {n:,} | {system} | {fmt(summarize([r['wall_s'] for r in rows]), 2)} "
                        f"| {fmt(summarize([r['runs_per_s'] for r in rows]), 0)} "
                        f"| {fmt(summarize([r['cpu_s'] for r in rows]), 1)} "
                        f"| {fmt(summarize([r['redis_cmds_per_run'] for r in rows]), 1)} "
                        f"| {fmt(summarize([r['redis_round_trips_per_run'] for r in rows]), 1)} "
                        f"| {fmt(summarize([r['peak_rss_mb'] for r in rows]), 0)} | {ratio} |")
            out.append("")
            out.append("`fanout-cp` is `checkpoint=True`. `celery-1` is one Celery task per "
                       "run that runs the three steps inline, saving nothing between them. CPU-s adds up every worker process, "
                       "redis-server and (DBOS) PostgreSQL. Redis commands include the one "
                       "`INCR` per run that counts completions, for every system, and the commands "
                       "Lua scripts run (Redis counts those too); round trips are the server's "
                       "read events (a pipeline is one).")
            out.append("")
        lat = {s: self.rows("B", s) for s in ("fanout", "fanout-cp", "celery")}
        if any(lat.values()):
            out += ["## B. Latency: sequential emits, each timed until its run has ended", "",
                    "| system | 1 step p50 / p95 / p99 (ms) | 3 steps p50 / p95 / p99 (ms) "
                    "| per-step overhead, p50 (ms) |", "|---|---|---|---|"]
            names = {"fanout": "fanout", "fanout-cp": "fanout checkpoint",
                     "celery": "Celery task / chain of 3"}
            for system, rows in lat.items():
                if not rows:
                    continue

                def cell(prefix: str, rows: list[dict[str, Any]] = rows) -> str:
                    return " / ".join(
                        f"{statistics.median([r[f'{prefix}_p{p}_ms'] for r in rows]):.1f}"
                        for p in (50, 95, 99))

                out.append(f"| {names[system]} | {cell('1step')} | {cell('3step')} | "
                           f"{fmt(summarize([r['per_step_overhead_p50_ms'] for r in rows]), 2)} |")
            out.append("")
            out.append(f"{a.latency_count} runs per variant and repetition, 1-step and 3-step "
                       "interleaved. Per-step overhead = (p50 of 3 steps − p50 of 1 step) / 2. "
                       "The clock runs from `send_sync` (fanout) or `apply_async` (Celery) to "
                       "the keyspace notification of the run's end (fanout: the run hash's "
                       "`EXPIRE` in `finish_run`; Celery: the last task's `SET`).")
            out.append("")
        crash = {s: self.rows("C", s) for s in ("fanout", "celery")}
        if any(crash.values()):
            out += ["## C. Crash: workload A while the worker is SIGKILLed every ~2 s "
                    "(first half)", "",
                    "| system | N | kills | lost runs | duplicate step executions | "
                    "stall after a kill, max (s) | interrupted runs: recovered in, median / "
                    "max (s) | total time (s) |", "|---|---|---|---|---|---|---|---|"]

            def num(v: float, digits: int = 1) -> str:
                return "–" if v is None or math.isnan(v) else f"{v:.{digits}f}"

            for system, rows in crash.items():
                for r in rows:
                    inter = (f"{r['interrupted_recovered']}/{r['interrupted_runs']} in "
                             f"{num(r['interrupted_recovery_s_median'])} / "
                             f"{num(r['interrupted_recovery_s_max'])}"
                             if system == "fanout" else "–")
                    out.append(f"| {system} | {r['n']:,} | {r['kills']} | {r['lost_runs']} | "
                               f"{r['duplicate_step_executions']} | "
                               f"{num(r['stall_after_kill_s_max'])} | {inter} | "
                               f"{num(r['wall_s'])} |")
            out.append("")
            out.append(f"fanout runs with `recovery_timeout={a.recovery_timeout:g}` (a dead "
                       "worker's lease, half of it, expires and another worker's timer resumes "
                       "the run). *Stall* is the time from a kill until the next run completes "
                       "(a new worker starts meanwhile). *Interrupted runs* held a lease when "
                       "their worker died; they are resumed by the lease timer. "
                       "The Celery baseline has the same acks_late settings and the "
                       "Redis transport's default `visibility_timeout` (1 h): messages a killed "
                       "worker had taken come back only after it, so within the 60 s the "
                       "benchmark waits they count as lost. A duplicate is a step whose side "
                       "effect ran twice (at-least-once: the steps in flight at each kill).")
            out.append("")
        sleep, wait = self.rows("D-sleep", "fanout"), self.rows("D-wait", "fanout")
        if sleep or wait:
            out += ["## D. Timers", "", "| measurement | p50 | p95 | p99 | notes |",
                    "|---|---|---|---|---|"]
            if sleep:
                def med(rows: list[dict[str, Any]], k: str) -> float:
                    return statistics.median([r[k] for r in rows])

                out.append(f"| `ctx.step.sleep(\"s\", \"1s\")` wake-up lateness, {sleep[0]['n']} runs "
                           f"| {med(sleep, 'lateness_p50_ms'):.0f} ms "
                           f"| {med(sleep, 'lateness_p95_ms'):.0f} ms "
                           f"| {med(sleep, 'lateness_p99_ms'):.0f} ms "
                           f"| max {med(sleep, 'lateness_max_ms'):.0f} ms |")
            if wait:
                out.append(f"| `wait_for_event(match=\"data.k\")` resolution, {wait[0]['n']} waits "
                           f"| {statistics.median([r['resolve_p50_ms'] for r in wait]):.0f} ms "
                           f"| {statistics.median([r['resolve_p95_ms'] for r in wait]):.0f} ms "
                           f"| {statistics.median([r['resolve_p99_ms'] for r in wait]):.0f} ms "
                           f"| {statistics.median([r['resolved_per_s'] for r in wait]):.0f} "
                           f"resolutions/s; "
                           f"{statistics.median([r['redis_cmds_per_resolution'] for r in wait]):.0f}"
                           f" Redis cmds each |")
            out.append("")
            out.append("Lateness = the sleep step's recorded end minus the time it was due. "
                       "Resolution = the waiting run's end minus the resolving `emit`.")
            out.append("")
        out += self.targets_md()
        revs = sorted({str(r.get("rev")) for r in self.results})
        if len(revs) > 1:
            self.notes.append("the library changed during the run (fanout/ "
                              + ", ".join(revs) + "): compare rows with care")
        if self.notes:
            out += ["## Notes", ""] + [f"- {n}" for n in self.notes] + [""]
        failures = [r for r in self.results if not r.get("ok")]
        if failures:
            out += ["## Failed measurements", ""]
            out += [f"- {r['workload']} {r['system']} rep {r['rep'] + 1}: {r['error']}"
                    for r in failures]
            out.append("")
        return "\n".join(out)

    def targets_md(self) -> list[str]:
        lines = ["## Targets", "", "| target | goal | measured | met? |", "|---|---|---|---|"]

        def row(name: str, goal: str, value: dict[str, float], limit: float,
                digits: int = 2, unit: str = "") -> None:
            if math.isnan(value["median"]):
                return
            ok = "yes" if value["median"] <= limit else "**no**"
            lines.append(f"| {name} | {goal} | {fmt(value, digits, unit)} | {ok} |")

        for n in sorted({r["n"] for r in self.results if r["workload"] == "A" and "n" in r}):
            row(f"A, N={n:,}: fanout time ÷ Celery time", f"≤ {TARGETS['fanout_vs_celery']}",
                self.paired_ratio("A", "fanout", "celery", "wall_s", n=n),
                TARGETS["fanout_vs_celery"])
            row(f"A, N={n:,}: fanout CPU-s ÷ Celery CPU-s (steadier than time on a shared "
                "machine)", f"≤ {TARGETS['fanout_vs_celery']}",
                self.paired_ratio("A", "fanout", "celery", "cpu_s", n=n),
                TARGETS["fanout_vs_celery"])
            row(f"A, N={n:,}: checkpoint time ÷ Celery time",
                f"≤ {TARGETS['checkpoint_vs_celery']}",
                self.paired_ratio("A", "fanout-cp", "celery", "wall_s", n=n),
                TARGETS["checkpoint_vs_celery"])
            if self.rows("A", "celery-1", n=n):
                floor = self.paired_ratio("A", "celery-1", "celery", "wall_s", n=n)
                lines.append(f"| A, N={n:,}: Celery with one task per run ÷ Celery with three "
                             f"(the floor of one task per run; not a target) | – | "
                             f"{fmt(floor, 2)} | – |")
                row(f"A, N={n:,}: checkpoint time ÷ Celery with one task per run",
                    "≤ 1.0", self.paired_ratio("A", "fanout-cp", "celery-1", "wall_s", n=n), 1.0)
            fo = self.rows("A", "fanout", n=n)
            if fo:
                row(f"A, N={n:,}: fanout Redis commands per run", f"≤ {TARGETS['cmds_per_run']}",
                    summarize([r["redis_cmds_per_run"] for r in fo]), TARGETS["cmds_per_run"], 1)
                row(f"A, N={n:,}: fanout Redis round trips per run",
                    f"≤ {TARGETS['round_trips_per_run']}",
                    summarize([r["redis_round_trips_per_run"] for r in fo]),
                    TARGETS["round_trips_per_run"], 1)
        b = self.rows("B", "fanout")
        if b and self.rows("B", "celery"):
            row("B: fanout 1-step p50 ÷ one Celery task's (paired)",
                f"≤ {TARGETS['first_step_p50_vs_celery']}",
                self.paired_ratio("B", "fanout", "celery", "1step_p50_ms"),
                TARGETS["first_step_p50_vs_celery"])
            row("B: fanout 1-step p99 ÷ one Celery task's (paired)",
                f"≤ {TARGETS['first_step_p99_vs_celery']}",
                self.paired_ratio("B", "fanout", "celery", "1step_p99_ms"),
                TARGETS["first_step_p99_vs_celery"])
        if b:
            row("B: fanout per-step overhead, p50", "< 2 ms",
                summarize([r["per_step_overhead_p50_ms"] for r in b]), 2.0, 2, " ms")
            if self.rows("B", "celery"):
                row("B: the same, minus Celery's per-task cost in a chain (paired)", "< 2 ms",
                    self.paired_diff("B", "fanout", "celery", "per_step_overhead_p50_ms"),
                    2.0, 2, " ms")
        d = self.rows("D-sleep", "fanout")
        if d:
            row("D: sleep wake-up lateness, p99", "< 1 s",
                summarize([r["lateness_p99_ms"] / 1000 for r in d]), 1.0, 2, " s")
        lines.append("")
        return lines


def render(args: argparse.Namespace) -> int:
    """Print the report of a saved run (after a change to the report itself)."""
    payload = json.loads(args.render.read_text())
    saved = payload["args"]
    for name in ("reps", "concurrency", "dbos_threads", "latency_count"):
        if name in saved:
            setattr(args, name, int(saved[name]))
    runner = Runner(args)
    runner.results, runner.notes = payload["results"], payload.get("notes", [])
    print(runner.markdown(payload["machine"]))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render is not None:
        return render(args)
    args.out.mkdir(parents=True, exist_ok=True)
    runner = Runner(args)
    if args.scale or args.cluster or args.profile or args.failover:
        import signal

        from bench import cluster, failover, profile, scale

        # A SIGTERM unwinds (finally: stop the workers and the servers this run started).
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

        mode = (scale if args.scale else profile if args.profile else cluster if args.cluster else
                failover if args.failover else profile)
        return mode.main(args, runner.settings)
    info = machine_info()
    t0 = time.monotonic()
    runner.run()
    md = runner.markdown(info)
    md += f"\nTotal benchmark time: {(time.monotonic() - t0) / 60:.1f} min. Command: " \
          f"`python -m bench {' '.join(sys.argv[1:] if argv is None else argv)}`.\n"
    (args.out / f"{runner.stamp}.md").write_text(md)
    (args.out / "latest.md").write_text(md)
    payload = {"machine": info, "args": {k: str(v) for k, v in vars(args).items()},
               "results": runner.results, "notes": runner.notes}
    (args.out / f"{runner.stamp}.json").write_text(json.dumps(payload, indent=1, default=str))
    (args.out / "latest.json").write_text(json.dumps(payload, indent=1, default=str))
    print(md)
    print(f"[bench] wrote {args.out / runner.stamp}.md and .json", file=sys.stderr)
    return 0 if all(r.get("ok") for r in runner.results) else 1
