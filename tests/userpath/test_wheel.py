"""From ``pip install`` to a running worker, as a new user follows the docs.

The wheel is installed alone (no extras) into a fresh venv; the quickstart's
project and the README's example are written from the docs' own code blocks and
run by ``celery -A proj worker`` / ``celery -A proj beat`` and the ``fanout`` CLI
of that venv.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests import support

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


@pytest.fixture(scope="module")
def quickstart(user_venv: UserVenv, urls: dict[str, str], tmp_path_factory: pytest.TempPathFactory,
               log_dir: Path) -> Iterator[tuple[Path, dict[str, str], Proc]]:
    dest = tmp_path_factory.mktemp("userproj")
    rest = _write_quickstart(dest)
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
        "import fanout, fanout.celeryconfig, fanout.testing, fanout.embedded, fanout._cli; "
        "import kombu.transport.redis; print(fanout.__version__)"))
    assert out.stdout.strip()
    # Optional extras fail with a message naming the extra to install.
    out = user_venv.run("python", "-c", "import fanout.tracing", check=False)
    assert out.returncode != 0 and "celery-fanout[otel]" in out.stderr
    assert "fanout" in user_venv.run("fanout", "--help").stdout


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
