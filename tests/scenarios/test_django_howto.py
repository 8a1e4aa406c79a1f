"""docs/howto/django.md as a user follows it: every file the page shows is written to an
empty directory as it is written there, and the page's commands run as written, with a
real Redis and a real ``celery -A proj worker``: the migrations, the worker, an order
placed through the view (Django's test client), the confirmation email in the worker's
console, the order marked confirmed; then the page's pytest run of its own test, with
the in-process worker; and CSRF refusing a POST without its token."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tests import support

DOC = Path(__file__).resolve().parents[2] / "docs" / "howto" / "django.md"
FENCE = re.compile(r"```(python|ini|bash)\n(.*?)```", re.S)
PATH_LINE = re.compile(r"^# ([\w./]+\.(?:py|ini))$")

pytest.importorskip("django")


def _files() -> dict[str, str]:
    """Every block whose first line names a file: ``{path: text}``."""
    files: dict[str, str] = {}
    for m in FENCE.finditer(DOC.read_text()):
        if m.group(1) == "bash":
            continue
        first = m.group(2).splitlines()[0] if m.group(2).strip() else ""
        found = PATH_LINE.match(first)
        if found:
            assert found.group(1) not in files, f"{found.group(1)} is shown twice in {DOC.name}"
            files[found.group(1)] = m.group(2)
    return files


def _commands() -> list[str]:
    """The lines of the page's bash blocks that run the project (not pip)."""
    lines: list[str] = []
    for m in FENCE.finditer(DOC.read_text()):
        if m.group(1) != "bash":
            continue
        for line in m.group(2).splitlines():
            code = line.split("  #", 1)[0].strip()
            if code and not code.startswith(("pip ", "#")):
                lines.append(code)
    return lines


def _urls() -> dict[str, str]:
    store = support.db_for(f"{__name__}.store")
    broker = support.db_for(f"{__name__}.broker")
    if broker == store:
        broker = store % 15 + 1
    return {"FANOUT_REDIS_URL": f"{support.base_url()}/{store}",
            "CELERY_BROKER_URL": f"{support.base_url()}/{broker}"}


def test_the_how_to_is_a_project_that_runs_as_written(tmp_path: Path, log_dir: Path) -> None:
    files = _files()
    assert {"manage.py", "proj/__init__.py", "proj/settings.py", "proj/celery.py",
            "proj/urls.py", "orders/__init__.py", "orders/models.py", "orders/views.py",
            "orders/fanout_functions.py", "proj/settings_test.py", "pytest.ini",
            "orders/test_orders.py"} <= set(files), sorted(files)
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    urls = _urls()
    for url in urls.values():
        redis.Redis.from_url(url).flushdb()
    venv_bin = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE", "FANOUT_APP", "FANOUT_DEBUG")}
    env.update(urls, PATH=f"{venv_bin}{os.pathsep}{env.get('PATH', '')}")

    commands = _commands()
    run_it = [c for c in commands if not c.startswith("python -m pytest")]
    assert [c.split()[:3] for c in run_it] == [
        ["python", "manage.py", "makemigrations"], ["python", "manage.py", "migrate"],
        ["celery", "-A", "proj"], ["python", "manage.py", "shell"]], run_it
    worker: subprocess.Popen[bytes] | None = None
    log_path = log_dir / "django-howto-worker.log"
    placed = ""
    try:
        for command in run_it:
            if command.startswith("celery -A proj worker"):
                log = open(log_path, "wb")  # noqa: SIM115
                proc = subprocess.Popen(shlex.split(command), cwd=tmp_path, env=env,
                                        stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
                worker = proc
                support.wait_for(lambda p=proc: " ready." in log_path.read_text(errors="replace")
                                 or p.poll() is not None, timeout=90)
                assert proc.poll() is None, log_path.read_text()[-4000:]
                continue
            res = subprocess.run(shlex.split(command), cwd=tmp_path, env=env,
                                 capture_output=True, text=True, timeout=180)
            assert res.returncode == 0, f"{command}\n{res.stdout}\n{res.stderr}"
            placed = res.stdout
        # (Django 5.2's shell first says how many objects it imported.)
        body = json.loads(placed.strip().splitlines()[-1])
        assert body["order_id"] == 1 and body["event_id"], placed

        # The run completes in the real worker, and the order is confirmed.
        check = (
            "import json, time\n"
            "from fanout.django import client\n"
            "from orders.models import Order\n"
            "for _ in range(600):\n"
            f"    runs = client().list_runs(event_id={body['event_id']!r})\n"
            "    if runs and all(r.done for r in runs):\n"
            "        break\n"
            "    time.sleep(0.1)\n"
            "print(json.dumps({'runs': [[r.fn_id, r.status, r.output] for r in runs],\n"
            "                  'order': Order.objects.get(pk=1).status}))\n")
        res = subprocess.run([sys.executable, "manage.py", "shell", "-c", check], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=180)
        assert res.returncode == 0, res.stderr
        seen = json.loads(res.stdout.strip().splitlines()[-1])
        assert seen == {"runs": [["send-order-confirmation", "completed",
                                  {"emailed": "ada@example.com"}]],
                        "order": "confirmed"}, seen
        support.wait_for(lambda: "Subject: Order 1 confirmed" in log_path.read_text(), timeout=30)

        # CSRF: a POST without its token is refused, and nothing is emitted.
        csrf = ("from django.test import Client\n"
                "r = Client(enforce_csrf_checks=True).post('/orders/', "
                "{'email': 'eve@example.com', 'total': '1'})\n"
                "from orders.models import Order\n"
                "print(r.status_code, Order.objects.count())\n")
        res = subprocess.run([sys.executable, "manage.py", "shell", "-c", csrf], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0 and res.stdout.strip().splitlines()[-1] == "403 1", res.stdout + res.stderr
    finally:
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
    log_text = log_path.read_text(errors="replace")
    assert "Traceback" not in log_text, log_text[-4000:]

    # The page's own test, with plain pytest from the project's directory: in-process
    # worker, memory:// store and broker, no Redis.
    (pytest_cmd,) = [c for c in commands if c.startswith("python -m pytest")]
    env_no_redis = {k: v for k, v in env.items() if k not in urls}
    res = subprocess.run(shlex.split(pytest_cmd) + ["-p", "no:cacheprovider"], cwd=tmp_path,
                         env=env_no_redis, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    assert "1 passed" in res.stdout, res.stdout
