"""From ``pip install`` to a running worker, as a new user follows the docs.

The wheel is installed alone (no extras) into a fresh venv; the quickstart's
project and the README's example are written from the docs' own code blocks and
run by ``celery -A proj worker`` / ``celery -A proj beat`` and the ``fanout`` CLI
of that venv.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests import support
from tests.scenarios.test_rabbitmq import Rabbit, rabbit  # noqa: F401  (the fixture)

from .conftest import ROOT, UserVenv, code_blocks

pytestmark = pytest.mark.userpath


def _urls() -> dict[str, str]:
    broker_db = support.db_for("tests.userpath.broker")
    store_db = support.db_for("tests.userpath.store")
    if store_db == broker_db:
        store_db = broker_db % 15 + 1
    base = support.base_url()
    return {"CELERY_BROKER_URL": f"{base}/{broker_db}", "FANOUT_REDIS_URL": f"{base}/{store_db}"}


@pytest.fixture(scope="module")
def urls() -> dict[str, str]:
    env = _urls()
    for url in env.values():
        redis.Redis.from_url(url).flushdb()
    return env


class Proc:
    def __init__(self, v: UserVenv, args: list[str], cwd: Path, env: dict[str, str],
                 log: Path) -> None:
        self.log_path = log
        full_env = {k: val for k, val in os.environ.items() if k not in ("PYTHONPATH",)}
        full_env.update(env)
        self._f = open(log, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([str(v.bin / args[0]), *args[1:]], cwd=cwd, env=full_env,
                                     stdout=self._f, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"process exited {self.proc.returncode}:\n{self.log()[-4000:]}")
            time.sleep(0.2)
        raise AssertionError(f"{text!r} not in log after {timeout}s:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._f.close()


def _write_quickstart(dest: Path) -> dict[str, str]:
    """The quickstart's project files, from its code blocks; returns the other blocks."""
    blocks = code_blocks(ROOT / "docs" / "quickstart.md")
    rest: dict[str, str] = {}
    (dest / "proj").mkdir(parents=True)
    (dest / "proj" / "__init__.py").write_text("")
    for block in blocks:
        first = block.splitlines()[0].strip()
        if first.startswith("# proj/"):
            (dest / first[2:]).write_text(block)
        elif "client.emit" in block:
            rest["send"] = block
        elif "list_runs" in block:
            rest["see"] = block
        else:
            raise AssertionError(f"docs/quickstart.md has a Python block this test does not run:\n{block}")
    assert {"proj/celery.py", "proj/functions.py"} <= {
        str(p.relative_to(dest)) for p in (dest / "proj").glob("*.py")}
    assert set(rest) == {"send", "see"}
    return rest


HOLD = """

@client.create_function(fn_id="hold", trigger=fanout.TriggerEvent(event="app/hold"))
def hold(ctx: fanout.ContextSync):
    ctx.step.run("start", lambda: "started")
    ctx.step.sleep("hold-on", "10m")
"""


@pytest.fixture(scope="module")
def quickstart(user_venv: UserVenv, urls: dict[str, str], tmp_path_factory: pytest.TempPathFactory,
               log_dir: Path) -> Iterator[tuple[Path, dict[str, str], Proc]]:
    dest = tmp_path_factory.mktemp("userproj")
    rest = _write_quickstart(dest)
    with open(dest / "proj" / "functions.py", "a") as f:
        f.write(HOLD)   # a function the user adds: a long sleep, for cancel
    worker = Proc(user_venv, ["celery", "-A", "proj", "worker", "--loglevel", "INFO",
                              "--concurrency", "2", "--without-gossip", "--without-mingle"],
                  dest, urls, log_dir / "userpath-worker.log")
    try:
        worker.wait_for(" ready.")
        yield dest, rest, worker
    finally:
        worker.stop()


def test_the_wheel_alone_imports_every_public_module(user_venv: UserVenv) -> None:
    out = user_venv.run("python", "-c", "import fanout; print(fanout.__file__)")
    assert str(user_venv.path) in out.stdout, out.stdout   # the wheel's, not the repo's
    out = user_venv.run("python", "-c", (
        "import fanout, fanout.celeryconfig, fanout.testing, fanout.embedded, fanout._cli, "
        "fanout.middleware, fanout.encryption, fanout.metrics, fanout.http; "
        "import kombu.transport.redis; print(fanout.__version__)"))
    assert out.stdout.strip()
    # Optional extras fail with a message naming the extra to install.
    out = user_venv.run("python", "-c", "import fanout.tracing", check=False)
    assert out.returncode != 0 and "celery-fanout[otel]" in out.stderr
    assert "fanout" in user_venv.run("fanout", "--help").stdout


