"""The store's Redis fills up (maxmemory, noeviction) in the middle of a fan-out and
gets room back a few seconds later: every event's run exists, completes, and is
listed by ``list_runs`` / the history indexes (a run that exists is always listed).

The broker is another Redis that keeps working, as docs/howto/deployment.md asks.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

import fanout
from fanout._redis.history import History
from tests import support
from tests.conftest import start_redis_server
from tests.support import Worker, run_of, wait_for, wait_run

URL_ENV = "FANOUT_TEST_FULL_URL"
N = 600
FN_LOADER = "full-loader"
FN_CHILD = "full-child"


def build(url: str, broker_url: str, route_in_sender: bool = True) -> tuple[Celery, fanout.Fanout]:
    celery_app = Celery("full")
    celery_app.config_from_object("celeryconfig")
    celery_app.conf.broker_url = broker_url
    fo = fanout.Fanout("full", celery=celery_app, redis_url=url, recovery_timeout=2,
                       retry_backoff=[0.2, 0.5, 1.0], route_in_sender=route_in_sender)

    @fo.create_function(fn_id=FN_LOADER, trigger=fanout.TriggerEvent(event="full/load"),
                        retries=20)
    def loader(ctx: fanout.ContextSync) -> int:
        ids: list[str] = []
        for chunk in range(N // 100):
            ids += ctx.step.send_event(f"fan-out-{chunk}", [
                fanout.Event(name="full/child", data={"n": chunk * 100 + i, "pad": "x" * 300})
                for i in range(100)])
        return len(ids)

    @fo.create_function(fn_id=FN_CHILD, trigger=fanout.TriggerEvent(event="full/child"),
                        retries=20)
    def child(ctx: fanout.ContextSync) -> int:
        n = int(ctx.event.data["n"])
        return int(ctx.step.run("a", lambda: n))

    return celery_app, fo


FAULT_ENV = "FANOUT_TEST_INDEX_FAULT"


def install_index_fault(url: str) -> None:
    """In a worker: the first router batch creates its runs, then the pipeline that
    writes their index entries fails as a full Redis makes it fail."""
    from fanout._redis import store as store_mod

    original = store_mod.Store.create_runs
    side = redis.Redis.from_url(url)

    def create_runs(self: Any, runs: Any) -> Any:
        if not side.set("fault:fired", "1", nx=True):
            return original(self, runs)
        real_pipeline = self.r.pipeline
        calls = {"n": 0}

        def pipeline(*a: Any, **k: Any) -> Any:
            calls["n"] += 1
            pipe = real_pipeline(*a, **k)
            if calls["n"] == 2:  # the second pipeline of create_runs: the index entries
                def fail(*_a: Any, **_k: Any) -> Any:
                    raise redis.exceptions.OutOfMemoryError(
                        "command not allowed when used memory > 'maxmemory'.")
                pipe.execute = fail
            return pipe

        self.r.pipeline = pipeline
        try:
            return original(self, runs)
        finally:
            del self.r.pipeline

    store_mod.Store.create_runs = create_runs  # type: ignore[method-assign]


if os.environ.get(URL_ENV):
    app, client = build(os.environ[URL_ENV], support.url_for(__name__))
    if os.environ.get(FAULT_ENV):
        install_index_fault(os.environ[URL_ENV])


@pytest.fixture()
def small_redis() -> Iterator[tuple[str, redis.Redis]]:
    proc, port, _dir = start_redis_server("--maxmemory-policy", "noeviction")
    url = f"redis://127.0.0.1:{port}/0"
    try:
        yield url, redis.Redis.from_url(url)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_full_store_mid_fan_out_loses_no_run_and_no_listing(
    small_redis: tuple[str, redis.Redis], log_dir: Path
) -> None:
    url, r = small_redis
    os.environ[URL_ENV] = url
    try:
        _, fo = build(url, support.url_for(__name__))
        redis.Redis.from_url(support.url_for(__name__)).flushdb()
        w = Worker(__name__, env={URL_ENV: url}, log_dir=log_dir)
        try:
            used = int(r.info("memory")["used_memory"])
            # Room for part of the fan-out only; the rest meets "OOM command not allowed".
            r.config_set("maxmemory", used + 400_000)
            eid = fo.emit("full/load")
            oom_seen = threading.Event()

            def give_room_back() -> None:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    stats = r.info("errorstats")
                    if any("OOM" in k for k in stats):
                        oom_seen.set()
                        time.sleep(3)  # full for a few seconds
                        break
                    time.sleep(0.1)
                r.config_set("maxmemory", 0)

            helper = threading.Thread(target=give_room_back, daemon=True)
            helper.start()
            loader = wait_run(fo, run_of(fo, eid, FN_LOADER), timeout=180)
            helper.join(timeout=70)
            assert oom_seen.is_set(), "Redis never filled up: nothing was tested"
            assert loader.status == "completed", loader.error
            assert loader.output == N
            child_ids = [i for s in loader.steps if s.step_id.startswith("fan-out") for i in s.output]
            assert len(child_ids) == N
            store = fo.runtime.store
            runs = [run_of(fo, i, FN_CHILD) for i in child_ids]

            def all_completed() -> bool:
                pipe = store.r.pipeline(transaction=False)
                for rid in runs:
                    pipe.hget(store.run_key(rid), "st")
                return all(st == b"completed" for st in pipe.execute())

            wait_for(all_completed, timeout=180, interval=0.5)
            # Two minutes later and for good: every run that exists is listed.
            listed: set[str] = set()
            cursor = None
            while True:
                page = History(store).runs(fn_key=f"full:{FN_CHILD}", limit=1000, cursor=cursor)
                listed |= {s.run_id for s in page.items}
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
            missing = set(runs) - listed
            assert not missing, f"{len(missing)} of {N} completed runs are not listed"
            assert History(store).count_runs(f"full:{FN_CHILD}") == N
            assert len(fo.list_runs(fn_id=FN_CHILD, limit=1000)) == N
            assert w.proc.poll() is None, "the worker died when its store filled up"
        finally:
            w.stop()
    finally:
        os.environ.pop(URL_ENV, None)


def test_runs_whose_index_write_failed_are_listed_after_the_router_retries(
    small_redis: tuple[str, redis.Redis], log_dir: Path
) -> None:
    url, r = small_redis
    os.environ[URL_ENV] = url
    try:
        # The fault is in the worker's router: this sender must not route the events itself.
        _, fo = build(url, support.url_for(__name__), route_in_sender=False)
        redis.Redis.from_url(support.url_for(__name__)).flushdb()
        w = Worker(__name__, env={URL_ENV: url, FAULT_ENV: "1"}, log_dir=log_dir)
        try:
            ids = fo.send_sync([fanout.Event(name="full/child", data={"n": i}) for i in range(5)])
            runs = [run_of(fo, i, FN_CHILD) for i in ids]
            for rid in runs:
                assert wait_run(fo, rid, timeout=90).status == "completed"
            assert r.get("fault:fired") == b"1", "the fault never fired: nothing was tested"
            store = fo.runtime.store
            listed = {s.run_id for s in History(store).runs(fn_key=f"full:{FN_CHILD}").items}
            assert listed == set(runs), f"not listed: {sorted(set(runs) - listed)}"
            assert {x.run_id for x in fo.list_runs(fn_id=FN_CHILD)} == set(runs)
        finally:
            w.stop()
    finally:
        os.environ.pop(URL_ENV, None)
