"""Test services: a real Redis server, and `celery worker` subprocesses.

Redis comes from ``FANOUT_TEST_REDIS_URL`` when it is set (its databases 1-15
are flushed by the tests), otherwise from a private ``redis-server`` started on
a free port for this session.  The choice is made before collection, because
scenario modules create their Celery app at import.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests import support

_private: subprocess.Popen[bytes] | None = None
_tmp: str | None = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis_server(*extra: str) -> tuple[subprocess.Popen[bytes], int, str]:
    """Start a private redis-server on a free port; returns (process, port, dir)."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError(
            "the tests need Redis: install redis-server (Debian/Ubuntu: "
            "'apt-get install redis-server'; macOS: 'brew install redis') or set "
            "FANOUT_TEST_REDIS_URL=redis://host:port to a server whose databases 1-15 "
            "may be flushed"
        )
    # Another test session may take the same free port between our check and the
    # server's bind: then our server exits and the ping would reach the other one. A
    # server is ours only if it answers with our process id; else try another port.
    for _attempt in range(5):
        port = _free_port()
        tmp = tempfile.mkdtemp(prefix="fanout-redis-")
        proc = subprocess.Popen(
            [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
             "no", "--dir", tmp, *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=port)
        for _ in range(200):
            if proc.poll() is not None:
                break  # it could not bind: the port was taken
            try:
                if int(client.info("server")["process_id"]) == proc.pid:
                    return proc, port, tmp
                break  # another session's server answers on this port
            except redis.ConnectionError:
                time.sleep(0.05)
        proc.kill()
        proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
    raise RuntimeError("could not start a private redis-server (5 ports tried)")


def pytest_configure(config: pytest.Config) -> None:
    global _private, _tmp
    if os.environ.get("FANOUT_TEST_REDIS_BASE"):
        return
    url = os.environ.get("FANOUT_TEST_REDIS_URL")
    if url:
        base = url.rstrip("/")
        if base.count("/") > 2:
            base = base.rsplit("/", 1)[0]
        os.environ["FANOUT_TEST_REDIS_BASE"] = base
        return
    try:
        _private, port, _tmp = start_redis_server()
    except RuntimeError as exc:
        raise pytest.UsageError(str(exc)) from None
    os.environ["FANOUT_TEST_REDIS_BASE"] = f"redis://127.0.0.1:{port}"


def pytest_unconfigure(config: pytest.Config) -> None:
    # The in-process runtimes' threads stop before their Redis does (no outage warning).
    from fanout._celery.runtime import stop_background_threads

    stop_background_threads()
    if _private is not None:
        _private.terminate()
        _private.wait(timeout=10)
    if _tmp:
        shutil.rmtree(_tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def log_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="fanout-test-logs-"))
    return path


_stuck: list[str] = []


@pytest.fixture(scope="module")
def clean_db(request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    """The module's Redis database, flushed before the module runs. After the module
    (its worker stopped), no run may be left that nothing will move."""
    r = support.redis_for(request.module.__name__)
    r.flushdb()
    yield r
    found = support.stuck_runs(r)
    if found:
        _stuck.append(f"{request.module.__name__}: " + ", ".join(found[:10])
                      + (f" and {len(found) - 10} more" if len(found) > 10 else ""))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _stuck:
        print("\nruns left with nothing scheduled to move them (queued, running or "
              "sleeping, no timer):\n  " + "\n  ".join(_stuck))
        session.exitstatus = 1


@pytest.fixture(scope="module")
def worker(request: pytest.FixtureRequest, clean_db: redis.Redis, log_dir: Path) -> Iterator[support.Worker]:
    """One `celery worker` (prefork, 2 processes) running this scenario module."""
    w = support.Worker(request.module.__name__, log_dir=log_dir)
    yield w
    w.stop()
    if request.session.testsfailed:
        print(f"\n--- worker log {w.log_path} (tail) ---\n{w.log()[-3000:]}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` (soak runs) run only with FANOUT_SLOW=1."""
    if os.environ.get("FANOUT_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set FANOUT_SLOW=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
