"""A function's pause survives a Redis restart with AOF: the store is killed and
started again from its AOF while the function is paused and a run waits; afterwards
the function is still paused, the waiting run is still parked, and resuming runs it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import redis
from celery import Celery

import fanout
from tests import support
from tests.reliability.test_redis_restart import AofRedis
from tests.support import Worker, run_of, wait_run

URL_ENV = "FANOUT_TEST_PAUSE_AOF_URL"


def build(url: str) -> tuple[Celery, fanout.Fanout]:
    celery_app = Celery("pzaof")
    celery_app.config_from_object("celeryconfig")
    celery_app.conf.broker_url = support.url_for(__name__)
    fo = fanout.Fanout("pzaof", celery=celery_app, redis_url=url, recovery_timeout=4)

    @fo.create_function(fn_id="job", trigger=fanout.TriggerEvent(event="pzaof/job"))
    def job(ctx: fanout.ContextSync) -> str:
        return str(ctx.step.run("work", lambda: "done"))

    return celery_app, fo


if os.environ.get(URL_ENV):
    app, client = build(os.environ[URL_ENV])


def test_a_pause_survives_a_redis_restart_with_aof(log_dir: Path) -> None:
    server = AofRedis()
    os.environ[URL_ENV] = server.url
    try:
        _, fo = build(server.url)
        redis.Redis.from_url(support.url_for(__name__)).flushdb()
        w = Worker(__name__, env={URL_ENV: server.url}, log_dir=log_dir)
        try:
            assert fo.pause("job", reason="maintenance")
            time.sleep(1.5)  # the worker re-reads the paused set every second
            (eid,) = fo.send_sync(fanout.Event(name="pzaof/job"))
            rid = run_of(fo, eid, "job")
            r = redis.Redis.from_url(server.url)
            deadline = time.monotonic() + 30
            while not r.zcard("fanout:parked:{pzaof:job}") and time.monotonic() < deadline:
                time.sleep(0.1)
            assert r.zcard("fanout:parked:{pzaof:job}") == 1
            server.kill()
            server.start_again()  # replays its AOF
            assert fo.is_paused("job")
            assert r.zcard("fanout:parked:{pzaof:job}") == 1
            assert fo.get_run(rid).status == "queued"  # type: ignore[union-attr]
            assert fo.resume("job") == 1
            assert wait_run(fo, rid, timeout=60).output == "done"
        finally:
            w.stop()
    finally:
        os.environ.pop(URL_ENV, None)
        server.stop()