def test_the_wheel_reports_one_version_and_carries_the_license(
        user_venv: UserVenv, wheel: Path) -> None:
    version = wheel.name.split("-")[1]   # celery_fanout-<version>-py3-none-any.whl
    out = user_venv.run("python", "-c", (
        "import importlib.metadata as m, fanout; d = m.distribution('celery-fanout'); "
        "print(fanout.__version__, d.version, d.metadata['License-Expression'], "
        "d.metadata.get_all('License-File')); print(d.read_text('licenses/LICENSE'))"))
    first, license_text = out.stdout.split("\n", 1)
    assert first == f"{version} {version} MIT ['LICENSE']", out.stdout
    assert license_text.strip() == (ROOT / "LICENSE").read_text().strip()
    assert user_venv.run("fanout", "--version").stdout == f"fanout {version}\n"


def test_quickstart_project_runs_on_a_worker_started_by_command_line(
        user_venv: UserVenv, quickstart: tuple[Path, dict[str, str], Proc], urls: dict[str, str]) -> None:
    dest, rest, worker = quickstart
    script = (rest["send"] + "\nimport time\n"
              "deadline = time.monotonic() + 90\n"
              "while time.monotonic() < deadline:\n"
              "    runs = client.list_runs(fn_id='welcome', limit=1)\n"
              "    if runs and runs[0].status == 'completed':\n"
              "        break\n"
              "    time.sleep(0.2)\n" + rest["see"])
    out = user_venv.run("python", "-c", script, cwd=dest, env=urls, timeout=120)
    assert "completed" in out.stdout, out.stdout + out.stderr
    assert "send-email" in out.stdout
    log = worker.log()
    assert "Traceback" not in log, log[-4000:]
    # The shipped settings are right, so the worker has nothing to warn about.
    assert "worker_prefetch_multiplier=" not in log and "task_acks_late is off" not in log


def test_cli_against_the_quickstart_project(
        user_venv: UserVenv, quickstart: tuple[Path, dict[str, str], Proc], urls: dict[str, str]) -> None:
    dest, _, _ = quickstart
    fns = user_venv.run("fanout", "-A", "proj", "functions", cwd=dest, env=urls).stdout
    assert "welcome" in fns
    sent = user_venv.run("fanout", "-A", "proj", "send", "app/user.signup", "--data",
                         '{"user_id": 7}', "--wait", "60", cwd=dest, env=urls, timeout=120)
    assert sent.returncode == 0, sent.stderr
    runs = json.loads(user_venv.run("fanout", "-A", "proj", "--json", "runs", "--fn", "welcome",
                                    cwd=dest, env=urls).stdout)
    assert runs, "no runs listed"
    items = runs["runs"] if isinstance(runs, dict) else runs
    run_id = items[0]["run_id"]
    shown = user_venv.run("fanout", "-A", "proj", "run", run_id, cwd=dest, env=urls).stdout
    assert "load-user" in shown
    # The client lives in proj/celery.py, not in the module -A names: invoke still finds it.
    invoked = user_venv.run("fanout", "-A", "proj", "invoke", "welcome", "--data",
                            '{"user_id": 8}', cwd=dest, env=urls, check=False)
    assert invoked.returncode == 0, invoked.stdout + invoked.stderr
    bad = user_venv.run("fanout", "-A", "proj", "run", "NOPE", cwd=dest, env=urls, check=False)
    assert bad.returncode != 0
    assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_beat_starts_on_the_quickstart_project(
        user_venv: UserVenv, quickstart: tuple[Path, dict[str, str], Proc], urls: dict[str, str],
        log_dir: Path) -> None:
    dest, _, _ = quickstart
    beat = Proc(user_venv, ["celery", "-A", "proj", "beat", "--loglevel", "INFO",
                            "--schedule", str(dest / "beat-schedule")],
                dest, urls, log_dir / "userpath-beat.log")
    try:
        beat.wait_for("beat: Starting")
        time.sleep(3)
        assert beat.proc.poll() is None, beat.log()[-4000:]
        assert "Traceback" not in beat.log(), beat.log()[-4000:]
    finally:
        beat.stop()


