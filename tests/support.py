"""Shared helpers for scenario tests: real Redis, real `celery worker` processes.

A scenario module is both a test module and the Celery app its worker imports
(``celery -A tests.scenarios.test_x worker``), so the functions under test are
declared once and the worker runs exactly that code.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from celery import Celery

import fanout
from fanout._redis.keyspace import Keyspace

ROOT = Path(__file__).resolve().parent.parent


def db_for(module: str) -> int:
    """A Redis database number per scenario module (1-15), stable across processes."""
    return int(hashlib.sha1(module.encode()).hexdigest(), 16) % 15 + 1


def base_url() -> str:
    url = os.environ.get("FANOUT_TEST_REDIS_BASE")
    if not url:
        raise RuntimeError("FANOUT_TEST_REDIS_BASE is not set: tests/conftest.py sets it")
    return url.rstrip("/")


def url_for(module: str) -> str:
    return f"{base_url()}/{db_for(module)}"


def make_app(
    module: str, app_id: str = "tests", broker_url: str | None = None, **client_opts: Any
) -> tuple[Celery, fanout.Fanout]:
    """A Celery app configured from the shipped celeryconfig, and a client on it."""
    url = url_for(module)
    app = Celery(module.rsplit(".", 1)[-1])
    app.config_from_object("celeryconfig")
    app.conf.broker_url = broker_url or os.environ.get("FANOUT_TEST_BROKER_URL") or url
    app.conf.broker_transport_options = {"visibility_timeout": 3600}
    client_opts.setdefault("retry_backoff", [0.2, 0.4, 0.6])
    client = fanout.Fanout(app_id, celery=app, redis_url=url, **client_opts)
    return app, client


def redis_for(module: str) -> redis.Redis:
    return redis.Redis.from_url(url_for(module))


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Poll until ``predicate()`` is truthy; fail with its last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")


class Worker:
    """A `celery worker` subprocess in its own process group."""

    def __init__(
        self,
        module: str,
        *,
        concurrency: int = 2,
        pool: str = "prefork",
        name: str = "w1",
        env: dict[str, str] | None = None,
        log_dir: Path,
        args: tuple[str, ...] = (),
    ) -> None:
        self.module = module
        self.name = name
        self.log_path = log_dir / f"{module.rsplit('.', 1)[-1]}-{name}-{int(time.time()*1000)}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", module, "worker",
                "--pool", pool, "--concurrency", str(concurrency),
                "--hostname", f"{name}@%h", "--loglevel", "INFO", "--without-gossip",
                "--without-mingle", "--without-heartbeat", *args,
            ],
            cwd=ROOT,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.wait_ready()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log()[-4000:]}")
            if " ready." in self.log():
                return
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready after {timeout}s:\n{self.log()[-4000:]}")

    def kill(self) -> None:
        """SIGKILL the whole worker: main process and pool children."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


def run_of(client: fanout.Fanout, event_id: str, fn_id: str) -> str:
    return fanout._core.ids.run_id_for(event_id, f"{client.app_id}:{fn_id}")


def wait_run(client: fanout.Fanout, run_id: str, timeout: float = 60.0) -> fanout.RunInfo:
    def done() -> fanout.RunInfo | None:
        info = client.get_run(run_id)
        return info if info is not None and info.done else None

    result: fanout.RunInfo = wait_for(done, timeout=timeout)
    return result


def stuck_runs(r: redis.Redis, prefix: str = "fanout") -> list[str]:
    """Runs that nothing will move: queued, running or sleeping, with no entry in the
    timer set (a queued run keeps a watchdog timer, a running one its lease timer, a
    sleeping one its wake-up). Hand-written records without a function key are skipped."""
    out = []
    keys = Keyspace(prefix)
    for key in r.scan_iter(match=f"{prefix}:run:{{*}}", count=1000):
        st, fk = r.hmget(key, "st", "fk")
        if fk is None or st not in (b"queued", b"running", b"sleeping"):
            continue
        run_id = key.decode().split("{", 1)[1].rstrip("}")
        if r.zscore(keys.timer_key(run_id), run_id) is None and r.zscore(keys.timers, run_id) is None:
            out.append(f"{run_id} ({fk.decode()}, {st.decode()})")
    return out
