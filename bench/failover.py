"""``python -m bench --failover [--n 10000] [--failover-mode force,kill] [--reps 2]``:
workload A with the state store on a Redis Cluster of 3 masters, each with one
replica, and one master failed over in the middle of the fan-out.

Modes:

* ``force``: ``CLUSTER FAILOVER FORCE`` on the master's replica. The master stays up
  and becomes a replica of the new master; writes it acknowledged that had not yet
  reached the replica are gone.
* ``kill``: ``kill -9`` of the master; its replica is promoted by the cluster's own
  election once the master is seen failing (``cluster-node-timeout``).
* ``takeover``: ``kill -9`` of the master, then ``CLUSTER FAILOVER TAKEOVER`` on its
  replica at once (no election; what an operator or a supervisor does).

Every step execution is counted outside the store (``BENCH_EFFECTS=1``: an ``HINCRBY``
per step body on the broker, a plain redis-server), so a step that ran again because
the failover lost its saved result shows as a count of 2. After the fan-out (or the
settle time), every run's status is read from the cluster: completed, missing (lost:
its run hash is gone) or anything else (stuck). The worker log is read for the
outage as the workers saw it (fanout's outage lines, at INFO for the ``fanout``
logger) and for its size during the outage.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from bench import workloads as wl
from bench.harness import CeleryWorker, RedisServer, free_port, wait_until

MODES = ("force", "kill", "takeover")
_RECOVERED = re.compile(r"fanout: (.+?) recovered after an outage of ([0-9.]+)s")


def _say(msg: str) -> None:
    print(f"[failover] {msg}", file=sys.stderr, flush=True)


def _node(port: int) -> redis.Redis:
    return redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=2)


def _try(fn: Any, default: Any = None) -> Any:
    try:
        return fn()
    except (redis.RedisError, OSError):
        return default


class ReplicatedCluster:
    """``masters`` redis-server masters, each with one replica, on loopback ports."""

    def __init__(self, masters: int = 3, node_timeout_ms: int = 3000) -> None:
        exe, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if exe is None or cli is None:
            raise RuntimeError("--failover needs redis-server and redis-cli on PATH")
        self.dir = Path(tempfile.mkdtemp(prefix="fanout-bench-failover-"))
        self.ports = [free_port() for _ in range(2 * masters)]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        for port in self.ports:
            d = self.dir / str(port)
            d.mkdir()
            self.procs[port] = subprocess.Popen(
                [exe, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-port", str(free_port()), "--cluster-config-file", "nodes.conf",
                 "--cluster-node-timeout", str(node_timeout_ms), "--save", "",
                 "--appendonly", "no", "--dir", str(d)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for port in self.ports:
            wait_until(lambda p=port: _try(lambda: _node(p).ping(), False), 20,
                       what="cluster node start")
        subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                        "--cluster-replicas", "1", "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)
        wait_until(self.healthy, 60, interval=0.2, what="cluster_state:ok with replicas in sync")
        self.seed = self.masters()[0][0]
        self.url = f"redis+cluster://127.0.0.1:{self.seed}"

    def alive(self) -> list[int]:
        return [p for p, proc in self.procs.items() if proc.poll() is None]

    def nodes(self) -> list[dict[str, Any]]:
        """``CLUSTER NODES`` as seen by a live node: port, id, role, master id, flags."""
        for port in self.alive():
            raw = _try(lambda p=port: _node(p).execute_command("CLUSTER", "NODES"))
            if raw is None:
                continue
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            out = []
            for line in text.splitlines():
                f = line.split()
                flags = f[2].split(",")
                out.append({"id": f[0], "port": int(f[1].split("@")[0].rsplit(":", 1)[1]),
                            "role": "master" if "master" in flags else "replica",
                            "master": f[3], "fail": "fail" in flags or "fail?" in flags,
                            "slots": f[8:]})
            return out
        return []

    def masters(self) -> list[tuple[int, int]]:
        """(master port, replica port) of every master with a replica, by port."""
        nodes = self.nodes()
        by_id = {n["id"]: n for n in nodes}
        pairs = [(by_id[n["master"]]["port"], n["port"]) for n in nodes
                 if n["role"] == "replica" and n["master"] in by_id]
        return sorted(pairs)

    def healthy(self) -> bool:
        """Every live node reports cluster_state:ok, and each master with slots has a
        replica whose link is up (so the next failover has somewhere to go)."""
        for port in self.alive():
            info = _try(lambda p=port: _node(p).cluster("info"), {})
            if info.get("cluster_state") != "ok":
                return False
        pairs = self.masters()
        if len(pairs) < len(self.ports) // 2:
            return False
        for _, replica in pairs:
            rep = _try(lambda p=replica: _node(p).info("replication"), {})
            if rep.get("master_link_status") != "up":
                return False
        return True

    def serving(self) -> bool:
        """Every live node reports cluster_state:ok (all slots have a reachable master)."""
        for port in self.alive():
            info = _try(lambda p=port: _node(p).cluster("info"), {})
            if info.get("cluster_state") != "ok":
                return False
        return True

    def role(self, port: int) -> str:
        info = _try(lambda: _node(port).info("replication"), {})
        return str(info.get("role", "?"))

    def kill(self, port: int) -> None:
        proc = self.procs[port]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def fail_over(cluster: ReplicatedCluster, mode: str, master: int, replica: int) -> None:
    """Start the failover of ``master`` to ``replica``; returns at once."""
    if mode == "force":
        _node(replica).execute_command("CLUSTER", "FAILOVER", "FORCE")
    elif mode == "kill":
        cluster.kill(master)
    elif mode == "takeover":
        cluster.kill(master)
        _node(replica).execute_command("CLUSTER", "FAILOVER", "TAKEOVER")
    else:
        raise ValueError(f"unknown failover mode {mode!r}; expected one of {', '.join(MODES)}")


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except OSError:
        return []


def run_once(n: int, mode: str, settings: wl.Settings, *, at: float = 0.5,
             settle: float = 180.0, node_timeout_ms: int = 3000) -> dict[str, Any]:
    """One fan-out of ``n`` runs with one master failed over once ``at`` × n are done."""
    broker = RedisServer()
    cluster: ReplicatedCluster | None = None
    worker = None
    try:
        cluster = ReplicatedCluster(3, node_timeout_ms)
        pairs = cluster.masters()
        # Not the seed node: the bench's own reads seed from it (the workers' clients
        # know every node once started, so the seed does not matter to them).
        master, replica = next(p for p in pairs if p[0] != cluster.seed)
        os.environ["BENCH_STORE_URL"] = cluster.url
        client = wl._fanout_client(broker.url)
        log = wl._log(settings, f"failover-{mode}")
        worker = CeleryWorker(
            wl.FANOUT_APP, concurrency=settings.concurrency,
            env={**wl.fanout_env(broker.url, recovery=settings.recovery_timeout, effects=True),
                 "BENCH_STORE_URL": cluster.url, "BENCH_FANOUT_LOG": "INFO"},
            log=log)
        r = broker.client
        import fanout

        eid = f"load-{os.urandom(8).hex()}"
        lines_before_start = len(_lines(log))
        t0 = time.monotonic()
        client.send_sync(fanout.Event(name="bench/load", data={"n": n}, id=eid))
        wait_until(lambda: int(r.get(wl.DONE) or 0) >= at * n, max(300, n / 10),
                   interval=0.05, what=f"{int(at * 100)} % of the runs done")
        done_at_failover = int(r.get(wl.DONE) or 0)
        lines_at_failover = len(_lines(log))
        t_fail = time.monotonic()
        _say(f"{mode}: failing over :{master} -> :{replica} at {done_at_failover:,}/{n:,} "
             f"({t_fail - t0:.1f}s)")
        fail_over(cluster, mode, master, replica)
        promoted_s = serving_s = resumed_s = float("nan")
        lines_at_resume = -1
        deadline = t_fail + settle
        while time.monotonic() < deadline:
            now = time.monotonic()
            if promoted_s != promoted_s and cluster.role(replica) == "master":
                promoted_s = now - t_fail
            if promoted_s == promoted_s and serving_s != serving_s and cluster.serving():
                serving_s = now - t_fail
            done = int(r.get(wl.DONE) or 0)
            if resumed_s != resumed_s and serving_s == serving_s and done > done_at_failover:
                # the first completion once the cluster serves every slot again
                resumed_s = now - t_fail
                lines_at_resume = len(_lines(log))
            if done >= n:
                break
            time.sleep(0.05)
        lines_after_outage = lines_at_resume if lines_at_resume >= 0 else len(_lines(log))
        ids = wl._child_run_ids(n, eid)
        store = RedisCluster(host="127.0.0.1", port=cluster.seed)

        def statuses() -> dict[str, int]:
            return wl._statuses(store, ids)  # type: ignore[arg-type]

        # Every completion counted (a step run twice counts twice): wait for the
        # statuses themselves until the settle time is over.
        counts = statuses()
        while counts.get("completed", 0) < n and time.monotonic() < deadline:
            time.sleep(1.0)
            counts = statuses()
        wall = time.monotonic() - t0
        all_done_s = time.monotonic() - t_fail if counts.get("completed", 0) == n \
            else float("nan")
        dup: dict[str, int] = {}
        runs_with_dup: set[str] = set()
        executions: dict[str, int] = {}
        for s in ("s1", "s2", "s3"):
            got = {k.decode(): int(v) for k, v in r.hgetall(f"bench:fx:{s}").items()}
            executions[s] = sum(got.values())
            dup[s] = sum(c - 1 for c in got.values() if c > 1)
            runs_with_dup |= {k for k, c in got.items() if c > 1}
        never_ran = n - len({k.decode() for k in r.hkeys("bench:fx:s1")})
        lines = _lines(log)
        outage_lines = lines[lines_at_failover:lines_after_outage]
        recovered = [(m.group(1), float(m.group(2))) for line in lines
                     if (m := _RECOVERED.search(line))]
        warnings = [line for line in lines if "fanout:" in line and "failed (" in line]
        completed = counts.get("completed", 0)
        missing = counts.get("missing", 0)
        out: dict[str, Any] = {
            "n": n, "mode": mode, "failed_over": f":{master} -> :{replica}",
            "at_done": done_at_failover, "failover_at_s": t_fail - t0,
            "completed": completed, "lost": missing, "stuck": n - completed - missing,
            "statuses": counts, "never_started_s1": never_ran,
            "duplicate_step_executions": sum(dup.values()), "duplicates_by_step": dup,
            "runs_with_a_duplicate": len(runs_with_dup), "step_executions": executions,
            "promoted_s": promoted_s, "all_slots_served_s": serving_s,
            "first_completion_after_s": resumed_s, "all_done_after_s": all_done_s,
            "wall_s": wall, "runs_per_s_before": done_at_failover / (t_fail - t0),
            "log_lines_before": lines_at_failover - lines_before_start,
            "log_lines_outage": len(outage_lines), "log_lines_total": len(lines),
            "log_warnings_outage": sum(1 for line in outage_lines if ": WARNING/" in line),
            "log_lines_outage_without_backlog": sum(
                1 for line in outage_lines if "queued run(s) not offered again" not in line),
            "log_lines_after_failover": len(lines) - lines_at_failover,
            "outage_warnings": len(warnings),
            "outages_seen_by_workers_s": sorted(round(s, 1) for _, s in recovered),
            "outage_loops": sorted({w for w, _ in recovered}),
            "worker_alive": worker.alive(), "node_timeout_ms": node_timeout_ms,
            "recovery_timeout_s": settings.recovery_timeout, "settle_s": settle,
            "log": str(log),
        }
        store.close()
        return out
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()
        if cluster is not None:
            cluster.stop()
        os.environ.pop("BENCH_STORE_URL", None)


def probe_settings(node_timeout_ms: int = 3000, count: int = 2000) -> dict[str, Any]:
    """What ``WAIT 1`` costs a write here, and what ``min-replicas-to-write 1`` does to
    a master promoted by a failover (it has no replica of its own): one small cluster,
    no workers."""
    cluster = ReplicatedCluster(3, node_timeout_ms)
    try:
        master, replica = next(p for p in cluster.masters() if p[0] != cluster.seed)
        c = _node(master)
        ranges = [tuple(int(x) for x in (r.split("-") * 2)[:2])
                  for r in next(n["slots"] for n in cluster.nodes() if n["port"] == master)
                  if not r.startswith("[")]
        # a name that hashes to one of this master's slots, so the master takes the writes
        name = next(f"probe-{i}" for i in range(1_000_000)
                    if any(lo <= key_slot(f"probe-{i}".encode()) <= hi for lo, hi in ranges))
        keys = [name]

        def timed(wait: bool) -> list[float]:
            out = []
            for i in range(count):
                t = time.perf_counter()
                c.set(keys[0], i)
                if wait:
                    c.execute_command("WAIT", 1, 100)
                out.append((time.perf_counter() - t) * 1e3)
            return out

        plain = timed(False)
        waited = timed(True)
        acked = int(c.execute_command("WAIT", 1, 100))
        for port in cluster.alive():
            _node(port).config_set("min-replicas-to-write", 1)
        ok_before = _try(lambda: c.set(keys[0], "x"), False)
        cluster.kill(master)
        wait_until(lambda: cluster.role(replica) == "master" and cluster.serving(), 60,
                   interval=0.1, what="the replica promoted")
        refused = ""
        try:
            _node(replica).set(keys[0], "y")
        except redis.RedisError as exc:
            refused = f"{type(exc).__name__}: {exc}"
        return {"set_ms_p50": statistics.median(plain), "set_wait_ms_p50": statistics.median(waited),
                "set_ms_p99": wl.pct(plain, 99), "set_wait_ms_p99": wl.pct(waited, 99),
                "wait_replicas_acked": acked, "count": count,
                "min_replicas_write_before_failover": bool(ok_before),
                "min_replicas_write_after_failover": refused or "accepted"}
    finally:
        cluster.stop()


def _median_range(vals: list[float], digits: int = 1) -> str:
    vals = [v for v in vals if v == v]
    if not vals:
        return "–"
    return f"{statistics.median(vals):.{digits}f} [{min(vals):.{digits}f}–{max(vals):.{digits}f}]"


def report(results: list[dict[str, Any]], command: str, rev: str) -> str:
    head = ["mode", "N", "rep", "completed", "lost", "stuck", "steps run twice (runs)",
            "promoted (s)", "all slots served (s)", "all runs done after (s)",
            "outages the workers logged (s)",
            "worker log during the outage: lines (WARNING lines)", "wall (s)"]
    lines = [f"## Failover: workload A on 3 masters with 1 replica each (`{command}`, {rev})",
             "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for res in results:
        if not res.get("ok", True):
            lines.append(f"| {res.get('mode')} | {res.get('n')} | {res.get('rep', 0) + 1} | "
                         f"failed: {res.get('error', '')[:80]} |" + " |" * (len(head) - 4))
            continue
        seen = ", ".join(f"{s:g}" for s in res["outages_seen_by_workers_s"]) or "none"
        lines.append(
            f"| {res['mode']} | {res['n']:,} | {res.get('rep', 0) + 1} | {res['completed']:,} | "
            f"{res['lost']} | {res['stuck']} | {res['duplicate_step_executions']} "
            f"({res['runs_with_a_duplicate']}) | {res['promoted_s']:.1f} | "
            f"{res['all_slots_served_s']:.1f} | "
            f"{res['all_done_after_s']:.1f} | {seen} | {res['log_lines_outage']} "
            f"({res.get('log_warnings_outage', '?')}) | {res['wall_s']:.1f} |")
    for mode in sorted({r["mode"] for r in results if r.get("ok", True)}):
        rows = [r for r in results if r.get("mode") == mode and r.get("ok", True)]
        lines += ["", f"{mode}: steps run twice {_median_range([r['duplicate_step_executions'] for r in rows], 0)}, "
                  f"all slots served after {_median_range([r['all_slots_served_s'] for r in rows])} s, "
                  f"all runs done after {_median_range([r['all_done_after_s'] for r in rows])} s, "
                  f"worker log lines during the outage {_median_range([r['log_lines_outage'] for r in rows], 0)}."]
    return "\n".join(lines)


def main(args: argparse.Namespace, settings: wl.Settings) -> int:
    n = args.failover_n
    modes = [m.strip() for m in args.failover_mode.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise SystemExit(f"--failover-mode: unknown mode(s) {', '.join(bad)}; "
                         f"expected a comma-separated subset of {', '.join(MODES)}")
    results: list[dict[str, Any]] = []
    for rep in range(args.reps):
        for mode in modes:  # interleaved: force kill force kill ...
            _say(f"{mode}, N = {n:,}, rep {rep + 1}")
            try:
                res = run_once(n, mode, settings, at=args.failover_at, settle=args.settle,
                               node_timeout_ms=args.node_timeout)
                res["ok"] = True
            except Exception as exc:  # noqa: BLE001 - a failed measurement is reported
                import traceback

                traceback.print_exc()
                res = {"ok": False, "mode": mode, "n": n, "error": f"{type(exc).__name__}: {exc}"}
            res["rep"] = rep
            brief = {k: res.get(k) for k in ("completed", "lost", "stuck",
                                             "duplicate_step_executions", "all_slots_served_s",
                                             "first_completion_after_s", "log_lines_outage",
                                             "outages_seen_by_workers_s", "error")}
            _say(f"  {brief}")
            results.append(res)
    command = "python -m bench " + " ".join(sys.argv[1:])
    md = report(results, command, wl.git_rev())
    probe: dict[str, Any] = {}
    if args.failover_probe:
        _say("WAIT 1 and min-replicas-to-write 1 on a replicated cluster")
        probe = probe_settings(args.node_timeout)
        md += (f"\n\n`SET` alone {probe['set_ms_p50']:.3f} ms p50 ({probe['set_ms_p99']:.3f} p99); "
               f"`SET` then `WAIT 1 100` {probe['set_wait_ms_p50']:.3f} ms p50 "
               f"({probe['set_wait_ms_p99']:.3f} p99), {probe['count']:,} each, one client on "
               f"loopback. With `min-replicas-to-write 1`: a write before the failover "
               f"{'accepted' if probe['min_replicas_write_before_failover'] else 'refused'}; "
               f"on the promoted master (no replica): "
               f"{probe['min_replicas_write_after_failover']}.")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"failover-{stamp}.json").write_text(json.dumps(
        {"results": results, "probe": probe, "rev": wl.git_rev(), "command": command}, indent=1, default=str))
    (args.out / f"failover-{stamp}.md").write_text(md)
    print(md)
    ok = all(r.get("ok") and r["lost"] == 0 and r["stuck"] == 0 for r in results)
    return 0 if ok else 1