def test_worker_warns_once_about_weak_delivery_settings(
        user_venv: UserVenv, urls: dict[str, str], tmp_path: Path, log_dir: Path) -> None:
    (tmp_path / "weak.py").write_text(
        "from celery import Celery\nimport fanout\n"
        "app = Celery('weak')\napp.config_from_object('fanout.celeryconfig')\n"
        "app.conf.worker_prefetch_multiplier = 4\napp.conf.task_acks_late = False\n"
        "client = fanout.Fanout(app_id='weak', celery=app)\n")
    w = Proc(user_venv, ["celery", "-A", "weak", "worker", "--loglevel", "INFO", "-c", "1",
                         "--without-gossip", "--without-mingle"], tmp_path, urls,
             log_dir / "userpath-weak.log")
    try:
        w.wait_for(" ready.")
    finally:
        w.stop()
    log = w.log()
    assert log.count("worker_prefetch_multiplier=4") == 1, log[-3000:]
    assert log.count("task_acks_late is off") == 1, log[-3000:]


def _fanout(v: UserVenv, dest: Path, env: dict[str, str], *args: str,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    return v.run("fanout", "-A", "proj", *args, cwd=dest, env=env, check=check, timeout=120)


def _wait_status(v: UserVenv, dest: Path, env: dict[str, str], run_id: str,
                 statuses: tuple[str, ...]) -> dict[str, object]:
    deadline = time.monotonic() + 90
    while True:
        res = _fanout(v, dest, env, "--json", "run", run_id, check=False)
        run = json.loads(res.stdout) if res.returncode == 0 else {}
        if run.get("status") in statuses:
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} not {statuses} after 90 s: {res.stdout}{res.stderr}")
        time.sleep(0.5)


def test_replay_rerun_cancel_and_events_from_the_cli(
        user_venv: UserVenv, quickstart: tuple[Path, dict[str, str], Proc], urls: dict[str, str]) -> None:
    dest, _, worker = quickstart
    v = user_venv
    sent = json.loads(_fanout(v, dest, urls, "--json", "send", "app/user.signup", "--data",
                              '{"user_id": 9}', "--wait", "60").stdout)
    (first,) = sent["runs"]
    rid = first["run_id"]
    assert first["status"] == "completed", first

    events = json.loads(_fanout(v, dest, urls, "--json", "events", "--name", "app/user.signup",
                                "--since", "10m").stdout)["events"]
    assert sent["event_id"] in [e["event_id"] for e in events]
    shown = _fanout(v, dest, urls, "event", sent["event_id"]).stdout
    assert rid in shown and "proj:welcome" in shown

    replayed = _fanout(v, dest, urls, "replay", rid).stdout
    m = re.search(rf"^{rid} -> (\w+)$", replayed, re.M)
    assert m and "replay: 1 of 1 run(s)" in replayed, replayed
    assert _wait_status(v, dest, urls, m.group(1), ("completed", "failed"))["status"] == "completed"

    rerun_id = _fanout(v, dest, urls, "rerun", rid, "--from-step", "send-email").stdout.strip()
    rerun = _wait_status(v, dest, urls, rerun_id, ("completed", "failed"))
    assert rerun["status"] == "completed" and rerun["replay_of"] == rid, rerun

    held = _fanout(v, dest, urls, "send", "app/hold").stdout.strip()
    deadline = time.monotonic() + 60
    hold_id = ""
    while not hold_id:
        runs = json.loads(_fanout(v, dest, urls, "--json", "runs", "--event", held).stdout)["runs"]
        hold_id = next((r["run_id"] for r in runs if r["status"] == "sleeping"), "")
        assert hold_id or time.monotonic() < deadline, runs
        time.sleep(0.3)
    cancelled = _fanout(v, dest, urls, "cancel", hold_id).stdout
    assert f"{hold_id} cancelled" in cancelled, cancelled
    assert _wait_status(v, dest, urls, hold_id, ("cancelled",))["status"] == "cancelled"

    for args, pattern in (
        (["replay", "NOPE"], r"^fanout replay: error: NOPE: no run 'NOPE'"),
        (["cancel", "NOPE"], r"^fanout cancel: error: NOPE: no such run"),
        (["rerun", rid, "--from-step", "nope"], r"has no step 'nope'; its steps are "
                                                r"\['load-user', 'wait-a-moment', 'send-email'\]"),
        (["events", "--since", "yesterday-ish"], r"invalid time 'yesterday-ish'"),
        (["send", "app/user.signup", "--data", "{oops"], r"--data: not valid JSON"),
    ):
        bad = _fanout(v, dest, urls, *args, check=False)
        lines = bad.stderr.strip().splitlines()
        assert bad.returncode in (1, 2) and len(lines) == 1, (args, bad.stdout, bad.stderr)
        assert re.search(pattern, lines[0]), (args, lines[0])
    assert "Traceback" not in worker.log(), worker.log()[-4000:]


