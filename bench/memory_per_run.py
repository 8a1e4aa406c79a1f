"""Redis memory per run: real runs through a real worker, then INFO memory.

Runs N events (default 2,000) through a function with three small steps (the
shape of the README example) on a private redis-server, with the worker in
this process, and reports used_memory per run (run hash + event + index
entries + the event's runs set), plus MEMORY USAGE of one run's keys.

    .venv/bin/python -m bench.memory_per_run [N]
"""

from __future__ import annotations

import sys
import time

import redis
from celery import Celery

import fanout
from bench._redis import bench_redis
from fanout.embedded import start_embedded_worker


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    with bench_redis() as url:
        store_url = url.rsplit("/", 1)[0] + "/1"
        r = redis.Redis.from_url(store_url)
        r.flushdb()
        app = Celery("memory-bench")
        app.config_from_object("celeryconfig")
        app.conf.broker_url = url
        client = fanout.Fanout("bench", celery=app, redis_url=store_url)

        @client.create_function(fn_id="signup", trigger=fanout.TriggerEvent(event="user/signup"))
        def signup(ctx: fanout.ContextSync) -> dict[str, object]:
            user = ctx.step.run("load-user", lambda: {"id": ctx.event.data["id"], "plan": "pro"})
            ctx.step.run("send-welcome", lambda: {"to": f"u{user['id']}@example.com", "ok": True})
            ctx.step.run("track", lambda: "tracked")
            return {"user": user["id"]}

        with start_embedded_worker(app, concurrency=8):
            time.sleep(0.5)
            before = int(r.info("memory")["used_memory"])
            ids = []
            for start in range(0, n, 500):
                ids += client.send_sync([fanout.Event(name="user/signup", data={"id": i})
                                         for i in range(start, min(n, start + 500))])
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                done = sum(1 for run in client.list_runs(fn_id="signup", limit=n)
                           if run.status == "completed")
                if done >= n:
                    break
                time.sleep(0.5)
        after = int(r.info("memory")["used_memory"])
        run = client.list_runs(fn_id="signup", limit=1)[0]
        store = client.runtime.store
        usage = {
            "run hash": r.memory_usage(store.run_key(run.run_id), samples=0),
            "event": r.memory_usage(store.event_key(run.event_ids[0]), samples=0),
            "event runs set": r.memory_usage(f"{store.event_key(run.event_ids[0])}:runs", samples=0),
        }
        print(f"{n} runs of a 3-step function, {done} completed")
        print(f"used_memory grew {(after - before) / 1024 / 1024:.1f} MiB: "
              f"{(after - before) / n:,.0f} bytes per run (all keys and index entries)")
        for k, v in usage.items():
            print(f"  MEMORY USAGE {k:<15} {v} bytes")
        print(f"  run hash fields: {r.hlen(store.run_key(run.run_id))}")
        r.flushdb()


if __name__ == "__main__":
    main()
