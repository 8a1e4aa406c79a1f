"""The workloads: one measured run each, returning a flat dict of numbers.

A. fan-out   — a loader sends N events; each starts a 3-step function of no-op steps
B. latency   — sequential emits, each timed until its run has completed
C. crash     — workload A while the worker is SIGKILLed every ~2 s (first half)
D. timers    — ``ctx.step.sleep`` wake-up lateness; ``wait_for_event`` resolution

Every measured run gets a fresh private redis-server (clean ``INFO commandstats``)
and fresh workers; worker start-up is not timed.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench.harness import (
    CeleryWorker,
    Meter,
    PyProc,
    RedisServer,
    command_delta,
    wait_until,
)

FANOUT_APP = "bench.apps.fanout_app"
CELERY_APP = "bench.apps.celery_app"
LOADER_KEY, ITEM_KEY = "bench:loader", "bench:item"
DONE = "bench:done"


@dataclass
class Settings:
    log_dir: Path
    concurrency: int = 2
    dbos_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    dbos_processes: int = 2
    dbos_threads: int = 4
    dbos_poll: float = 0.05
    recovery_timeout: float = 4.0
    kill_every: float = 2.0


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def _log(settings: Settings, name: str) -> Path:
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    return settings.log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"


def fanout_env(url: str, *, checkpoint: bool = False, recovery: float | None = None,
               effects: bool = False) -> dict[str, str]:
    env = {"BENCH_REDIS_URL": url, "BENCH_CHECKPOINT": "1" if checkpoint else "0",
           "BENCH_EFFECTS": "1" if effects else "0"}
    if recovery is not None:
        env["BENCH_RECOVERY_TIMEOUT"] = str(recovery)
    return env


def _fanout_client(url: str, checkpoint: bool = False) -> Any:
    """A fanout client in this process, for sending and reading runs."""
    os.environ["BENCH_REDIS_URL"] = url
    os.environ["BENCH_CHECKPOINT"] = "1" if checkpoint else "0"
    import importlib

    import fanout._celery.runtime as rt_mod

    rt_mod._runtimes.clear()  # a new app per measured run (new Redis URL)
    mod = importlib.import_module(FANOUT_APP)
    mod = importlib.reload(mod)
    return mod.client


def _child_run_ids(n: int, loader_event: str) -> list[str]:
    from fanout._core.ids import derived_event_id, run_id_for

    loader_run = run_id_for(loader_event, LOADER_KEY)
    chunk = 5000
    out = []
    for i in range(n):
        eid = derived_event_id(loader_run, f"send-{i // chunk}", i % chunk)
        out.append(run_id_for(eid, ITEM_KEY))
    return out


def _statuses(r: redis.Redis, run_ids: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for i in range(0, len(run_ids), 2000):
        pipe = r.pipeline(transaction=False)
        for rid in run_ids[i:i + 2000]:
            pipe.hget(f"fanout:run:{{{rid}}}", "st")
        for st in pipe.execute():
            key = st.decode() if st else "missing"
            counts[key] = counts.get(key, 0) + 1
    return counts


def broker_messages(r: redis.Redis) -> int:
    """Messages waiting in the Redis broker's queues (every priority list)."""
    keys = [k for pat in ("celery*", "fanout.events*") for k in r.scan_iter(match=pat)]
    return sum(int(r.llen(k)) for k in keys if r.type(k) == b"list")


def _leased_runs(r: redis.Redis) -> list[str]:
    """Runs whose lease is held right now (a pass in progress)."""
    now = time.time()
    from fanout._redis.keyspace import Keyspace

    cands = [m.decode() for key in Keyspace().timer_keys
             for m in r.zrangebyscore(key, int(now * 1000), "+inf")]
    cands = [c for c in cands if ":" not in c]
    pipe = r.pipeline(transaction=False)
    for rid in cands:
        pipe.hmget(f"fanout:run:{{{rid}}}", "lease", "lu")
    out = []
    for rid, (lease, lu) in zip(cands, pipe.execute(), strict=True):
        if lease and float(lu or 0) > now:
            out.append(rid)
    return out


