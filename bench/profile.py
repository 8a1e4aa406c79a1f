"""``python -m bench --profile [--n 5000]``: where a pass's time goes.

Workload A at N (default 5,000) on a private redis-server; once a tenth of the runs
are done, ``py-spy record --nonblocking`` samples every pool process of the worker
(not its main process, which only runs Celery's consumer loop) for ``SECONDS``; the
stacks are folded into fanout's own functions (:func:`bench.accounting.fold_stacks`).
Redis commands and round trips per run come from the same run (``INFO``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import accounting as acc
from bench import workloads as wl
from bench.harness import CeleryWorker, RedisServer, _tree, command_delta

SECONDS = 15


def _say(msg: str) -> None:
    print(f"[profile] {msg}", file=sys.stderr, flush=True)


def _py_spy() -> str:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
    return exe


def run(n: int, settings: wl.Settings, seconds: float = SECONDS, *,
        on_cluster: bool = False) -> dict[str, Any]:
    """``on_cluster``: the store on 3 cluster masters, the broker on its own server
    (Redis commands and round trips then count every node and the broker)."""
    spy = _py_spy()
    server = RedisServer()
    store: Any = None
    worker = None
    tmp = Path(tempfile.mkdtemp(prefix="fanout-bench-spy-"))
    try:
        env = wl.fanout_env(server.url)
        nodes = [server.client]
        if on_cluster:
            from bench.cluster import Cluster

            store = Cluster(3)
            env["BENCH_STORE_URL"] = os.environ["BENCH_STORE_URL"] = store.url
            nodes += list(store.clients.values())
        client = wl._fanout_client(server.url)
        worker = CeleryWorker(wl.FANOUT_APP, concurrency=settings.concurrency,
                              env=env, log=wl._log(settings, "fanout-prof"))
        r = server.client
        before = _commandstats(nodes)
        reads0 = _reads(nodes)
        import fanout

        polls = 0
        t0 = time.monotonic()
        client.send_sync(fanout.Event(name="bench/load", data={"n": n},
                                      id=f"load-{os.urandom(8).hex()}"))
        spies: list[subprocess.Popen[bytes]] = []
        outs: list[Path] = []
        while True:
            time.sleep(0.1)
            polls += 1
            done = int(r.get(wl.DONE) or 0)
            if not spies and done >= n / 10:
                pool = [p for p in _tree(worker.pid) if p != worker.pid]
                _say(f"sampling pool processes {pool} for {seconds:.0f}s at {done:,} done")
                for pid in pool:
                    out = tmp / f"{pid}.txt"
                    outs.append(out)
                    spies.append(subprocess.Popen(
                        [spy, "record", "--pid", str(pid), "--duration", str(int(seconds)),
                         "--rate", "100", "--nonblocking", "--format", "raw", "--output",
                         str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
            if done >= n:
                break
            if time.monotonic() - t0 > max(300, n / 10):
                raise TimeoutError(f"only {done}/{n} runs done")
        wall = time.monotonic() - t0
        cmds = command_delta(before, _commandstats(nodes), {"get": polls})
        reads = _reads(nodes) - reads0 - polls - 2 * len(nodes)
        errors = []
        for sp in spies:
            _, err = sp.communicate(timeout=seconds + 60)
            if sp.returncode != 0:
                errors.append(err.decode(errors="replace")[-500:])
        prof = acc.Profile()
        per_process = {}
        for out in outs:
            if out.exists():
                before_samples = prof.samples
                acc.fold_stacks(out.read_text().splitlines(), prof)
                per_process[out.stem] = prof.samples - before_samples
        total = sum(cmds.values())
        return {"n": n, "on_cluster": on_cluster, "wall_s": wall, "runs_per_s": n / wall, "seconds": seconds,
                "redis_cmds_per_run": total / n, "redis_round_trips_per_run": reads / n,
                "redis_top_cmds_per_run": {k: round(v / n, 2) for k, v in
                                           sorted(cmds.items(), key=lambda kv: -kv[1])[:10]},
                "samples": prof.samples, "samples_per_process": per_process,
                "leaf": dict(prof.leaf.most_common()),
                "inclusive": dict(prof.inclusive.most_common(40)),
                "innermost": dict(prof.innermost.most_common(25)),
                "innermost_leaf": {k: dict(v.most_common(4))
                                   for k, v in prof.innermost_leaf.items()},
                "errors": errors}
    finally:
        if worker is not None:
            worker.stop()
        server.stop()
        if store is not None:
            store.stop()
            os.environ.pop("BENCH_STORE_URL", None)
        shutil.rmtree(tmp, ignore_errors=True)


def _commandstats(nodes: list[Any]) -> dict[str, int]:
    total: dict[str, int] = {}
    for c in nodes:
        for k, v in acc.commandstats_calls(c.info("commandstats")).items():
            total[k] = total.get(k, 0) + v
    return total


def _reads(nodes: list[Any]) -> int:
    return sum(int(c.info("stats")["total_reads_processed"]) for c in nodes)


def report(p: dict[str, Any]) -> str:
    s = p["samples"] or 1
    where = " --cluster" if p.get("on_cluster") else ""
    lines = [f"## Profile: the pool processes during workload A, N = {p['n']:,}"
             + (", the store on 3 cluster masters" if where else "")
             + f" (`python -m bench --profile{where} --n {p['n']}`)", "",
             f"py-spy --nonblocking at 100 Hz on each pool process for {p['seconds']:.0f} s: "
             f"{p['samples']:,} busy samples ({p['samples_per_process']}); the run took "
             f"{p['wall_s']:.1f} s ({p['runs_per_s']:.0f} runs/s with the sampler on). "
             f"Redis per run: {p['redis_cmds_per_run']:.1f} commands, "
             f"{p['redis_round_trips_per_run']:.1f} round trips; top: "
             + ", ".join(f"{k} {v}" for k, v in p["redis_top_cmds_per_run"].items()) + ".", "",
             "Where the busy samples end (the leaf frame's library):", "",
             "| leaf | share |", "| --- | --- |"]
    lines += [f"| {k} | {100 * v / s:.1f} % |" for k, v in p["leaf"].items()]
    lines += ["", "fanout's functions, inclusive (share of busy samples with the function on "
              "the stack):", "", "| function | inclusive |", "| --- | --- |"]
    lines += [f"| `{k}` | {100 * v / s:.1f} % |" for k, v in list(p["inclusive"].items())[:25]]
    lines += ["", "The innermost fanout function of each sample (what fanout was doing or "
              "waiting on), with where below it the time went:", "",
              "| function | share | below it |", "| --- | --- | --- |"]
    for k, v in list(p["innermost"].items())[:15]:
        below = ", ".join(f"{c} {100 * x / s:.1f} %" for c, x in p["innermost_leaf"][k].items())
        lines.append(f"| `{k}` | {100 * v / s:.1f} % | {below} |")
    if p["errors"]:
        lines += ["", "py-spy errors: " + " / ".join(p["errors"])]
    return "\n".join(lines)


def main(args: argparse.Namespace, settings: wl.Settings) -> int:
    p = run(args.profile_n, settings, on_cluster=args.cluster)
    md = report(p)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"profile-{stamp}.json").write_text(json.dumps(p, indent=1, default=str))
    (args.out / f"profile-{stamp}.md").write_text(md)
    print(md)
    return 0
