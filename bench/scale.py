"""``python -m bench --scale [--n 1000000]``: workload A at large N, unattended.

1. A reference run at N = 10,000 (same code, fresh redis-server and worker).
2. The large run: a progress line every 10 s (runs done, rate, worker RSS, Redis
   ``used_memory``); then throughput against the reference (median [min–max] of the
   10-second windows, first and last windows left out), worker RSS over time, Redis
   ``used_memory`` at the peak and per finished run, and every key family that grew
   with N (SCAN, then ``MEMORY USAGE``/TTL/cardinality on a sample of each family),
   with what bounds it.
3. Retention: the worker runs with a short retention (``BENCH_RETENTION``; the public
   setting refuses less than an hour), the bench waits until it has passed for every
   run, runs the index prune the workers run hourly (``History.prune``), waits for
   Redis to expire the keys, and compares ``used_memory`` with the start; then the
   same at rest (:func:`_idle_memory`: the scripts loaded at both ends, less the
   client buffers and Redis's per-command statistics, which do not grow with N).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import redis

from bench import accounting as acc
from bench import workloads as wl
from bench.harness import CeleryWorker, RedisServer, _sample, _tree, wait_until

SAMPLE_PER_FAMILY = 40


def _say(msg: str) -> None:
    print(f"[scale] {msg}", file=sys.stderr, flush=True)


def scan_families(r: redis.Redis) -> dict[str, acc.Family]:
    """Every key grouped by family, with a sample's memory, TTL and cardinality."""
    fams: dict[str, acc.Family] = {}
    samples: dict[str, list[bytes]] = {}
    for key in r.scan_iter(count=2000):
        fam = acc.key_family(key.decode(errors="replace"))
        f = fams.setdefault(fam, acc.Family())
        f.keys += 1
        s = samples.setdefault(fam, [])
        if len(s) < SAMPLE_PER_FAMILY:
            s.append(key)
    for fam, keys in samples.items():
        pipe = r.pipeline(transaction=False)
        for k in keys:
            pipe.type(k)
            pipe.pttl(k)
            pipe.memory_usage(k, samples=0)
        got = pipe.execute()
        card = r.pipeline(transaction=False)
        types = []
        for i, k in enumerate(keys):
            typ, ttl, mem = got[3 * i].decode(), got[3 * i + 1], got[3 * i + 2]
            if typ == "none":
                continue
            f = fams[fam]
            f.sampled += 1
            f.sampled_bytes += int(mem or 0)
            f.with_ttl += int(ttl is not None and ttl > 0)
            f.types[typ] += 1
            types.append(typ)
            {"zset": card.zcard, "hash": card.hlen, "set": card.scard, "list": card.llen,
             "stream": card.xlen}.get(typ, card.strlen)(k)
        sizes = card.execute()
        f = fams[fam]
        f.elements += sum(int(x or 0) for t, x in zip(types, sizes, strict=True) if t != "string")
    return fams


def _rss(pid: int) -> tuple[int, int]:
    """(RSS of the worker's whole tree, RSS of its largest process), bytes."""
    total, largest = 0, 0
    for p in _tree(pid):
        s = _sample(p)
        if s is not None:
            total += s[1]
            largest = max(largest, s[1])
    return total, largest