def _statuses_each(r: redis.Redis, run_ids: list[str]) -> list[str]:
    pipe = r.pipeline(transaction=False)
    for rid in run_ids:
        pipe.hget(f"fanout:run:{{{rid}}}", "st")
    return [st.decode() if st else "missing" for st in pipe.execute()]


def _postgres_roots() -> list[int]:
    """The postmaster pid(s): processes named postgres whose parent is not."""
    roots = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            if comm != "postgres":
                continue
            with open(f"/proc/{ppid}/stat") as f:
                pstat = f.read()
            if pstat[pstat.index("(") + 1:pstat.rindex(")")] != "postgres":
                roots.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return roots


# --------------------------------------------------------------------------- A


def _measure(
    server: RedisServer,
    n: int,
    start: Callable[[], None],
    roots: Callable[[], dict[str, Iterable[int]]],
    timeout: float,
) -> dict[str, Any]:
    r = server.client
    before = server.commandstats()
    reads0 = int(r.info("stats")["total_reads_processed"])
    meter = Meter(roots).start()
    polls = 0
    t0 = time.monotonic()
    start()
    deadline = t0 + timeout
    while True:
        polls += 1
        if int(r.get(DONE) or 0) >= n:
            break
        if time.monotonic() > deadline:
            meter.stop()
            raise TimeoutError(f"only {int(r.get(DONE) or 0)}/{n} runs done in {timeout:.0f}s")
        time.sleep(0.02)
    wall = time.monotonic() - t0
    meter.stop()
    cmds = command_delta(before, server.commandstats(), {"get": polls})
    # Read events on the server ~ client round trips (a pipeline is one); minus our
    # own polling and the INFO calls.
    reads = int(r.info("stats")["total_reads_processed"]) - reads0 - polls - 2
    cpu = meter.cpu()
    total = sum(cmds.values())
    top = dict(sorted(cmds.items(), key=lambda kv: -kv[1])[:8])
    return {
        "n": n,
        "wall_s": wall,
        "runs_per_s": n / wall,
        "cpu_s": sum(cpu.values()),
        "cpu_by_process": {k: round(v, 2) for k, v in cpu.items()},
        "redis_cmds_per_run": total / n,
        "redis_round_trips_per_run": reads / n,
        "redis_top_cmds_per_run": {k: round(v / n, 2) for k, v in top.items()},
        "peak_rss_mb": meter.peak_rss / 2**20,
    }


def fanout_fanout(settings: Settings, n: int, *, checkpoint: bool) -> dict[str, Any]:
    server = RedisServer()
    worker = None
    try:
        client = _fanout_client(server.url, checkpoint)
        worker = CeleryWorker(FANOUT_APP, concurrency=settings.concurrency,
                              env=fanout_env(server.url, checkpoint=checkpoint),
                              log=_log(settings, "fanout-A"))
        eid = f"load-{uuid.uuid4().hex}"
        import fanout

        w = worker
        res = _measure(
            server, n,
            lambda: client.send_sync(fanout.Event(name="bench/load", data={"n": n}, id=eid)),
            lambda: {"worker": [w.pid], "redis": [server.pid]},
            timeout=max(300, n / 5),
        )
        ids = _child_run_ids(n, eid)
        wait_until(lambda: _statuses(server.client, ids).get("completed", 0) == n, 60,
                   what="every run completed")
        # Messages still in the broker once every run completed: duplicates of passes
        # that already ran (a watchdog that offered a late first pass again).
        res["broker_messages_left"] = broker_messages(server.client)
        return res
    finally:
        if worker is not None:
            worker.stop()
        server.stop()


