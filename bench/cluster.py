"""``python -m bench --cluster [--n 10000]``: workload A with the state store on a
3-master Redis Cluster (loopback ports), the broker on its own plain redis-server.

Reports, per node, its share of the store's commands (``INFO commandstats`` deltas,
Lua's inner commands included, our own INFO left out), the busiest node against the
fair share (target ≤ 1.1 × 33.3 %), and the keys that take the most commands, from a
``MONITOR`` sample of every node during the fan-out (a command counts once for each
key it names; a script's declared keys and its inner commands both count). The same
workload with the store on one plain redis-server gives the throughput to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import redis

from bench import accounting as acc
from bench import workloads as wl
from bench.harness import CeleryWorker, Meter, RedisServer, free_port, wait_until

MONITOR_AT, MONITOR_S = 0.3, 5.0


def _say(msg: str) -> None:
    print(f"[cluster] {msg}", file=sys.stderr, flush=True)


class Cluster:
    """``nodes`` redis-server masters in cluster mode, joined by redis-cli."""

    def __init__(self, nodes: int = 3) -> None:
        exe, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if exe is None or cli is None:
            raise RuntimeError("--cluster needs redis-server and redis-cli on PATH")
        self.dir = Path(tempfile.mkdtemp(prefix="fanout-bench-cluster-"))
        self.ports = [free_port() for _ in range(nodes)]
        self.procs = []
        for port in self.ports:
            d = self.dir / str(port)
            d.mkdir()
            self.procs.append(subprocess.Popen(
                [exe, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-port", str(free_port()), "--cluster-config-file", "nodes.conf",
                 "--cluster-node-timeout", "5000", "--save", "", "--appendonly", "no",
                 "--dir", str(d)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self.clients = {p: redis.Redis(port=p) for p in self.ports}
        for c in self.clients.values():
            wait_until(lambda c=c: _pings(c), 20, what="cluster node start")
        subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                        "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)
        for c in self.clients.values():
            wait_until(lambda c=c: c.cluster("info").get("cluster_state") == "ok", 30,
                       what="cluster_state:ok")
        self.url = f"redis+cluster://127.0.0.1:{self.ports[0]}"
        self.pids = [p.pid for p in self.procs]

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def _pings(c: redis.Redis) -> bool:
    try:
        return bool(c.ping())
    except redis.RedisError:
        return False


class Monitor(threading.Thread):
    """Collects raw MONITOR lines of one node until stopped (a plain socket: a
    redis-py connection drops itself on a read timeout)."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.lines: list[str] = []
        self.stop_flag = threading.Event()

    def run(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"MONITOR\r\n")
            sock.settimeout(0.2)
            buf = b""
            while not self.stop_flag.is_set():
                try:
                    chunk = sock.recv(1 << 16)
                except TimeoutError:
                    continue
                if not chunk:
                    break
                buf += chunk
                *done, buf = buf.split(b"\r\n")
                # Each reply is a simple string: "+<line>" (the first one is "+OK").
                self.lines += [d[1:].decode(errors="replace") for d in done if d[:1] == b"+"]


def _calls(c: redis.Redis) -> tuple[dict[str, int], int, int]:
    calls = acc.commandstats_calls(c.info("commandstats"))
    stats = c.info("stats")
    return calls, int(stats["total_reads_processed"]), int(stats["total_net_input_bytes"])


def _cpu_per_run(cpu: dict[str, float], n: int) -> dict[str, float]:
    """CPU-ms per run of each group; ``worker`` is its main process and its pool."""
    out = {k: 1000 * v / n for k, v in cpu.items()}
    out["worker"] = out.get("worker main", 0.0) + out.get("worker pool", 0.0)
    return out