# -- the same quickstart project with RabbitMQ as the broker -------------------------------


@pytest.fixture(scope="module")
def amqp_quickstart(user_venv: UserVenv, rabbit: Rabbit, urls: dict[str, str],  # noqa: F811
                    tmp_path_factory: pytest.TempPathFactory,
                    log_dir: Path) -> Iterator[tuple[Path, dict[str, str], Proc]]:
    """The quickstart on a private RabbitMQ vhost (Redis stays the store), one worker.

    ``rabbit`` skips, saying why, when RabbitMQ is neither reachable nor startable."""
    vhost = f"fanout-userpath-{uuid.uuid4().hex[:12]}"
    rabbit.ctl("add_vhost", vhost)
    rabbit.ctl("set_permissions", "-p", vhost, rabbit.user, ".*", ".*", ".*")
    store_db = support.db_for(f"{__name__}.amqp")
    used = {int(u.rsplit("/", 1)[1]) for u in urls.values()}   # the Redis lane's databases
    while store_db in used:
        store_db = store_db % 15 + 1
    store = f"{support.base_url()}/{store_db}"
    redis.Redis.from_url(store).flushdb()
    env = {"CELERY_BROKER_URL": rabbit.url(vhost), "FANOUT_REDIS_URL": store}
    dest = tmp_path_factory.mktemp("userproj-amqp")
    _write_quickstart(dest)
    worker = Proc(user_venv, ["celery", "-A", "proj", "worker", "--loglevel", "INFO",
                              "--concurrency", "2", "--without-gossip", "--without-mingle"],
                  dest, env, log_dir / "userpath-amqp-worker.log")
    try:
        worker.wait_for(" ready.")
        yield dest, env, worker
    finally:
        worker.stop()
        rabbit.ctl("delete_vhost", vhost)


def test_quickstart_on_rabbitmq_send_wait_completes(
        user_venv: UserVenv, amqp_quickstart: tuple[Path, dict[str, str], Proc]) -> None:
    dest, env, worker = amqp_quickstart
    assert "amqp://" in worker.log()     # the worker's banner names its transport
    store, amqp = env["FANOUT_REDIS_URL"], env["CELERY_BROKER_URL"]
    # The broker from the environment, as for the worker; --redis names the store only.
    sent = _fanout(user_venv, dest, {"CELERY_BROKER_URL": amqp}, "--redis", store, "--json",
                   "send", "app/user.signup", "--data", '{"user_id": 1}', "--wait", "60")
    assert [r["status"] for r in json.loads(sent.stdout)["runs"]] == ["completed"], sent.stdout
    # The broker on the command line.
    sent = _fanout(user_venv, dest, {}, "--redis", store, "--broker", amqp, "--json", "send",
                   "app/user.signup", "--data", '{"user_id": 2}', "--wait", "60")
    assert [r["status"] for r in json.loads(sent.stdout)["runs"]] == ["completed"], sent.stdout
    invoked = _fanout(user_venv, dest, env, "invoke", "welcome", "--data", '{"user_id": 3}')
    assert _wait_status(user_venv, dest, env, invoked.stdout.strip(),
                        ("completed", "failed"))["status"] == "completed"
    listed = json.loads(_fanout(user_venv, dest, env, "--json", "runs", "--fn", "welcome").stdout)
    assert len(listed["runs"]) == 3
    assert "Traceback" not in worker.log(), worker.log()[-4000:]
