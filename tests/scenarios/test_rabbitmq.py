"""The foundation scenarios with RabbitMQ as the broker (Redis stays the state store).

The seed fan-out, ``kill -9`` of a worker and event routing/dedupe are run again in
a ``pytest`` subprocess with ``FANOUT_TEST_BROKER_URL`` pointing at a fresh vhost,
so queues never collide with another run.  Afterwards the vhost must hold a real
``fanout.events`` direct exchange bound to the ``fanout.events`` queue: the router
uses RabbitMQ natively, not an emulation.

RabbitMQ comes from ``FANOUT_TEST_AMQP_URL`` (default
``amqp://guest:guest@127.0.0.1:5672//``, managed with ``rabbitmqctl``); when it is
not reachable, a private node is started with ``rabbitmq-server`` (this takes a
while); when neither works the module is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import _free_port
from tests.support import ROOT

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672//"
SCENARIOS = [
    "tests/scenarios/test_seed_fanout.py",
    "tests/scenarios/test_worker_killed.py",
    "tests/scenarios/test_events.py",
]


@dataclass
class Rabbit:
    host: str
    port: int
    node: str | None  # for rabbitmqctl -n; None = the default node
    user: str = "guest"
    password: str = "guest"

    def ctl(self, *args: str, timeout: float = 60) -> str:
        cmd = ["rabbitmqctl", *(["-n", self.node] if self.node else []), "-q", *args]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {out.stderr.strip() or out.stdout}")
        return out.stdout

    def url(self, vhost: str) -> str:
        return f"amqp://{self.user}:{self.password}@{self.host}:{self.port}/{vhost}"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def _start_private_node() -> tuple[Rabbit, subprocess.Popen[bytes], Path]:
    """A throwaway RabbitMQ node on free ports, its files in a temporary directory."""
    if shutil.which("rabbitmq-server") is None or shutil.which("rabbitmqctl") is None:
        pytest.skip("RabbitMQ is not reachable and rabbitmq-server is not installed")
    tmp = Path(tempfile.mkdtemp(prefix="fanout-rabbit-"))
    (tmp / "mnesia").mkdir()
    (tmp / "log").mkdir()
    (tmp / "enabled_plugins").write_text("[].\n")
    (tmp / "rabbitmq.conf").write_text("# private test node\n")
    (tmp / "env.conf").write_text("")
    if os.geteuid() == 0:  # the server drops to the rabbitmq user when started as root
        shutil.chown(tmp, user="rabbitmq")
        for p in tmp.rglob("*"):
            shutil.chown(p, user="rabbitmq")
    port, node = _free_port(), f"fanout-{uuid.uuid4().hex[:8]}@localhost"
    env = {
        **os.environ,
        "RABBITMQ_NODENAME": node,
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(_free_port()),
        "RABBITMQ_MNESIA_BASE": str(tmp / "mnesia"),
        "RABBITMQ_LOG_BASE": str(tmp / "log"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(tmp / "enabled_plugins"),
        "RABBITMQ_CONFIG_FILE": str(tmp / "rabbitmq.conf"),
        "RABBITMQ_CONF_ENV_FILE": str(tmp / "env.conf"),
        "RABBITMQ_PID_FILE": str(tmp / "pid"),
    }
    proc = subprocess.Popen(["rabbitmq-server"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    rabbit = Rabbit("127.0.0.1", port, node)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if _reachable("127.0.0.1", port):
            return rabbit, proc, tmp
        if proc.poll() is not None:
            break
        time.sleep(1)
    proc.kill()
    logs = "".join(p.read_text(errors="replace")[-1500:] for p in (tmp / "log").glob("*.log"))
    shutil.rmtree(tmp, ignore_errors=True)
    pytest.skip(f"RabbitMQ is not reachable and a private node did not start: {logs[-1500:]}")


@pytest.fixture(scope="module")
def rabbit() -> Iterator[Rabbit]:
    parts = urlsplit(os.environ.get("FANOUT_TEST_AMQP_URL", DEFAULT_URL))
    host, port = parts.hostname or "127.0.0.1", parts.port or 5672
    proc = tmp = None
    if _reachable(host, port):
        r = Rabbit(host, port, None, parts.username or "guest", parts.password or "guest")
        if shutil.which("rabbitmqctl") is None:
            pytest.skip("RabbitMQ is reachable but rabbitmqctl is not installed: a private "
                        "vhost cannot be created, and sharing '/' could collide with others")
        try:
            r.ctl("list_vhosts")
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"RabbitMQ is reachable but rabbitmqctl cannot manage it: {exc}")
    else:
        r, proc, tmp = _start_private_node()
    try:
        yield r
    finally:
        if proc is not None:
            subprocess.run(["rabbitmqctl", "-n", str(r.node), "stop"], capture_output=True,
                           timeout=60)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture()
def vhost(rabbit: Rabbit) -> Iterator[str]:
    name = f"fanout-test-{uuid.uuid4().hex[:12]}"
    rabbit.ctl("add_vhost", name)
    rabbit.ctl("set_permissions", "-p", name, rabbit.user, ".*", ".*", ".*")
    try:
        yield name
    finally:
        rabbit.ctl("delete_vhost", name)


def test_foundation_scenarios_on_rabbitmq(rabbit: Rabbit, vhost: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "FANOUT_TEST_REDIS_BASE"}
    env["FANOUT_TEST_BROKER_URL"] = rabbit.url(vhost)
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *SCENARIOS],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, f"scenarios failed with RabbitMQ as broker:\n{tail}"
    summary = proc.stdout.strip().splitlines()[-1]
    assert "passed" in summary and "failed" not in summary and "error" not in summary, tail

    # The router's exchange and queue are real RabbitMQ objects in the vhost.
    exchanges = {tuple(line.split("\t")[:2]) for line in
                 rabbit.ctl("list_exchanges", "-p", vhost, "name", "type").splitlines()}
    assert ("fanout.events", "direct") in exchanges, exchanges
    bindings = rabbit.ctl("list_bindings", "-p", vhost, "source_name", "destination_name",
                          "routing_key").splitlines()
    assert "fanout.events\tfanout.events\tfanout.route" in bindings, bindings
    queues = {line.split("\t")[0] for line in
              rabbit.ctl("list_queues", "-p", vhost, "name").splitlines()}
    assert {"celery", "fanout.events"} <= queues, queues
    print(f"\nRabbitMQ {rabbit.host}:{rabbit.port} vhost {vhost}: {summary}")