def run_store(n: int, settings: wl.Settings, *, cluster: bool,
              monitor: bool = True) -> dict[str, Any]:
    """Workload A at ``n`` with the store on 3 masters or on 1 plain server; with
    ``monitor`` (cluster only) every node is MONITORed for a few seconds, which slows
    the nodes while it lasts: the throughput pairs run without it."""
    broker = RedisServer()
    store_cluster: Cluster | None = None
    store_single: RedisServer | None = None
    worker = None
    try:
        if cluster:
            store_cluster = Cluster(3)
            store_url, nodes = store_cluster.url, dict(store_cluster.clients)
        else:
            store_single = RedisServer()
            store_url, nodes = store_single.url, {store_single.port: store_single.client}
        os.environ["BENCH_STORE_URL"] = store_url
        client = wl._fanout_client(broker.url)
        worker = CeleryWorker(wl.FANOUT_APP, concurrency=settings.concurrency,
                              env={**wl.fanout_env(broker.url), "BENCH_STORE_URL": store_url},
                              log=wl._log(settings, "fanout-cluster"))
        time.sleep(0.5)
        before = {p: _calls(c) for p, c in nodes.items()}
        import fanout

        monitors: list[Monitor] = []
        store_pids = store_cluster.pids if store_cluster else [store_single.pid]  # type: ignore[union-attr]
        w = worker
        meter = Meter(lambda: {"worker": [w.pid], "broker": [broker.pid],
                               "store": store_pids}, interval=0.5, split=("worker",)).start()
        t0 = time.monotonic()
        client.send_sync(fanout.Event(name="bench/load", data={"n": n},
                                      id=f"load-{os.urandom(8).hex()}"))
        next_line = t0 + 10
        sampled = not (cluster and monitor)
        while True:
            time.sleep(0.1)
            done = int(broker.client.get(wl.DONE) or 0)
            now = time.monotonic()
            if not sampled and done >= MONITOR_AT * n:
                monitors = [Monitor(p) for p in nodes]
                for m in monitors:
                    m.start()
                time.sleep(MONITOR_S)
                for m in monitors:
                    m.stop_flag.set()
                for m in monitors:
                    m.join(timeout=10)
                sampled = True
            if now >= next_line:
                _say(f"{'cluster' if cluster else '1 node'}: {done:,}/{n:,} runs, "
                     f"{done / (now - t0):.0f}/s")
                next_line = now + 10
            if done >= n:
                break
            if now - t0 > max(300, n / 10):
                raise TimeoutError(f"only {done}/{n} runs in {now - t0:.0f}s")
        wall = time.monotonic() - t0
        meter.stop()
        after = {p: _calls(c) for p, c in nodes.items()}
        per_node: dict[str, Any] = {}
        for p in nodes:
            # Our own: one INFO commandstats and one INFO stats per snapshot; MONITOR.
            d = acc.delta(before[p][0], after[p][0], {"info": 2})
            d.pop("monitor", None)
            per_node[str(p)] = {"commands": sum(d.values()), "by_command": d,
                                "round_trips": after[p][1] - before[p][1] - 3,
                                # Bytes the clients sent (our INFO calls are a few dozen).
                                "in_bytes": after[p][2] - before[p][2]}
        out: dict[str, Any] = {"n": n, "cluster": cluster, "wall_s": wall,
                               "runs_per_s": n / wall, "nodes": per_node,
                               # CPU ms per run: the worker's processes, the broker, the
                               # store's server(s).
                               "cpu_ms_per_run": _cpu_per_run(meter.cpu(), n)}
        if monitors:
            out["monitor"] = _key_accounting(monitors)
        return out
    finally:
        if worker is not None:
            worker.stop()
        for s in (store_single, broker):
            if s is not None:
                s.stop()
        if store_cluster is not None:
            store_cluster.stop()
        os.environ.pop("BENCH_STORE_URL", None)


