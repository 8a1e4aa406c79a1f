"""Processes and measurements shared by the workloads.

* :class:`RedisServer` — a private ``redis-server`` per measured run (clean
  ``INFO commandstats``), on a free port, nothing on disk.
* :class:`CeleryWorker` / :class:`PyProc` — worker subprocesses in their own process
  group (so ``kill -9`` of the group takes the pool down too).
* :class:`Meter` — CPU seconds and peak RSS of a set of process trees, sampled by a
  thread (psutil when installed, else ``/proc``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

try:  # optional: better process accounting
    import psutil
except ImportError:  # pragma: no cover - exercised on machines without psutil
    psutil = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(pred: Callable[[], Any], timeout: float, interval: float = 0.05,
               what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met within {timeout:.0f}s (last: {value!r})")
        time.sleep(interval)


# --------------------------------------------------------------------------- redis


class RedisServer:
    """A private redis-server: ``url``, ``client``, ``commandstats()``, ``stop()``."""

    def __init__(self, *extra: str) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("the benchmark needs redis-server on PATH")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="fanout-bench-redis-")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.client = redis.Redis(port=self.port)

        def up() -> bool:
            try:
                return bool(self.client.ping())
            except redis.ConnectionError:
                return False

        wait_until(up, 20, what="redis-server start")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def version(self) -> str:
        return str(self.client.info("server")["redis_version"])

    def commandstats(self) -> dict[str, int]:
        raw = self.client.info("commandstats")
        return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in raw.items()}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def command_delta(before: dict[str, int], after: dict[str, int],
                  own: dict[str, int] | None = None) -> dict[str, int]:
    """Commands run between two snapshots, minus our own (the snapshot INFO included)."""
    out = {k: after.get(k, 0) - before.get(k, 0) for k in set(before) | set(after)}
    out["info"] = out.get("info", 0) - 1
    for k, v in (own or {}).items():
        out[k] = out.get(k, 0) - v
    return {k: v for k, v in out.items() if v > 0}


# --------------------------------------------------------------------------- processes


class PyProc:
    """A Python subprocess in its own session, logging to a file."""

    def __init__(self, args: list[str], *, env: dict[str, str], log: Path, name: str) -> None:
        self.name = name
        self.log_path = log
        self._log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, *args], cwd=ROOT,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(
                x for x in (str(ROOT), os.environ.get("PYTHONPATH", "")) if x), **env},
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole process group (main process and its pool)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 20) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=timeout)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                self.kill()
        # Pool children left behind by a killed main process.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._log.close()


class CeleryWorker(PyProc):
    """``celery -A <app> worker --pool prefork -c <n>``; waits until it is ready."""

    def __init__(self, app: str, *, concurrency: int, env: dict[str, str], log: Path,
                 name: str = "w") -> None:
        super().__init__(
            ["-m", "celery", "-A", app, "worker", "--pool", "prefork", "--concurrency",
             str(concurrency), "--hostname", f"{name}-{os.getpid()}-{time.monotonic_ns()}@%h",
             "--loglevel", "WARNING", "--without-gossip", "--without-mingle",
             "--without-heartbeat"],
            env={**env, "BENCH_READY_FILE": str(log) + ".ready"}, log=log, name=name,
        )
        self.ready_file = Path(str(log) + ".ready")
        self.wait_ready()

    def wait_ready(self, timeout: float = 90) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited:\n{self.log()[-3000:]}")
            return self.ready_file.exists()

        wait_until(ready, timeout, what=f"worker {self.name} ready")
        self.ready_file.unlink(missing_ok=True)


def per_process_redis(url: str) -> Callable[[], redis.Redis]:
    """A function giving the calling process its own Redis client (a prefork pool
    child must not share its parent's socket)."""
    clients: dict[int, redis.Redis] = {}

    def client() -> redis.Redis:
        pid = os.getpid()
        if pid not in clients:
            clients[pid] = redis.Redis.from_url(url)
        return clients[pid]

    return client


def signal_ready_on_worker_ready() -> None:
    """Call from a benchmark app module: touch ``BENCH_READY_FILE`` when the worker is
    ready (the harness runs workers at log level WARNING, so it cannot read the log)."""
    path = os.environ.get("BENCH_READY_FILE")
    if not path:
        return
    from celery import signals

    def touch(**_: Any) -> None:
        Path(path).touch()

    signals.worker_ready.connect(touch, weak=False)


# --------------------------------------------------------------------------- metering


def _proc_children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out.extend(int(x) for x in f.read().split())
    except OSError:
        pass
    return out


def _proc_sample(pid: int) -> tuple[float, int] | None:
    """(cpu seconds, rss bytes) of one process from /proc, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        fields = stat[stat.rindex(")") + 2:].split()
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
        with open(f"/proc/{pid}/statm") as f:
            rss = int(f.read().split()[1]) * PAGE
        return cpu, rss
    except (OSError, ValueError, IndexError):
        return None


def _tree(pid: int) -> list[int]:
    if psutil is not None:
        try:
            p = psutil.Process(pid)
            return [pid, *(c.pid for c in p.children(recursive=True))]
        except psutil.Error:
            return []
    out, todo = [], [pid]
    while todo:
        cur = todo.pop()
        out.append(cur)
        todo.extend(_proc_children(cur))
    return out


def _sample(pid: int) -> tuple[float, int] | None:
    if psutil is not None:
        try:
            p = psutil.Process(pid)
            with p.oneshot():
                t = p.cpu_times()
                return t.user + t.system, p.memory_info().rss
        except psutil.Error:
            return None
    return _proc_sample(pid)


def _start_time(pid: int) -> float:
    if psutil is not None:
        try:
            return float(psutil.Process(pid).create_time())
        except psutil.Error:
            return 0.0
    return 0.0


@dataclass
class Meter:
    """Samples the process trees of ``roots()`` every ``interval`` s.

    ``cpu()`` sums, per group, the CPU seconds each process used since the meter
    started (a process born later counts from zero; a process that died counts up
    to its last sample).  ``peak_rss`` is the largest sum of RSS seen at once.
    """

    roots: Callable[[], dict[str, Iterable[int]]]
    interval: float = 0.1
    first: dict[int, float] = field(default_factory=dict)
    last: dict[int, float] = field(default_factory=dict)
    group_of: dict[int, str] = field(default_factory=dict)
    peak_rss: int = 0
    #: Groups whose root process counts apart from its children: ``<group> main`` and
    #: ``<group> pool`` (a Celery worker's consumer and its pool processes).
    split: tuple[str, ...] = ()
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _t0: float = 0.0

    def start(self) -> Meter:
        self._t0 = time.time()
        self.sample()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        total_rss = 0
        for group, pids in self.roots().items():
            for root in pids:
                for pid in _tree(root):
                    s = _sample(pid)
                    if s is None:
                        continue
                    cpu, rss = s
                    total_rss += rss
                    if pid not in self.first:
                        born_later = _start_time(pid) > self._t0
                        self.first[pid] = 0.0 if born_later else cpu
                        self.group_of[pid] = group if group not in self.split else (
                            f"{group} main" if pid == root else f"{group} pool")
                    self.last[pid] = cpu
        self.peak_rss = max(self.peak_rss, total_rss)

    def stop(self) -> None:
        self.sample()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def cpu(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for pid, group in self.group_of.items():
            out[group] = out.get(group, 0.0) + max(0.0, self.last[pid] - self.first[pid])
        return out


def machine_info() -> dict[str, Any]:
    import platform

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    versions: dict[str, str] = {}
    for mod in ("celery", "kombu", "redis", "fanout", "dbos", "psutil"):
        try:
            from importlib.metadata import version

            versions[mod] = version(mod)
        except Exception:  # noqa: BLE001 - not installed
            continue
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "redis_server": out.stdout.strip().split(" ")[2].removeprefix("v=")
        if out.returncode == 0 else "?",
        "packages": versions,
    }
