"""Redis Cluster as the state store: the fan-out scenario on a local 3-node cluster.

Three ``redis-server --cluster-enabled yes`` processes on free ports, joined with
``redis-cli --cluster create``; the broker stays a plain Redis.  The store URL is
``redis+cluster://127.0.0.1:<port>`` (any node seeds the client).

The test process and its worker connect with fanout's own cluster client
(``fanout/_redis/cluster.py``).  The module also checks statically that every Lua
script only touches keys it declares, so the cluster can route each script to one
slot.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from redis.cluster import RedisCluster

import fanout
import fanout.metrics
from tests import support
from tests.conftest import _free_port
from tests.support import Worker, run_of, wait_for, wait_run

URL_ENV = "FANOUT_TEST_CLUSTER_URL"
N = 200


# -- the app under test ----------------------------------------------------------------


def _side() -> redis.Redis:
    return support.redis_for(__name__)


def count(name: str, key: str) -> int:
    return int(_side().hincrby(f"side:{name}", key, 1))


def build(cluster_url: str) -> tuple[Celery, fanout.Fanout]:
    celery_app = Celery("cluster")
    celery_app.config_from_object("celeryconfig")
    celery_app.conf.broker_url = support.url_for(__name__)
    fo = fanout.Fanout("cl", celery=celery_app, redis_url=cluster_url, recovery_timeout=4,
                       retry_backoff=[0.2])

    @fo.create_function(fn_id="loader", trigger=fanout.TriggerEvent(event="cl/load"))
    def loader(ctx: fanout.ContextSync) -> int:
        users = ctx.step.run("fetch", lambda: list(range(N)))
        ctx.step.send_event("fan-out", [fanout.Event(name="cl/user", data={"id": u}) for u in users])
        return len(users)

    @fo.create_function(fn_id="email", trigger=fanout.TriggerEvent(event="cl/user"))
    def email(ctx: fanout.ContextSync) -> str:
        uid = str(ctx.event.data["id"])
        ctx.step.run("load", count, "load", uid)
        ctx.step.run("send", count, "send", uid)
        return uid

    @fo.create_function(fn_id="pauses", trigger=fanout.TriggerEvent(event="cl/pause"))
    def pauses(ctx: fanout.ContextSync) -> object:
        ctx.step.sleep("nap", "500ms")
        ev = ctx.step.wait_for_event("approval", event="cl/approved", timeout="30s", match="data.k")
        return ev.data if ev else None

    return celery_app, fo


if os.environ.get(URL_ENV):
    app, client = build(os.environ[URL_ENV])


# -- the cluster -----------------------------------------------------------------------


class Cluster:
    def __init__(self, nodes: int = 3) -> None:
        exe, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if exe is None or cli is None:
            pytest.skip("redis-server and redis-cli are needed for a local Redis Cluster")
        self.dir = Path(tempfile.mkdtemp(prefix="fanout-cluster-"))
        self.ports = [_free_port() for _ in range(nodes)]
        self.procs = []
        for port in self.ports:
            # The bus port defaults to port + 10000, which may be taken or past 65535.
            d = self.dir / str(port)
            d.mkdir()
            self.procs.append(subprocess.Popen(
                [exe, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-port", str(_free_port()),
                 "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000",
                 "--save", "", "--appendonly", "no", "--dir", str(d)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
        for port in self.ports:
            wait_for(lambda port=port: _pings(port), timeout=20)
        subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )
        for port in self.ports:
            wait_for(lambda port=port: b"cluster_state:ok" in _info(port), timeout=30)
        self.url = f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


def _pings(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port).ping())
    except redis.RedisError:
        return False


def _info(port: int) -> bytes:
    return subprocess.run(["redis-cli", "-p", str(port), "cluster", "info"],
                          capture_output=True, timeout=10).stdout


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    yield c
    c.stop()


# -- tests -----------------------------------------------------------------------------


def test_fan_out_on_a_redis_cluster(cluster: Cluster, clean_db: redis.Redis, log_dir: Path) -> None:
    _, fo = build(cluster.url)
    assert isinstance(fo.runtime.store.r, RedisCluster)
    w = Worker(__name__, env={URL_ENV: cluster.url}, log_dir=log_dir)
    try:
        eid = fo.emit("cl/load")
        pause = fo.emit("cl/pause", {"k": "abc"})
        loader = wait_run(fo, run_of(fo, eid, "loader"), timeout=60)
        assert loader.status == "completed", loader.error
        ids = loader.steps[1].output
        assert len(ids) == N
        runs = [wait_run(fo, run_of(fo, i, "email"), timeout=120) for i in ids]
        assert [r.status for r in runs] == ["completed"] * N, [r.error for r in runs if r.error]
        assert sorted(int(r.output) for r in runs) == list(range(N))
        for name in ("load", "send"):
            got = {int(k): int(v) for k, v in clean_db.hgetall(f"side:{name}").items()}
            assert got == {i: 1 for i in range(N)}, name
        # The sleep (timers zset) and the wait (waits hash, router resolution).
        prid = run_of(fo, pause, "pauses")
        wait_for(lambda: (x := fo.get_run(prid)) is not None and x.status == "waiting",
                 timeout=30)
        fo.emit("cl/approved", {"k": "abc", "ok": 1})
        assert wait_run(fo, prid, timeout=30).output == {"k": "abc", "ok": 1}
        assert len(fo.list_runs(fn_id="email", limit=1000)) == N
        # The state really is spread over the cluster.
        sizes = [redis.Redis(port=p).dbsize() for p in cluster.ports]
        assert all(s > 0 for s in sizes), sizes
        # A bulk job on a cluster: the index is copied a chunk at a time, the batches
        # count with WATCH on the job's slot (every run had ended: all skipped).
        job = fo.bulk_cancel("email", status=None, by="ops", batch=7)
        assert job.total == N
        done = wait_for(lambda: (j := fo.bulk_job(job.id)) is not None and j.finished and j,
                        timeout=60)
        assert (done.state, done.skipped, done.done, done.failed) == ("done", N, 0, 0)
        # Counted on the cluster, exactly: each run once, in the shards of its node.
        snap = fanout.metrics.snapshot(fo)
        assert snap.enabled
        assert snap.counter("runs_started", "cl", "email") == N
        assert snap.counter("runs_ended", "cl", "email", "completed") == N
        assert snap.counter("runs_started", "cl", "loader") == 1
        assert snap.counter("runs_ended", "cl", "loader", "completed") == 1
        assert snap.counter("events", "cl/user") == N
        # The attempts' histogram is sent by the worker once a second.
        wait_for(lambda: fanout.metrics.snapshot(fo).counter("step_attempts", "cl", "email")
                 == 2 * N, timeout=30)
        body, _type = fanout.metrics.generate(fo)
        assert f'fanout_runs_started_total{{app="cl",fn="email"}} {N}.0' in body.decode()
        holders = [redis.Redis(port=p).keys("fanout:metrics:{*") for p in cluster.ports]
        assert all(holders), holders
        # A restarted node forgets the scripts: flushed on every primary, the pipelined
        # EVALSHAs answer NOSCRIPT; the store loads the scripts again and goes on.
        for p in cluster.ports:
            redis.Redis(port=p).script_flush()
        one = fo.emit("cl/user", {"id": N})
        assert wait_run(fo, run_of(fo, one, "email"), timeout=60).status == "completed"
        assert fanout.metrics.snapshot(fo).counter("runs_ended", "cl", "email",
                                                   "completed") == N + 1
        assert w.proc.poll() is None
        assert "CROSSSLOT" not in w.log()
        assert "non local key" not in w.log()
    finally:
        w.stop()


_KEY_ARG = re.compile(r"redis\.call\(\s*'(\w+)'\s*,\s*([^,)]+)")
_LOCAL_KEYS = re.compile(r"local\s+([\w\s,]+?)\s*=\s*(KEYS\[[^\n]+)")
_KEYLESS = {"TIME", "PING", "ECHO", "INFO"}


def _lua_scripts() -> dict[str, str]:
    folder = resources.files("fanout._redis").joinpath("lua")
    return {p.name: p.read_text("utf-8") for p in folder.iterdir() if p.name.endswith(".lua")}


# The run indexes (lua/_indexes.lua) name their keys from KEYS[3], which the store
# passes only on a standalone Redis (Store.indexed is False on a cluster), and every
# helper there returns at once without it: the one file allowed to build key names.
_INDEXES = "_indexes.lua"


def test_every_lua_script_only_touches_declared_keys() -> None:
    """In a cluster a script may only use keys passed in KEYS (one slot per call);
    a key name built inside the script would bypass routing."""
    problems = []
    scripts = _lua_scripts()
    assert len(scripts) >= 10
    # A library's aliases of KEYS (MKEY in _predicates.lua) hold wherever it is inlined.
    shared = {n.strip() for name, src in scripts.items() if name.startswith("_")
              for m in _LOCAL_KEYS.finditer(src) for n in m.group(1).split(",")}
    index_src = scripts[_INDEXES]
    for fn in re.findall(r"local function (ix_\w+)", index_src):
        body = index_src.split(f"local function {fn}(", 1)[1].split("\nend\n", 1)[0]
        if "redis.call" in body and "if not IX" not in body:
            problems.append(f"{_INDEXES}: {fn} writes without checking KEYS[3]")
    for name, src in scripts.items():
        if name == _INDEXES:
            continue
        aliases = set(shared)
        for m in _LOCAL_KEYS.finditer(src):
            aliases.update(n.strip() for n in m.group(1).split(","))
        for cmd, first in _KEY_ARG.findall(src):
            first = first.strip()
            if cmd.upper() in _KEYLESS:
                continue
            if not (first.startswith("KEYS[") or first in aliases):
                problems.append(f"{name}: redis.call('{cmd}', {first}, ...)")
    assert not problems, "scripts using undeclared keys:\n" + "\n".join(problems)


def test_the_timer_shards_spread_over_the_nodes(cluster: Cluster) -> None:
    """The 48 timer sets of a cluster live on every master, and one scan claims the due
    timers of all of them (a cluster pipeline of ``claim_due`` scripts, one per set)."""
    from fanout._redis.keyspace import CLUSTER_TIMER_SHARDS as TIMER_SHARDS
    from fanout._redis.store import Store

    _, fo = build(cluster.url)
    store = Store(fo.runtime.store.r, prefix="tshard")
    past = time.time() - 1
    assert len(store.keys.timer_shards) == TIMER_SHARDS
    for i in range(1000):
        store.arm(f"run-{i}", past if i % 2 else past + 3600)
    holders = {p: [k.decode() for k in redis.Redis(port=p).keys("tshard:timers:*")]
               for p in cluster.ports}
    assert sorted(len(v) for v in holders.values()) == [16, 16, 16], holders
    # As after a restart of every node: the pipeline of EVALSHAs answers NOSCRIPT, the
    # script is loaded on every primary and the whole pipeline is sent again.
    for p in cluster.ports:
        redis.Redis(port=p).script_flush()
    due, rearm, _ = store.claim_due(rearm_s=30, limit=100 * TIMER_SHARDS)
    assert sorted(due) == sorted(f"run-{i}" for i in range(1, 1000, 2))
    store.drop_claimed(due, rearm)
    total, overdue, _oldest = store.timer_counts(_counts(store))
    assert (total, overdue) == (500, 0)


def _counts(store: Any) -> list[Any]:
    pipe = store.r.pipeline(transaction=False)
    store.queue_timer_counts(pipe, int(time.time() * 1000))
    return list(pipe.execute())


def test_run_listings_and_counts_are_exact_over_the_index_shards(cluster: Cluster) -> None:
    """On a cluster every run is listed in the shard of its id (16 shards of the list
    of all runs, 16 of each function's, spread over the masters): a listing merges
    them newest first, exactly, page after page of 7, with exact totals and pages
    back, as one set would list them (many runs created in the same millisecond)."""
    from fanout._redis.history import History
    from fanout._redis.keyspace import INDEX_SHARDS
    from fanout._redis.store import Store

    _, fo = build(cluster.url)
    r = fo.runtime.store.r
    base = int(time.time() * 1000) - 60_000
    made: dict[str, list[tuple[int, str]]] = {"lista": [], "listb": []}
    for store in (Store(r, prefix="lst"), fo.runtime.store):
        batch = []
        for i in range(300):
            fn = "lista" if i % 3 else "listb"
            rid, ms = f"lst-{i:03d}-{(i * 7919) % 1000:03d}", base + i // 6
            batch.append((rid, f"cl:{fn}", {"st": "queued", "fn": fn, "app": "cl",
                                            "fk": f"cl:{fn}", "c": repr(ms / 1000),
                                            "ev": "[]", "event": "{}", "seq": "0"}))
            if store.p == "lst":
                made[fn].append((ms, rid))
        for start in range(0, 300, 50):
            store.create_runs(batch[start:start + 50])
    store = Store(r, prefix="lst")
    shards = store.keys.runs_index_shards
    assert len(shards) == INDEX_SHARDS
    on = {p: {k.decode() for k in redis.Redis(port=p).keys("lst:idx:runs*")}
          for p in cluster.ports}
    assert all(on.values()) and set().union(*on.values()) == set(shards), on
    assert not r.exists("lst:idx:runs")  # nothing in the unsharded set

    def order(rows: list[tuple[int, str]]) -> list[str]:
        return [rid for _ms, rid in sorted(rows, key=lambda x: (x[0], x[1].encode()),
                                           reverse=True)]

    every = order(made["lista"] + made["listb"])
    history = History(store)
    for fn_key, want in ((None, every), ("cl:lista", order(made["lista"])),
                         ("cl:listb", order(made["listb"]))):
        got, cursor, pages = [], None, []
        while True:
            page = history.runs(fn_key=fn_key, limit=7, cursor=cursor)
            assert page.total == len(want)
            got += [s.run_id for s in page.items]
            pages.append([s.run_id for s in page.items])
            cursor = page.next_cursor
            if cursor is None:
                break
            prev = history.runs(fn_key=fn_key, limit=7, cursor=cursor).prev_cursor
            assert prev is not None
            back = history.runs(fn_key=fn_key, limit=7, cursor=prev)
            assert [s.run_id for s in back.items] == pages[-1]
        assert got == want
        assert history.count_runs(fn_key) == len(want)
        mid = base + 20
        assert history.count_runs(fn_key, since=mid / 1000) == sum(
            1 for rid in want if int(rid[4:7]) // 6 >= 20)
    # Through the client: a function's runs, with the runs of the fan-out beside them.
    listed = fo.list_runs(fn_id="listb", limit=7)
    assert listed.total == 100 and [x.run_id for x in listed] == order(made["listb"])[:7]
    ids, cursor = [], None
    while True:
        part = fo.list_runs(fn_id="lista", limit=9, cursor=cursor)
        ids += [x.run_id for x in part]
        cursor = part.next_cursor
        if cursor is None:
            break
    assert ids == order(made["lista"])