def _key_accounting(monitors: list[Monitor]) -> dict[str, Any]:
    commands: list[list[str]] = []
    node_of: dict[str, int] = {}
    by_source: Counter[str] = Counter()
    for m in monitors:
        for line in m.lines:
            parsed = acc.parse_monitor_line(line)
            if parsed is None:
                continue
            src, args = parsed
            if args and args[0].lower() in ("info", "monitor"):
                continue
            by_source[src] += 1
            commands.append(args)
            for k in acc.command_keys(args):
                node_of.setdefault(k, m.port)
    counts = acc.key_counts(commands)
    total = len(commands)
    fam: Counter[str] = Counter()
    for k, v in counts.items():
        fam[acc.key_family(k)] += v
    top = [{"key": k, "commands": v, "share": v / total, "node": node_of.get(k)}
           for k, v in counts.most_common(200)]
    return {"sampled_commands": total, "by_source": dict(by_source), "top_keys": top,
            "top_families": [{"family": f, "commands": v, "share": v / total,
                              "keys": sum(1 for k in counts if acc.key_family(k) == f)}
                             for f, v in fam.most_common(12)]}


def report(single: dict[str, Any] | None, clus: dict[str, Any],
           pairs: list[dict[str, Any]] | None = None) -> str:
    n = clus["n"]
    totals = {p: v["commands"] for p, v in clus["nodes"].items()}
    name, share, factor = acc.busiest_vs_fair(totals)
    lines = [f"## Cluster: workload A, N = {n:,}, store on 3 masters "
             f"(`python -m bench --cluster --n {n}`)", "",
             "| node | store commands | per run | share | round trips per run | bytes in per "
             "run | top commands per run |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for p, v in clus["nodes"].items():
        top = sorted(v["by_command"].items(), key=lambda kv: -kv[1])[:5]
        lines.append(f"| :{p} | {v['commands']:,} | {v['commands'] / n:.1f} | "
                     f"{100 * v['commands'] / sum(totals.values()):.1f} % | "
                     f"{v['round_trips'] / n:.1f} | {v.get('in_bytes', 0) / n:,.0f} | "
                     + ", ".join(f"{k} {c / n:.2f}" for k, c in top) + " |")
    lines += ["", f"Busiest node :{name}: {100 * share:.1f} % of the store's commands = "
              f"{factor:.2f} × its fair share (target ≤ 1.10). All nodes: "
              f"{sum(totals.values()) / n:.1f} commands per run.",
              f"Throughput: {clus['runs_per_s']:.0f} runs/s on 3 masters"
              + (f", {single['runs_per_s']:.0f} runs/s with the store on 1 plain "
                 f"redis-server ({clus['runs_per_s'] / single['runs_per_s']:.2f}×; one run "
                 "each, same broker layout; the cluster run's nodes were MONITORed for "
                 f"{MONITOR_S:.0f} s)" if single else "") + "."]
    if pairs:
        ratios = [p["cluster"] / p["single"] for p in pairs]
        lines += ["", f"Throughput pairs without MONITOR (`--cluster-reps {len(pairs)}`, "
                  "interleaved, the order alternating): 3 masters ÷ 1 server = "
                  + acc.fmt_spread({"median": statistics.median(ratios), "min": min(ratios),
                                      "max": max(ratios)}, 2) + " ("
                  + ", ".join(f"{p['cluster']:.0f}/{p['single']:.0f}" for p in pairs)
                  + " runs/s); target ≥ 1.", "",
                  "CPU per run in those pairs, median (ms; the worker's processes, its main "
                  "process and its pool apart, the broker, the store's servers). The broker "
                  "does the same work in both layouts: its ratio is what the machine charges "
                  "for running more processes, not what fanout does:", "",
                  "| store | worker | worker main | worker pool | broker | store servers | all |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        groups = ("worker", "worker main", "worker pool", "broker", "store")
        med = {key: [statistics.median(p[key].get(g, 0.0) for p in pairs) for g in groups]
               for key in ("cpu_cluster", "cpu_single")}
        for label, key in (("3 masters", "cpu_cluster"), ("1 server", "cpu_single")):
            cols = med[key]
            lines.append(f"| {label} | " + " | ".join(f"{c:.2f}" for c in cols)
                         + f" | {cols[0] + cols[3] + cols[4]:.2f} |")
        lines.append("| 3 masters ÷ 1 server | " + " | ".join(
            f"{a / b:.2f}" if b else "–" for a, b in zip(med["cpu_cluster"], med["cpu_single"],
                                                         strict=True)) + " | |")
    mon = clus.get("monitor")
    if mon:
        lines += ["", f"Top keys by share of the store's commands (MONITOR on every node for "
                  f"{MONITOR_S:.0f} s from {int(100 * MONITOR_AT)} % done: "
                  f"{mon['sampled_commands']:,} commands, {mon['by_source'].get('lua', 0):,} "
                  "of them from scripts; target: no key > 2 %):", "",
                  "| key | node | share |", "| --- | --- | --- |"]
        glob = [r for r in mon["top_keys"] if acc.key_family(r["key"]) == r["key"]]
        for row in glob[:10]:
            lines.append(f"| `{row['key']}` | :{row['node']} | {100 * row['share']:.1f} % |")
        busiest = mon["top_keys"][:1]
        if busiest:
            lines += ["", f"Busiest single key: `{busiest[0]['key']}`, "
                      f"{100 * busiest[0]['share']:.2f} % of the sample."]
        for what, part in (("Metrics shards", ":metrics:{"), ("Timer sets", ":timers"),
                           ("Run index shards", ":idx:")):
            shards = [r for r in mon["top_keys"] if part in r["key"] and ":run:{" not in r["key"]]
            if shards:
                lines += [f"{what} in the sample: {len(shards)} keys, "
                          f"{100 * sum(r['share'] for r in shards):.1f} % together, the "
                          f"largest {100 * max(r['share'] for r in shards):.2f} %."]
        lines += ["", "Keys of one run, event or batch (a family of many keys): the family's "
                  "share of the sample, and one key's share of the whole fan-out (the family's "
                  "share ÷ N; a short sample over-counts the few runs in it):", "",
                  "| family | keys in the sample | family share | one key over the fan-out |",
                  "| --- | --- | --- | --- |"]
        for row in mon["top_families"][:8]:
            if row["family"] == acc.key_family(row["family"]) and "{*}" not in row["family"] \
                    and "#" not in row["family"]:
                continue
            lines.append(f"| `{row['family']}` | {row['keys']:,} | {100 * row['share']:.1f} % "
                         f"| {100 * row['share'] / n:.4f} % |")
    return "\n".join(lines)


def main(args: argparse.Namespace, settings: wl.Settings) -> int:
    n = args.cluster_n
    _say(f"store on 1 plain redis-server, N = {n:,}")
    single = run_store(n, settings, cluster=False)
    _say(f"store on 3 cluster masters, N = {n:,}")
    clus = run_store(n, settings, cluster=True)
    pairs: list[dict[str, float]] = []
    for rep in range(args.cluster_reps):
        # Interleaved, the order alternating: A B, B A, ...
        order = (False, True) if rep % 2 else (True, False)
        got: dict[bool, dict[str, Any]] = {}
        for on_cluster in order:
            _say(f"throughput pair {rep + 1}/{args.cluster_reps}: "
                 f"{'3 masters' if on_cluster else '1 server'}, N = {n:,}")
            got[on_cluster] = run_store(n, settings, cluster=on_cluster, monitor=False)
        pairs.append({"cluster": got[True]["runs_per_s"], "single": got[False]["runs_per_s"],
                      "cpu_cluster": got[True]["cpu_ms_per_run"],
                      "cpu_single": got[False]["cpu_ms_per_run"]})
    md = report(single, clus, pairs)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"cluster-{stamp}.json").write_text(json.dumps(
        {"single": single, "cluster": clus, "pairs": pairs, "rev": wl.git_rev()}, indent=1,
        default=str))
    (args.out / f"cluster-{stamp}.md").write_text(md)
    print(md)
    return 0
