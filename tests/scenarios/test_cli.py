"""The ``fanout`` command in subprocesses, against a real `celery worker` and a
private Redis: send, runs, the run timeline, events, cancel, bulk replay with
its progress bar, rerun from a step, dev mode, and one-line errors with exit codes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fanout
from fanout._celery.bulk_jobs import replay_id
from tests.support import ROOT, make_app, redis_for, run_of, wait_for, wait_run

app, client = make_app(__name__, app_id="clitest")
MOD = __name__


def side(name: str) -> int:
    return int(redis_for(MOD).incr(f"side:{name}"))


@client.create_function(fn_id="greet", trigger=fanout.TriggerEvent(event="cli/hello"))
def greet(ctx: fanout.ContextSync) -> str:
    name = ctx.step.run("a", lambda: (side("greet-a"), ctx.event.data.get("name", "?"))[1])
    return str(ctx.step.run("b", lambda: f"hello {name}"))


@client.create_function(fn_id="slow", trigger=fanout.TriggerEvent(event="cli/slow"))
def slow(ctx: fanout.ContextSync) -> str:
    ctx.step.run("first", lambda: 1)
    ctx.step.sleep("nap", "10m")
    return "woke"


@client.create_function(fn_id="boom", trigger=fanout.TriggerEvent(event="cli/boom"), retries=0)
def boom(ctx: fanout.ContextSync) -> str:
    def maybe() -> str:
        if not redis_for(MOD).get("side:boom-fixed"):
            raise fanout.NonRetriableError("not fixed yet")
        return "fixed"

    return str(ctx.step.run("try", maybe))


def _script() -> list[str]:
    exe = shutil.which("fanout", path=str(Path(sys.executable).parent)) or shutil.which("fanout")
    return [exe] if exe else [sys.executable, "-m", "fanout._cli"]


def cli(*args: str, script: bool = False, env: dict[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    cmd = (_script() if script else [sys.executable, "-m", "fanout._cli"])
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "FANOUT_APP": MOD, **(env or {})}
    full_env.pop("FANOUT_DEBUG", None)
    return subprocess.run([*cmd, *args], cwd=ROOT, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def ok_json(*args: str) -> Any:
    res = cli(*args, "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def one_line_error(res: subprocess.CompletedProcess[str], code: int, pattern: str) -> None:
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert re.search(pattern, lines[0]), lines[0]


def test_send_runs_and_the_console_script(worker: object) -> None:
    res = cli("send", "cli/hello", "--data", '{"name": "Ada"}', "--wait", "30", "--json",
              script=True)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    (run,) = out["runs"]
    assert run["fn_key"] == "clitest:greet" and run["status"] == "completed"
    assert run["run_id"] == run_of(client, out["event_id"], "greet")
    listed = ok_json("runs", "--fn", "greet")["runs"]
    assert run["run_id"] in [r["run_id"] for r in listed]
    text = cli("runs", "--fn", "clitest:greet", "--status", "completed").stdout
    assert run["run_id"] in text and "completed" in text and "FUNCTION" in text
    by_event = ok_json("runs", "--event", out["event_id"])["runs"]
    assert [r["run_id"] for r in by_event] == [run["run_id"]]
    fns = ok_json("functions")
    assert {f["fn_id"] for f in fns} == {"greet", "slow", "boom"}


def test_run_timeline(worker: object) -> None:
    eid = client.emit("cli/hello", {"name": "Grace"})
    rid = run_of(client, eid, "greet")
    wait_run(client, rid)
    res = cli("run", rid)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith(f"run {rid}  clitest:greet  completed")
    header = next(line for line in lines if line.startswith("#"))
    assert all(col in header for col in ("STEP", "QUEUE", "EXEC"))
    step_rows = [line for line in lines if re.match(r"^\d+\s+[ab]\s", line)]
    assert len(step_rows) == 2 and all("|" in r and "#" in r for r in step_rows)
    assert 'output: "hello Grace"' in res.stdout
    data = ok_json("run", rid)
    assert [s["step_id"] for s in data["steps"]] == ["a", "b"]
    assert all(s["execution"] is not None and s["execution"] >= 0 for s in data["steps"])
    assert all(s["queue_delay"] is not None and s["queue_delay"] >= 0 for s in data["steps"])


def test_events(worker: object) -> None:
    eid = client.emit("cli/hello", {"name": "Edsger"})
    wait_run(client, run_of(client, eid, "greet"))
    events = ok_json("events", "--limit", "5")["events"]
    mine = next(e for e in events if e["event_id"] == eid)
    assert mine["name"] == "cli/hello" and mine["run_count"] == 1
    named = ok_json("events", "--name", "cli/hello", "--since", "10m")["events"]
    assert eid in [e["event_id"] for e in named]
    text = cli("event", eid).stdout
    assert eid in text and "clitest:greet" in text


def test_cancel(worker: object) -> None:
    eid = client.emit("cli/slow")
    rid = run_of(client, eid, "slow")
    wait_for(lambda: getattr(client.get_run(rid), "status", None) == "sleeping", timeout=30)
    res = cli("cancel", rid)
    assert res.returncode == 0, res.stderr
    assert f"{rid} cancelled" in res.stdout
    assert client.get_run(rid).status == "cancelled"  # type: ignore[union-attr]
    one_line_error(cli("cancel", rid), 1, rf"^fanout cancel: error: {rid}: had already ended$")


def test_bulk_replay_with_progress(worker: object) -> None:
    since = time.time() - 1
    eids = [client.emit("cli/boom", {"i": i}) for i in range(4)]
    failed = [wait_run(client, run_of(client, e, "boom")) for e in eids]
    assert {r.status for r in failed} == {"failed"}
    dry = cli("replay", "--fn", "boom", "--status", "failed", "--since", str(since), "--dry-run")
    assert dry.returncode == 0 and "would replay 4 run(s)" in dry.stdout
    redis_for(MOD).set("side:boom-fixed", "1")
    res = cli("replay", "--fn", "boom", "--status", "failed", "--since", str(since))
    assert res.returncode == 0, res.stderr
    assert re.search(r"replay \[#{30}\] 4/4", res.stderr), res.stderr  # the progress bar
    assert res.stdout.strip() == "replay: 4 of 4 run(s)"
    job = client.bulk_jobs()[0]  # the replays' ids: derived from the job and the run
    new_ids = [replay_id(job.id, r.run_id) for r in failed]
    for nid in new_ids:
        run = wait_run(client, nid)
        assert run.status == "completed" and run.output == "fixed"
    one_line_error(cli("replay"), 2, "replay needs run ids or a filter")


def test_rerun_from_step(worker: object) -> None:
    eid = client.emit("cli/hello", {"name": "Barbara"})
    rid = run_of(client, eid, "greet")
    wait_run(client, rid)
    before = int(redis_for(MOD).get("side:greet-a") or 0)
    res = cli("rerun", rid, "--from-step", "b")
    assert res.returncode == 0, res.stderr
    new_id = res.stdout.strip()
    new = wait_run(client, new_id)
    assert new.status == "completed" and new.output == "hello Barbara"
    assert int(redis_for(MOD).get("side:greet-a") or 0) == before  # step a was reused
    assert ok_json("run", new_id)["replay_of"] == rid
    one_line_error(cli("rerun", rid, "--from-step", "zzz"), 1,
                   r"has no step 'zzz'; its steps are \['a', 'b'\]")


def test_errors_are_one_line_with_an_exit_code(worker: object) -> None:
    one_line_error(cli("run", "NOSUCHRUN"), 1, r"^fanout run: error: no run 'NOSUCHRUN'")
    one_line_error(cli("runs", "--fn", "nope"), 1, r"no function 'nope'.*clitest:greet")
    one_line_error(cli("runs", "-A", "tests.scenarios.no_such_module"), 1,
                   r"cannot import app module 'tests.scenarios.no_such_module'")
    one_line_error(cli("runs", env={"FANOUT_APP": ""}), 2, r"no app given")
    one_line_error(cli("send", "x", "--data", "{oops"), 2, r"argument --data: not valid JSON")
    one_line_error(cli("runs", "--since", "last tuesday"), 2, r"invalid time 'last tuesday'")
    one_line_error(cli("send", "", "--data", "{}"), 2, r"invalid event")
    one_line_error(cli("runs", env={"FANOUT_TEST_REDIS_BASE": "redis://127.0.0.1:9"}), 1,
                   r"^fanout runs: error: cannot reach Redis")
    one_line_error(cli("dashboard", "--host", "0.0.0.0", "--port", "0"), 2,
                   r"needs an access token")
    res = cli(script=True)
    assert res.returncode == 2 and "a command is required" in res.stderr


@contextlib.contextmanager
def _dev_running(cmd: list[str], cwd: Path, env: dict[str, str],
                 timeout: float) -> Iterator[str]:
    """`fanout dev` started by ``cmd``, read until it prints "ready."; yields the
    dashboard's URL and stops the process (SIGTERM, then kill) on the way out."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    url = ""
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"dashboard\s+(http://\S+?)/ \(sign in", line)
            url = m.group(1) if m else url
            if line.startswith("ready."):
                break
        assert url and lines[-1].startswith("ready."), "".join(lines)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def dev_server() -> Iterator[str]:
    """`fanout dev` on the embedded example: in-memory broker and store, one process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for key in ("FANOUT_REDIS_URL", "CELERY_BROKER_URL", "FANOUT_APP"):
        env.pop(key, None)
    with _dev_running([sys.executable, "-m", "fanout._cli", "dev", "-A",
                       "examples.weekly_email.app", "--port", "0", "--token", "dev-token-123"],
                      ROOT, env, timeout=30) as url:
        yield url


def _call(url: str, data: dict[str, str] | None = None) -> tuple[int, Any, str]:
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, headers={"X-Fanout-Token": "dev-token-123"})

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a: Any, **k: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=10) as resp:
            raw = resp.read().decode()
            return resp.status, json.loads(raw) if raw.startswith(("{", "[")) else raw, ""
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), exc.headers.get("Location", "")


def test_dev_mode_embedded(dev_server: str) -> None:
    status, fns, _ = _call(f"{dev_server}/api/functions")
    assert status == 200 and {f["fn_id"] for f in fns} == {
        "weekly-activity-load-users", "weekly-activity-send-email"}
    status, _body, location = _call(f"{dev_server}/actions/invoke",
                                    {"fn": "signup-flow:weekly-activity-load-users"})
    assert status == 303 and location.startswith("/runs/"), (status, _body)
    run_id = location.split("?")[0].rsplit("/", 1)[1]

    def done() -> Any:
        code, run, _ = _call(f"{dev_server}/api/runs/{run_id}")
        return run if code == 200 and run["status"] == "completed" else None

    run = wait_for(done, timeout=30)
    assert run["output"] == {"count": 3}

    def emails() -> Any:
        _c, page, _ = _call(f"{dev_server}/api/runs?fn=signup-flow:weekly-activity-send-email")
        runs = page["runs"]
        return runs if len(runs) == 3 and all(r["status"] == "completed" for r in runs) else None

    assert wait_for(emails, timeout=30)
    # Without the token nothing is served.
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{dev_server}/api/runs", timeout=10)
    assert err.value.code == 401


def test_dev_mode_on_the_observability_page_hello_file(tmp_path: Path) -> None:
    """docs/howto/observability.md's ``hello.py``, written as the page shows it, runs
    under ``fanout dev -A hello`` from its directory: no repository module needed."""
    doc = (ROOT / "docs" / "howto" / "observability.md").read_text()
    (code,) = re.findall(r"```python\n(# hello\.py\n.*?)```", doc, re.S)
    (tmp_path / "hello.py").write_text(code)
    env = {k: v for k, v in os.environ.items()
           if k not in ("FANOUT_REDIS_URL", "CELERY_BROKER_URL", "FANOUT_APP", "PYTHONPATH")}
    with _dev_running([*_script(), "dev", "-A", "hello", "--port", "0", "--token",
                       "dev-token-123"], tmp_path, env, timeout=60) as url:
        status, fns, _ = _call(f"{url}/api/functions")
        assert status == 200 and [f["fn_id"] for f in fns] == ["greet"], fns
        status, _body, location = _call(f"{url}/actions/invoke", {"fn": "hello:greet"})
        assert status == 303 and location.startswith("/runs/"), (status, _body)
        run_id = location.split("?")[0].rsplit("/", 1)[1]

        def done() -> Any:
            code, run, _ = _call(f"{url}/api/runs/{run_id}")
            return run if code == 200 and run["status"] == "completed" else None

        assert wait_for(done, timeout=30)["output"] == "hello world"