def celery_fanout(settings: Settings, n: int, *, one_task: bool = False) -> dict[str, Any]:
    """Hand-written Celery on workload A: a chain of three tasks per run, or with
    ``one_task`` one task that runs the three steps (``celery-1``)."""
    server = RedisServer()
    worker = None
    try:
        os.environ["BENCH_REDIS_URL"] = server.url
        import importlib

        mod = importlib.reload(importlib.import_module(CELERY_APP))
        worker = CeleryWorker(CELERY_APP, concurrency=settings.concurrency,
                              env={"BENCH_REDIS_URL": server.url},
                              log=_log(settings, "celery-1" if one_task else "celery-A"))
        w = worker
        return _measure(
            server, n,
            lambda: (mod.loader1 if one_task else mod.loader).apply_async((n,)),
            lambda: {"worker": [w.pid], "redis": [server.pid]},
            timeout=max(300, n / 5),
        )
    finally:
        if worker is not None:
            worker.stop()
        server.stop()


def dbos_available(settings: Settings) -> str | None:
    """None when DBOS can run here, else the reason it cannot."""
    try:
        import dbos  # noqa: F401
    except ImportError:
        return "the dbos package is not installed (pip install 'dbos>=3')"
    try:
        import psycopg

        with psycopg.connect(settings.dbos_url, connect_timeout=3) as conn:
            conn.execute("select 1")
    except Exception as exc:  # noqa: BLE001 - any failure means "cannot run"
        return f"PostgreSQL at {settings.dbos_url} is not usable: {exc}"
    return None


def _dbos_db(settings: Settings) -> str:
    import psycopg

    name = f"fanout_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(settings.dbos_url, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    base = settings.dbos_url.rsplit("/", 1)[0]
    return f"{base}/{name}"


