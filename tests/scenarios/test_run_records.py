"""Run and step records say until when and for what: a sleep's end, a wait's event,
match and timeout, a retry's next attempt (n of m) and every earlier attempt, an
invoke's child run, the runs a send_event started, and what a run replays; through
``get_run``, ``fanout run`` and ``fanout run --json``, with a real worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import fanout
from tests.support import ROOT, make_app, redis_for, run_of, wait_for, wait_run

MOD = __name__
app, client = make_app(__name__, app_id="rec")


@client.create_function(fn_id="napper", trigger=fanout.TriggerEvent(event="rec/nap"))
def napper(ctx: fanout.ContextSync) -> str:
    ctx.step.sleep("nap", "10m")
    return "woke"


@client.create_function(fn_id="approver", trigger=fanout.TriggerEvent(event="rec/order"))
def approver(ctx: fanout.ContextSync) -> Any:
    ev = ctx.step.wait_for_event("approval", event="rec/approve", match="data.id", timeout="1h")
    return None if ev is None else ev.data


def _fails(name: str, times: int) -> str:
    n = int(redis_for(MOD).incr(f"side:{name}"))
    if n <= times:
        raise ConnectionError(f"{name} attempt {n} refused")
    return f"ok after {n}"


@client.create_function(fn_id="patient", trigger=fanout.TriggerEvent(event="rec/patient"),
                        retries=2, backoff=[600])
def patient(ctx: fanout.ContextSync) -> str:
    return str(ctx.step.run("call", _fails, "patient", 99))


@client.create_function(fn_id="stubborn", trigger=fanout.TriggerEvent(event="rec/stubborn"),
                        retries=3)
def stubborn(ctx: fanout.ContextSync) -> str:
    return str(ctx.step.run("call", _fails, "stubborn", 2))


@client.create_function(fn_id="body", trigger=fanout.TriggerEvent(event="rec/body"), retries=2,
                        backoff=[600])
def body(ctx: fanout.ContextSync) -> str:
    raise ValueError("the body failed")


@client.create_function(fn_id="child", trigger=fanout.TriggerEvent(event="rec/child"))
def child(ctx: fanout.ContextSync) -> int:
    return int(ctx.event.data.get("x", 0)) * 2


@client.create_function(fn_id="parent", trigger=fanout.TriggerEvent(event="rec/parent"))
def parent(ctx: fanout.ContextSync) -> Any:
    doubled = ctx.step.invoke("double", function=child, data={"x": 21})
    ctx.step.send_event("fan", [fanout.Event(name="rec/child", data={"x": i}) for i in range(3)])
    return doubled


def cli(*args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-m", "fanout._cli", *args, "-A", MOD], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout


def _status(run_id: str, status: str) -> fanout.RunInfo | None:
    info = client.get_run(run_id)
    return info if info is not None and info.status == status else None


def test_sleep_says_until_when(worker: Any) -> None:
    before = time.time()
    run_id = run_of(client, client.emit("rec/nap", {}), "napper")
    info = wait_for(lambda: _status(run_id, "sleeping"))
    step = info.pending_step
    assert step is not None and step.step_id == "nap"
    assert step.sleep_until is not None
    assert before + 599 < step.sleep_until.timestamp() < time.time() + 601
    assert info.wake_at is not None and abs(info.wake_at.timestamp() - step.sleep_until.timestamp()) < 1
    assert info.state.startswith("sleeping until 20") and "(step 'nap')" in info.state
    text = cli("run", run_id)
    assert "  now      sleeping until 20" in text
    data = json.loads(cli("run", run_id, "--json"))
    assert data["state"] == info.state
    assert data["steps"][0]["sleep_until"] == step.sleep_until.timestamp()
    assert client.cancel(run_id)


def test_wait_says_which_event_and_until_when(worker: Any) -> None:
    run_id = run_of(client, client.emit("rec/order", {"id": "o-7"}), "approver")
    info = wait_for(lambda: _status(run_id, "waiting"))
    step = info.pending_step
    assert step is not None
    assert (step.wait_event, step.wait_match, step.wait_if) == ("rec/approve", "data.id", None)
    assert step.timeout_at is not None and step.timeout_at.timestamp() > time.time() + 3500
    assert "waiting for event 'rec/approve' matching data.id until 20" in info.state
    assert "waiting for event 'rec/approve' matching data.id" in cli("run", run_id)
    client.emit("rec/approve", {"id": "o-7", "ok": True})
    done = wait_run(client, run_id)
    assert done.status == "completed" and done.output == {"id": "o-7", "ok": True}
    (wait,) = done.steps
    assert wait.status == "completed" and wait.wait_event == "rec/approve"
    assert wait.started_at is not None and wait.ended_at is not None
    assert wait.started_at < wait.ended_at


def test_a_retrying_step_says_attempt_n_of_m_and_when(worker: Any) -> None:
    run_id = run_of(client, client.emit("rec/patient", {}), "patient")
    info = wait_for(lambda: (i := client.get_run(run_id)) and i.steps
                    and i.steps[0].status == "retrying" and i)
    step = info.steps[0]
    assert step.retry_at is not None and step.retry_at.timestamp() > time.time() + 500
    assert step.max_attempts == 3
    assert step.note.startswith("retrying: attempt 2 of 3 at 20")
    assert info.state == f"{step.note} (step 'call')"
    (first,) = step.attempt_history
    assert first.attempt == 1 and first.error is not None
    assert first.error["message"] == "patient attempt 1 refused"
    text = cli("run", run_id)
    assert "retrying: attempt 2 of 3 at" in text
    assert "step call attempt 1 of 3:" in text and "patient attempt 1 refused" in text
    assert client.cancel(run_id)


def test_every_attempt_keeps_its_start_end_and_error(worker: Any) -> None:
    run_id = run_of(client, client.emit("rec/stubborn", {}), "stubborn")
    info = wait_run(client, run_id)
    assert info.status == "completed" and info.output == "ok after 3"
    (step,) = info.steps
    hist = step.attempt_history
    assert [a.attempt for a in hist] == [1, 2, 3]
    assert [a.error["message"] if a.error else None for a in hist] == [
        "stubborn attempt 1 refused", "stubborn attempt 2 refused", None]
    for a, b in zip(hist, hist[1:], strict=False):
        assert a.started_at and a.ended_at and b.started_at
        assert a.started_at <= a.ended_at < b.started_at
    attempts = json.loads(cli("run", run_id, "--json"))["steps"][0]["attempt_history"]
    assert [a["error"] is None for a in attempts] == [False, False, True]


def test_a_run_retrying_outside_steps_says_when(worker: Any) -> None:
    run_id = run_of(client, client.emit("rec/body", {}), "body")
    info = wait_for(lambda: (i := client.get_run(run_id)) and i.error and i.wake_at and i)
    assert info.status == "running" and info.max_attempts == 3
    assert info.state.startswith("retrying: attempt 2 of 3 at 20")
    assert client.cancel(run_id)


def test_invoke_and_send_event_name_the_runs_they_started(worker: Any) -> None:
    run_id = run_of(client, client.emit("rec/parent", {}), "parent")
    info = wait_run(client, run_id)
    assert info.status == "completed" and info.output == 42
    invoke, fan = info.steps
    assert invoke.child_run_id is not None
    kid = wait_run(client, invoke.child_run_id)
    assert kid.fn_id == "child" and kid.output == 42 and kid.parent_run_id == run_id
    assert invoke.started_at is not None and invoke.ended_at is not None
    assert len(fan.sent_event_ids) == 3
    # The parent may end before the router has started the children its events name.
    children = sorted(run_of(client, e, "child") for e in fan.sent_event_ids)
    info = wait_for(lambda: (i := client.get_run(run_id)) and len(i.steps[1].started_runs) == 3 and i)
    invoke, fan = info.steps
    assert sorted(fan.started_runs) == children
    text = cli("run", run_id)
    assert f"step double: invoked run {invoke.child_run_id}" in text
    assert "step fan: sent 3 event(s), started 3 run(s)" in text
    data = json.loads(cli("run", run_id, "--json"))
    assert data["steps"][0]["child_run_id"] == invoke.child_run_id
    assert sorted(data["steps"][1]["started_runs"]) == sorted(fan.started_runs)


def test_replay_and_rerun_say_what_they_repeat(worker: Any) -> None:
    run_id = run_of(client, client.emit("rec/parent", {}), "parent")
    wait_run(client, run_id)
    replay = wait_run(client, client.replay(run_id))
    assert (replay.replay_of, replay.rerun_of) == (run_id, None)
    rerun = wait_run(client, client.rerun(run_id, from_step="fan"))
    assert (rerun.replay_of, rerun.rerun_of, rerun.rerun_from_step) == (None, run_id, "fan")
    assert f"rerun of {run_id} from step fan" in cli("run", rerun.run_id)
    data = json.loads(cli("run", replay.run_id, "--json"))
    assert data["replay_of"] == run_id and data["rerun_of"] is None


def test_list_runs_pages_with_a_cursor_and_a_time_window(worker: Any) -> None:
    import datetime as dt

    import pytest

    time.sleep(0.01)
    t0 = time.time()
    first = [run_of(client, client.emit("rec/nap", {"i": i}), "napper") for i in range(4)]
    wait_for(lambda: all(_status(r, "sleeping") for r in first))  # created by the router
    time.sleep(0.05)
    t1 = time.time()
    time.sleep(0.05)
    later = [run_of(client, client.emit("rec/nap", {"i": i}), "napper") for i in range(4, 7)]
    wait_for(lambda: all(_status(r, "sleeping") for r in first + later))
    seen: list[fanout.RunInfo] = []
    cursor = None
    while True:
        page = client.list_runs(fn_id="napper", since=t0, cursor=cursor, limit=3)
        assert len(page) <= 3
        seen.extend(page)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sorted(r.run_id for r in seen) == sorted(first + later)
    assert {r.run_id for r in seen[:3]} == set(later)  # newest first
    old = client.list_runs(fn_id="napper", since=dt.datetime.fromtimestamp(t0, dt.timezone.utc),
                           until=t1)
    assert sorted(r.run_id for r in old) == sorted(first)
    assert old.next_cursor is None
    active = client.list_runs(fn_id="napper", status="active", since=t1)
    assert sorted(r.run_id for r in active) == sorted(later)
    with pytest.raises(fanout.ConfigError, match="aware datetime"):
        client.list_runs(since=dt.datetime(2024, 1, 1))
    with pytest.raises(fanout.ConfigError, match="unknown run status 'sleepy'"):
        client.list_runs(status="sleepy")
    for r in first + later:
        client.cancel(r)


def test_the_dashboards_run_page_says_the_same(worker: Any) -> None:
    import re
    import urllib.request

    nap = run_of(client, client.emit("rec/nap", {"page": 1}), "napper")
    par = run_of(client, client.emit("rec/parent", {"page": 1}), "parent")
    wait_for(lambda: _status(nap, "sleeping"))
    info = wait_run(client, par)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "fanout._cli", "dashboard", "-A", MOD,
                             "--port", "0"], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        m = re.search(r"on (http://127\.0\.0\.1:\d+)/", proc.stderr.readline())
        assert m
        with urllib.request.urlopen(f"{m.group(1)}/runs/{nap}", timeout=10) as resp:
            page = resp.read().decode()
        assert '<span id="run-state">sleeping until 20' in page
        with urllib.request.urlopen(f"{m.group(1)}/runs/{par}", timeout=10) as resp:
            page = resp.read().decode()
        assert f'invoked <a class="mono" href="/runs/{info.steps[0].child_run_id}">' in page
        assert "started 3 run(s)" in page
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        client.cancel(nap)