def one_run(n: int, settings: wl.Settings, retention: float | None, *, every: float = 10.0,
            families: bool = True) -> dict[str, Any]:
    """Workload A at ``n`` with progress lines; with ``retention`` the run also waits
    for the retention to pass and measures what is left."""
    server = RedisServer()
    worker = None
    env_ret = {"BENCH_RETENTION": str(retention)} if retention else {}
    os.environ.pop("BENCH_RETENTION", None)
    os.environ.update(env_ret)
    try:
        client = wl._fanout_client(server.url)
        env = {**wl.fanout_env(server.url), **env_ret}
        worker = CeleryWorker(wl.FANOUT_APP, concurrency=settings.concurrency, env=env,
                              log=wl._log(settings, "fanout-scale"))
        r = server.client
        time.sleep(1.0)
        mem0 = int(r.info("memory")["used_memory"])
        client.runtime.store.scripts.load_all()
        # Redis updates each client's memory figure in its cron, every few seconds.
        time.sleep(5.0)
        mem0_idle = _idle_memory(r)
        stats0 = _memory_stats(r)
        fam0 = scan_families(r) if families else {}
        import fanout

        eid = f"load-{os.urandom(8).hex()}"
        t0 = time.monotonic()
        client.send_sync(fanout.Event(name="bench/load", data={"n": n}, id=eid))
        series: list[dict[str, float]] = []
        last_t, last_done, next_line = t0, 0, t0 + every
        timeout = max(300.0, n / 10)
        while True:
            time.sleep(1.0)
            now = time.monotonic()
            done = int(r.get(wl.DONE) or 0)
            if now >= next_line or done >= n:
                rss, largest = _rss(worker.pid)
                mem = int(r.info("memory")["used_memory"])
                rate = (done - last_done) / (now - last_t)
                series.append({"t": now - t0, "done": done, "rate": rate, "rss": rss,
                               "rss_largest": largest, "used_memory": mem,
                               "full": float(now >= next_line)})
                _say(f"n={n:,} t={now - t0:6.0f}s done={done:>9,} ({100 * done / n:5.1f} %) "
                     f"rate={rate:6.0f}/s overall={done / (now - t0):6.0f}/s "
                     f"worker RSS={rss / 2**20:6.0f} MB (largest {largest / 2**20:.0f}) "
                     f"redis used_memory={mem / 2**20:7.1f} MB")
                last_t, last_done, next_line = now, done, now + every
            if done >= n:
                break
            if now - t0 > timeout:
                raise TimeoutError(f"only {done}/{n} runs done in {timeout:.0f}s")
        wall = time.monotonic() - t0
        t_end = time.time()
        ids = wl._child_run_ids(n, eid)
        # A run that ended may already have expired (short retention): "missing".
        statuses = wait_until(lambda: (lambda st: st if st.get("completed", 0)
                                       + st.get("missing", 0) == n else None)(
            wl._statuses(r, ids)), 300, interval=1.0, what="every run ended")
        mem_info = r.info("memory")
        mem_end = int(mem_info["used_memory"])
        out: dict[str, Any] = {
            "n": n, "wall_s": wall, "runs_per_s": n / wall,
            # Windows of a full period, without the first (loader, ramp-up).
            "window_rates": [s["rate"] for s in series[1:] if s["full"]],
            "series": series, "mem_start": mem0, "mem_start_idle": mem0_idle,
            "mem_end": mem_end,
            "mem_peak": int(mem_info["used_memory_peak"]),
            "bytes_per_run": (mem_end - mem0) / n, "retention": retention,
            "statuses": statuses,
        }
        if families:
            fam1 = scan_families(r)
            out["families_end"] = _fam_rows(fam1)
            out["growth"] = acc.growth(fam0, fam1, n)
        if retention:
            out.update(_after_retention(r, client, t_end, retention, mem0, every))
            out["memory_stats_start"] = stats0
            out["mem_after_idle"] = _idle_memory(r)
            out["idle_after_vs_start"] = out["mem_after_idle"] / mem0_idle - 1
            out["memory_stats_after"] = _memory_stats(r)
        return out
    finally:
        if worker is not None:
            worker.stop()
        server.stop()
        os.environ.pop("BENCH_RETENTION", None)


def _idle_memory(r: redis.Redis) -> int:
    """Bytes Redis holds for fanout's data and code at rest: ``total.allocated`` less
    the client connections' buffers (``clients.normal``: how many processes are
    connected, not how many runs there were), with the scripts loaded (the caller
    loads them) and without Redis's own per-command statistics. Redis keeps a latency
    histogram for every command name it has served (``latency-tracking``, on by
    default), about 1 MB for the few dozen commands a worker uses; they grow with the
    set of commands, not with the runs, and no retention removes them. ``CONFIG
    RESETSTAT`` frees them, so both ends of the comparison are read after one."""
    r.config_resetstat()
    st = r.memory_stats()
    return int(st["total.allocated"]) - int(st["clients.normal"])