def _drop_db(settings: Settings, url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(settings.dbos_url, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


def _wait_ready(proc: PyProc, ready: Path, timeout: float = 90) -> None:
    def check() -> bool:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited:\n{proc.log()[-2000:]}")
        return ready.exists()

    wait_until(check, timeout, what=f"{proc.name} ready")


def dbos_fanout(settings: Settings, n: int) -> dict[str, Any]:
    server = RedisServer()
    db = _dbos_db(settings)
    procs: list[PyProc] = []
    try:
        for k in range(settings.dbos_processes):
            log = _log(settings, f"dbos-A-{k}")
            p = PyProc(["-m", "bench.apps.dbos_app"], env={
                "BENCH_REDIS_URL": server.url, "BENCH_DBOS_URL": db,
                "BENCH_DBOS_THREADS": str(settings.dbos_threads),
                "BENCH_DBOS_POLL": str(settings.dbos_poll),
                "BENCH_DBOS_EXECUTOR": f"bench-{k}", "BENCH_READY_FILE": f"{log}.ready",
            }, log=log, name=f"dbos{k}")
            procs.append(p)
            _wait_ready(p, Path(f"{log}.ready"))
        from bench.apps.dbos_app import enqueue_loader

        return _measure(
            server, n,
            lambda: enqueue_loader(n, db),
            lambda: {"worker": [p.pid for p in procs], "redis": [server.pid],
                     "postgres": _postgres_roots()},
            timeout=max(300, n / 5),
        )
    finally:
        for p in procs:
            p.stop()
        server.stop()
        _drop_db(settings, db)


# --------------------------------------------------------------------------- B


class _Waiter:
    """Waits for a keyspace notification on one key (no polling, no CPU burned)."""

    def __init__(self, server: RedisServer) -> None:
        server.client.config_set("notify-keyspace-events", "Kg$")
        self.ps = redis.Redis(port=server.port).pubsub(ignore_subscribe_messages=True)

    def arm(self, key: str) -> None:
        self.ps.subscribe(f"__keyspace@0__:{key}")
        # Drain the subscription confirmation so the next message is the event.
        self.ps.get_message(timeout=1)

    def wait(self, event: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.ps.get_message(timeout=deadline - time.monotonic())
            if msg and msg["type"] == "message" and msg["data"] == event.encode():
                return
        raise TimeoutError(f"no {event!r} notification within {timeout}s")

    def disarm(self) -> None:
        self.ps.unsubscribe()
        while self.ps.get_message(timeout=0.01):
            pass


@contextmanager
def _one_worker(settings: Settings, app: str, name: str,
                env: Callable[[str], dict[str, str]]) -> Iterator[RedisServer]:
    """A private redis-server and one Celery worker of ``app`` on it (``env`` gives
    the worker's environment from the server's URL); both stop on exit."""
    server = RedisServer()
    worker = None
    try:
        worker = CeleryWorker(app, concurrency=settings.concurrency, env=env(server.url),
                              log=_log(settings, name))
        yield server
    finally:
        if worker is not None:
            worker.stop()
        server.stop()


def latency_fanout(settings: Settings, count: int, *, checkpoint: bool,
                   warmup: int = 20) -> dict[str, Any]:
    """1-step and 3-step runs interleaved; each emit timed until its run has ended
    (the ``EXPIRE`` that ``finish_run`` sets on the run hash)."""
    import fanout
    from fanout._core.ids import run_id_for

    with _one_worker(settings, FANOUT_APP, "fanout-B",
                     lambda url: fanout_env(url, checkpoint=checkpoint)) as server:
        client = _fanout_client(server.url, checkpoint)
        waiter = _Waiter(server)
        lat: dict[str, list[float]] = {"lat1": [], "lat3": []}
        for i in range(warmup + count):
            for fn in ("lat1", "lat3"):
                eid = f"{fn}-{i}-{uuid.uuid4().hex[:6]}"
                rid = run_id_for(eid, f"bench:{fn}")
                waiter.arm(f"fanout:run:{{{rid}}}")
                t0 = time.perf_counter()
                client.send_sync(fanout.Event(name=f"bench/{fn}", id=eid))
                waiter.wait("expire")
                dt = time.perf_counter() - t0
                waiter.disarm()
                if i >= warmup:
                    lat[fn].append(dt * 1000)
        return _latency_summary(lat["lat1"], lat["lat3"])


def latency_celery(settings: Settings, count: int, warmup: int = 20) -> dict[str, Any]:
    """A plain task and a chain of 3, interleaved; timed until the last task's SET."""
    import importlib

    from celery import chain

    with _one_worker(settings, CELERY_APP, "celery-B",
                     lambda url: {"BENCH_REDIS_URL": url}) as server:
        os.environ["BENCH_REDIS_URL"] = server.url
        mod = importlib.reload(importlib.import_module(CELERY_APP))
        waiter = _Waiter(server)
        one: list[float] = []
        three: list[float] = []
        for i in range(warmup + count):
            for kind in ("one", "three"):
                key = f"bench:lat:{kind}:{i}"
                waiter.arm(key)
                t0 = time.perf_counter()
                if kind == "one":
                    mod.ping.apply_async((key,))
                else:
                    chain(mod.noop.si(), mod.noop.si(), mod.ping.si(key)).apply_async()
                waiter.wait("set")
                dt = time.perf_counter() - t0
                waiter.disarm()
                if i >= warmup:
                    (one if kind == "one" else three).append(dt * 1000)
        return _latency_summary(one, three)


def _latency_summary(one: list[float], three: list[float]) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(one)}
    for name, vals in (("1step", one), ("3step", three)):
        for p in (50, 95, 99):
            out[f"{name}_p{p}_ms"] = pct(vals, p)
    out["per_step_overhead_p50_ms"] = (out["3step_p50_ms"] - out["1step_p50_ms"]) / 2
    out["per_step_overhead_mean_ms"] = (statistics.mean(three) - statistics.mean(one)) / 2
    return out


# --------------------------------------------------------------------------- C


def crash(settings: Settings, n: int, system: str) -> dict[str, Any]:
    """Workload A while the worker (main process and pool) is SIGKILLed every
    ``kill_every`` s until half the runs are done; a new worker starts each time."""
    import importlib

    server = RedisServer()
    workers: list[CeleryWorker] = []
    try:
        r = server.client
        if system == "fanout":
            client = _fanout_client(server.url)
            app, env = FANOUT_APP, fanout_env(server.url, recovery=settings.recovery_timeout,
                                                effects=True)
        else:
            os.environ["BENCH_REDIS_URL"] = server.url
            mod = importlib.reload(importlib.import_module(CELERY_APP))
            app, env = CELERY_APP, {"BENCH_REDIS_URL": server.url, "BENCH_EFFECTS": "1"}

        def new_worker() -> CeleryWorker:
            w = CeleryWorker(app, concurrency=settings.concurrency, env=env,
                             log=_log(settings, f"{system}-C"))
            workers.append(w)
            return w

        current = new_worker()
        eid = f"load-{uuid.uuid4().hex}"
        t0 = time.monotonic()
        if system == "fanout":
            import fanout

            client.send_sync(fanout.Event(name="bench/load", data={"n": n}, id=eid))
        else:
            mod.loader.apply_async((n,))
        kills: list[float] = []
        # fanout: the runs a kill interrupts are the ones holding a lease then (a
        # timer in the future); how long until each completes is its recovery time.
        inflight: dict[str, float] = {}
        recovered: dict[str, float] = {}
        stalls: list[float] = []
        next_kill = t0 + settings.kill_every

        def watch_inflight() -> None:
            if not inflight:
                return
            todo = [rid for rid in inflight if rid not in recovered]
            for rid, st in zip(todo, _statuses_each(r, todo), strict=True):
                if st == "completed":
                    recovered[rid] = time.monotonic() - inflight[rid]

        while int(r.get(DONE) or 0) < n / 2 and time.monotonic() - t0 < 300:
            if time.monotonic() >= next_kill:
                done_before = int(r.get(DONE) or 0)
                killed_at = time.monotonic()
                current.kill()
                kills.append(killed_at - t0)
                if system == "fanout":
                    for rid in _leased_runs(r):
                        inflight.setdefault(rid, killed_at)
                current = new_worker()
                try:
                    wait_until(lambda d=done_before: int(r.get(DONE) or 0) > d, 30,
                               interval=0.01)
                    stalls.append(time.monotonic() - killed_at)
                except TimeoutError:  # nothing completes any more: the rest is stuck
                    stalls.append(float("inf"))
                    break
                next_kill = time.monotonic() + settings.kill_every
            watch_inflight()
            time.sleep(0.05)
        last_kill = t0 + (kills[-1] if kills else 0.0)
        deadline = time.monotonic() + (180 if system == "fanout" else 60)
        while int(r.get(DONE) or 0) < n and time.monotonic() < deadline:
            watch_inflight()
            time.sleep(0.1)
        watch_inflight()
        done_at = time.monotonic()
        done = int(r.get(DONE) or 0)
        if system == "fanout":
            ids = _child_run_ids(n, eid)
            try:
                wait_until(lambda: _statuses(r, ids).get("completed", 0) == n, 10)
            except TimeoutError:
                pass
            completed = _statuses(r, ids).get("completed", 0)
        else:
            completed = min(done, n)
        dup = {}
        for s in ("s1", "s2", "s3"):
            counts = [int(v) for v in r.hvals(f"bench:fx:{s}")]
            dup[s] = sum(c - 1 for c in counts if c > 1)
        return {
            "n": n,
            "kills": len(kills),
            "kill_times_s": [round(k, 1) for k in kills],
            "completed": completed,
            "lost_runs": n - completed,
            "duplicate_step_executions": sum(dup.values()),
            "duplicates_by_step": dup,
            "wall_s": done_at - t0,
            "all_done_after_last_kill_s": (done_at - last_kill) if completed == n
            else float("nan"),
            "stall_after_kill_s_max": max(stalls) if stalls else float("nan"),
            "stuck_after_a_kill": any(math.isinf(x) for x in stalls),
            "interrupted_runs": len(inflight),
            "interrupted_recovered": len(recovered),
            "interrupted_recovery_s_max": max(recovered.values()) if recovered else float("nan"),
            "interrupted_recovery_s_median": statistics.median(recovered.values())
            if recovered else float("nan"),
            "recovery_timeout_s": settings.recovery_timeout if system == "fanout" else None,
        }
    finally:
        for w in workers:
            w.stop()
        server.stop()


# --------------------------------------------------------------------------- D


def timers_sleep(settings: Settings, count: int, seconds: float = 1.0) -> dict[str, Any]:
    import fanout
    from fanout._core.ids import run_id_for

    with _one_worker(settings, FANOUT_APP, "fanout-D", fanout_env) as server:
        client = _fanout_client(server.url)
        evs = [fanout.Event(name="bench/sleep", data={"for": seconds},
                            id=f"sleep-{i}-{uuid.uuid4().hex[:6]}") for i in range(count)]
        t0 = time.monotonic()
        client.send_sync(evs)
        ids = [run_id_for(e.id, "bench:sleeper") for e in evs]
        wait_until(lambda: _statuses(server.client, ids).get("completed", 0) == count,
                   120 + count / 10, interval=0.5, what="sleepers completed")
        wall = time.monotonic() - t0
        late = []
        pipe = server.client.pipeline(transaction=False)
        for rid in ids:
            pipe.hget(f"fanout:run:{{{rid}}}", "s:s")
        for raw in pipe.execute():
            rec = json.loads(raw)
            late.append((float(rec["t1"]) - float(rec["x"]["until"])) * 1000)
        return {"n": count, "sleep_s": seconds, "wall_s": wall,
                "lateness_p50_ms": pct(late, 50), "lateness_p95_ms": pct(late, 95),
                "lateness_p99_ms": pct(late, 99), "lateness_max_ms": max(late)}


def timers_wait(settings: Settings, count: int) -> dict[str, Any]:
    """``count`` runs wait for ``bench/resolve`` with ``match="data.k"``; once all
    wait, ``count`` resolving events are emitted one by one."""
    import fanout
    from fanout._core.ids import run_id_for

    with _one_worker(settings, FANOUT_APP, "fanout-Dw", fanout_env) as server:
        client = _fanout_client(server.url)
        evs = [fanout.Event(name="bench/wait", data={"k": i},
                            id=f"wait-{i}-{uuid.uuid4().hex[:6]}") for i in range(count)]
        client.send_sync(evs)
        ids = [run_id_for(e.id, "bench:waiter") for e in evs]
        wait_until(lambda: _statuses(server.client, ids).get("waiting", 0) == count,
                   120, interval=0.25, what="runs waiting")
        before = server.commandstats()
        sent: list[float] = []
        t0 = time.monotonic()
        for i in range(count):
            sent.append(time.time())
            client.emit("bench/resolve", {"k": i})
        emitted = time.monotonic() - t0
        wait_until(lambda: _statuses(server.client, ids).get("completed", 0) == count,
                   300, interval=0.25, what="waits resolved")
        wall = time.monotonic() - t0
        cmds = command_delta(before, server.commandstats())
        lat = []
        pipe = server.client.pipeline(transaction=False)
        for rid in ids:
            pipe.hget(f"fanout:run:{{{rid}}}", "t1")
        for i, raw in enumerate(pipe.execute()):
            lat.append((float(raw) - sent[i]) * 1000)
        return {"n": count, "emit_s": emitted, "wall_s": wall,
                "resolved_per_s": count / wall,
                "resolve_p50_ms": pct(lat, 50), "resolve_p95_ms": pct(lat, 95),
                "resolve_p99_ms": pct(lat, 99),
                "redis_cmds_per_resolution": sum(cmds.values()) / count,
                "hgetall_per_resolution": cmds.get("hgetall", 0) / count}


def git_rev() -> str:
    """The library's version under test: the hash of the ``fanout/`` tree at HEAD (it
    changes only when the library does), ``+dirty`` with uncommitted changes there."""
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD:fanout"], capture_output=True,
                         text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "fanout"], capture_output=True,
                           text=True).stdout.strip()
    return "tree " + (out.stdout.strip() or "?") + ("+dirty" if dirty else "")


def git_head() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or "?"
