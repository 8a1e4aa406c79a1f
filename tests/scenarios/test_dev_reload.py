"""`fanout dev --reload` against a project in a temporary directory: editing a
function's code restarts the embedded worker on the new code, runs in progress
carry on (the in-memory store survives the reload), and code that fails to
import leaves the previous worker running."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import wait_for

TOKEN = "dev-token-123"

PROJ = '''
import fanout
from fanout.embedded import embedded_celery

import words

app = embedded_celery("proj")
client = fanout.Fanout("proj", celery=app, redis_url="memory://")


@client.create_function(fn_id="greet", trigger=fanout.TriggerEvent(event="app/greet"))
def greet(ctx: fanout.ContextSync) -> str:
    return ctx.step.run("say", lambda: "{greeting} " + words.WORD)


@client.create_function(fn_id="slow", trigger=fanout.TriggerEvent(event="app/slow"))
def slow(ctx: fanout.ContextSync) -> list[str]:
    before = ctx.step.run("before", lambda: words.WORD)
    ctx.step.wait_for_event("go", event="app/go", timeout="2m")
    return [before, ctx.step.run("after", lambda: words.WORD)]
'''


class Dev:
    """`fanout -A proj dev --reload` in a subprocess, its output collected by a thread."""

    def __init__(self, project: Path) -> None:
        env = {k: v for k, v in os.environ.items()
               if k not in ("FANOUT_REDIS_URL", "CELERY_BROKER_URL", "FANOUT_APP", "PYTHONPATH")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fanout._cli", "-A", "proj", "dev", "--reload",
             "--port", "0", "--token", TOKEN],
            cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_for(lambda: self.proc.poll() is not None or self.count("ready.") == 1, timeout=60)
        assert self.proc.poll() is None, self.output()
        m = re.search(r"dashboard\s+(http://\S+?)/ \(sign in", self.output())
        assert m, self.output()
        self.url = m.group(1)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def output(self) -> str:
        return "".join(self.lines)

    def count(self, text: str) -> int:
        return sum(1 for line in list(self.lines) if line.startswith(text))

    def call(self, path: str, data: dict[str, str] | None = None) -> tuple[int, Any, str]:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        req = urllib.request.Request(self.url + path, data=body, headers={"X-Fanout-Token": TOKEN})

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *a: Any, **k: Any) -> None:
                return None

        try:
            with urllib.request.build_opener(NoRedirect).open(req, timeout=10) as resp:
                raw = resp.read().decode()
                return resp.status, json.loads(raw) if raw.startswith(("{", "[")) else raw, ""
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(), exc.headers.get("Location", "")

    def invoke(self, fn: str) -> str:
        status, body, location = self.call("/actions/invoke", {"fn": fn})
        assert status == 303 and location.startswith("/runs/"), (status, body, self.output())
        return location.split("?")[0].rsplit("/", 1)[1]

    def status(self, run_id: str) -> str | None:
        code, run, _ = self.call(f"/api/runs/{run_id}")
        return str(run["status"]) if code == 200 else None

    def result(self, run_id: str, timeout: float = 30) -> Any:
        def done() -> Any:
            code, run, _ = self.call(f"/api/runs/{run_id}")
            return run if code == 200 and run["status"] in ("completed", "failed") else None

        run = wait_for(done, timeout=timeout)
        assert run["status"] == "completed", (run, self.output()[-3000:])
        return run["output"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)


def write(path: Path, text: str) -> None:
    path.write_text(textwrap.dedent(text))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write(tmp_path / "words.py", 'WORD = "one"\n')
    write(tmp_path / "proj.py", PROJ.replace("{greeting}", "hello"))
    return tmp_path


@pytest.fixture
def dev(project: Path) -> Iterator[Dev]:
    d = Dev(project)
    try:
        yield d
    finally:
        d.stop()


def test_reload_runs_the_new_code(project: Path, dev: Dev) -> None:
    assert dev.result(dev.invoke("proj:greet")) == "hello one"
    # A run that waits for an event across the reload.
    slow = dev.invoke("proj:slow")
    wait_for(lambda: dev.status(slow) == "waiting", timeout=30)

    # A helper module changes: the worker restarts on the new code.
    write(project / "words.py", 'WORD = "two"\n')
    wait_for(lambda: dev.count("fanout dev: reloaded") == 1, timeout=30)
    assert "words.py changed; restarting the worker" in dev.output()
    assert dev.result(dev.invoke("proj:greet")) == "hello two"
    # The waiting run goes on under the new worker: its first step keeps its
    # memoized output, the step after the wait runs the new code.
    assert dev.status(slow) == "waiting"
    status, body, _ = dev.call("/actions/send", {"name": "app/go"})
    assert status == 303, body
    assert dev.result(slow) == ["one", "two"]

    # Code that does not import: the previous worker keeps running.
    write(project / "proj.py", PROJ.replace("{greeting}", "hello") + "\ndef broken(:\n")
    wait_for(lambda: "the new code failed to load" in dev.output(), timeout=30)
    assert "SyntaxError" in dev.output() and "proj.py" in dev.output()
    assert dev.result(dev.invoke("proj:greet")) == "hello two"

    # Fixed: the function's own file changed, and its new code runs.
    write(project / "proj.py", PROJ.replace("{greeting}", "goodbye"))
    wait_for(lambda: dev.count("fanout dev: reloaded") == 2, timeout=30)
    assert dev.result(dev.invoke("proj:greet")) == "goodbye two"
    assert dev.proc.poll() is None
    dev.stop()
    assert dev.proc.returncode == 0, dev.output()[-3000:]
    after_fix = dev.output().rsplit("fanout dev: reloaded", 1)[1]
    assert "Traceback" not in after_fix, after_fix