def _memory_stats(r: redis.Redis) -> dict[str, Any]:
    """``MEMORY STATS``' numeric fields, flattened (``db.0.overhead.hashtable.main``)."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else str(k), x)
        elif isinstance(v, (int, float)):
            flat[prefix] = v

    walk("", r.memory_stats())
    return flat


def _fam_rows(fams: dict[str, acc.Family]) -> list[dict[str, Any]]:
    return [{"family": k, "keys": f.keys, "est_bytes": f.est_bytes,
             "est_elements": f.est_elements, "ttl_share": f.with_ttl / f.sampled if f.sampled
             else 0.0, "types": dict(f.types), "bound": acc.bound_of(k)}
            for k, f in sorted(fams.items(), key=lambda kv: -kv[1].est_bytes)]


def _after_retention(r: redis.Redis, client: Any, t_end: float, retention: float,
                     mem0: int, every: float) -> dict[str, Any]:
    due = t_end + retention + 2
    _say(f"waiting {due - time.time():.0f}s for the retention ({retention:.0f}s) to pass")
    while time.time() < due:
        time.sleep(min(every, max(0.0, due - time.time())))
        _say(f"retention: {max(0.0, due - time.time()):5.0f}s left, dbsize={r.dbsize():,} "
             f"used_memory={int(r.info('memory')['used_memory']) / 2**20:.1f} MB")
    from fanout._redis.history import History

    t = time.monotonic()
    rep = History(client.runtime.store).prune()
    prune_s = time.monotonic() - t
    # Redis expires keys gradually (active expiry); wait until the key count settles.
    last = -1
    for _ in range(120):
        size = r.dbsize()
        if size == last:
            break
        last = size
        time.sleep(2.0)
    mem = int(r.info("memory")["used_memory"])
    fams = scan_families(r)
    return {"mem_after_retention": mem, "after_vs_start": mem / mem0 - 1,
            "prune": {"runs_removed": rep.runs_removed, "events_removed": rep.events_removed,
                      "seconds": prune_s},
            "families_after_retention": _fam_rows(fams)}


def report(ref: dict[str, Any], big: dict[str, Any], settings: wl.Settings) -> str:
    n = big["n"]
    rb, rr = acc.spread(big["window_rates"] or [big["runs_per_s"]]), \
        acc.spread(ref["window_rates"] or [ref["runs_per_s"]])
    ratio = big["runs_per_s"] / ref["runs_per_s"]
    series = big["series"]
    q = [s for s in series if s["done"] >= n / 4] or series
    rss_q, rss_end = q[0]["rss"], series[-1]["rss"]
    slope = (rss_end - rss_q) / max(1, series[-1]["done"] - q[0]["done"])
    lines = [
        f"## Scale: workload A at N = {n:,} (`python -m bench --scale --n {n}`)", "",
        f"{settings.concurrency} worker processes; broker and store on one private "
        + (f"redis-server; retention {big['retention']:.0f} s (bench setting)." if big["retention"]
         else "redis-server; the default retention, not waited for (--no-retention-wait)."),
        "",
        "| figure | value |", "| --- | --- |",
        f"| wall time | {big['wall_s']:,.0f} s |",
        f"| throughput, whole run | {big['runs_per_s']:,.0f} runs/s |",
        f"| throughput, 10-s windows, median [min–max] | {acc.fmt_spread(rb, 0)} runs/s |",
        f"| reference N = {ref['n']:,}: whole run / windows | {ref['runs_per_s']:,.0f} runs/s / "
        f"{acc.fmt_spread(rr, 0)} |",
        f"| N = {n:,} ÷ N = {ref['n']:,} throughput | {ratio:.2f} (target ≥ 0.90) |",
        f"| worker RSS (all processes) at 25 % / end | {rss_q / 2**20:.0f} MB / "
        f"{rss_end / 2**20:.0f} MB ({slope:+.1f} bytes per run after 25 %) |",
        f"| worker RSS range over the run | {min(s['rss'] for s in series) / 2**20:.0f}–"
        f"{max(s['rss'] for s in series) / 2**20:.0f} MB |",
        f"| Redis used_memory: start / peak / end | {big['mem_start'] / 2**20:.1f} / "
        f"{big['mem_peak'] / 2**20:.1f} / {big['mem_end'] / 2**20:.1f} MB |",
        f"| bytes per finished run (end − start) ÷ N | {big['bytes_per_run']:,.0f} |",
        f"| projected time for N = 1,000,000 at this rate | "
        f"{1_000_000 / big['runs_per_s'] / 60:.0f} min |",
    ]
    if "mem_after_retention" in big:
        ok = "yes" if abs(big["after_vs_start"]) <= 0.05 else "**no**"
        lines.append(f"| used_memory after retention + prune | "
                     f"{big['mem_after_retention'] / 2**20:.1f} MB, "
                     f"{100 * big['after_vs_start']:+.1f} % vs start (within 5 %: {ok}); "
                     f"prune removed {big['prune']['runs_removed']:,} run and "
                     f"{big['prune']['events_removed']:,} event index entries in "
                     f"{big['prune']['seconds']:.1f} s |")
        ok = "yes" if abs(big["idle_after_vs_start"]) <= 0.05 else "**no**"
        lines.append(f"| the same at rest: scripts loaded, less client buffers and Redis's "
                     f"per-command statistics (bench/scale.py `_idle_memory`) | "
                     f"{big['mem_start_idle'] / 2**20:.2f} MB before, "
                     f"{big['mem_after_idle'] / 2**20:.2f} MB after: "
                     f"{100 * big['idle_after_vs_start']:+.1f} % (within 5 %: {ok}) |")
    lines += ["", "Key families that grew with N (per finished run; bytes from MEMORY USAGE "
              "of up to 40 keys per family, scaled to the family's key count):", "",
              "| family | keys/run | elements/run | bytes/run | with TTL | bounded by |",
              "| --- | --- | --- | --- | --- | --- |"]
    ends = {row["family"]: row for row in big.get("families_end", [])}
    for fam, kpr, epr, bpr in big.get("growth", []):
        row = ends.get(fam, {})
        bound = row.get("bound", "unknown")
        if not fam.startswith("fanout:"):
            bound = "not fanout's store (broker queues or the bench's counter)"
        lines.append(f"| `{fam}` | {kpr:.2f} | {epr:.2f} | {bpr:,.0f} | "
                     f"{100 * row.get('ttl_share', 0):.0f} % | {bound} |")
    if "families_after_retention" in big:
        left = [r for r in big["families_after_retention"] if r["est_bytes"] > 0]
        lines += ["", "Left after the retention: " + (", ".join(
            f"`{r['family']}` ({r['keys']} keys, {r['est_bytes'] / 1024:.1f} KiB)"
            for r in left[:12]) or "nothing") + "."]
    return "\n".join(lines)


def main(args: argparse.Namespace, settings: wl.Settings) -> int:
    n = args.scale_n
    _say(f"reference run, N = {args.reference_n:,} ({time.strftime('%H:%M:%S')})")
    ref = one_run(args.reference_n, settings, None, families=False)
    _say(f"reference: {ref['runs_per_s']:.0f} runs/s; projected {n / ref['runs_per_s'] / 60:.1f} "
         f"min for N = {n:,}")
    retention = None if args.no_retention_wait else (
        args.retention or max(60.0, 1.2 * n / ref["runs_per_s"] + 60))
    big = one_run(n, settings, retention)
    md = report(ref, big, settings)
    args.out.mkdir(parents=True, exist_ok=True)
    import json

    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"scale-{stamp}.json").write_text(json.dumps(
        {"reference": ref, "big": big, "rev": wl.git_rev()}, indent=1, default=str))
    (args.out / f"scale-{stamp}.md").write_text(md)
    print(md)
    return 0
