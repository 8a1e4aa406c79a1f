"""Pause and resume a function with real workers: while paused, events still create
runs and nothing runs (a run in flight stops at its next pass boundary); resuming
runs everything that waited, oldest first; skip_backlog records the runs that never
started as skipped; the pause survives a worker restart; the CLI drives both."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import fanout
from tests.support import ROOT, Worker, make_app, redis_for, run_of, wait_for, wait_run

r = redis_for(__name__)
app, client = make_app(__name__, app_id="pz")


@client.create_function(fn_id="job", trigger=fanout.TriggerEvent(event="pz/job"))
def job(ctx: fanout.ContextSync) -> int:
    n = int(ctx.event.data["n"])

    def work() -> int:
        r.rpush("pz:ran", n)
        return n

    return ctx.step.run("work", work)


@client.create_function(fn_id="slow", trigger=fanout.TriggerEvent(event="pz/slow"))
def slow(ctx: fanout.ContextSync) -> str:
    ctx.step.run("before", lambda: r.rpush("pz:slow", "before"))
    ctx.step.sleep("nap", "1500ms")
    ctx.step.run("after", lambda: r.rpush("pz:slow", "after"))
    return "woke"


def _ran() -> list[int]:
    return [int(x) for x in r.lrange("pz:ran", 0, -1)]


def _send(*ns: int) -> list[str]:
    ids = client.send_sync([fanout.Event(name="pz/job", data={"n": n}) for n in ns])
    return [run_of(client, eid, "job") for eid in ids]


def test_paused_runs_wait_and_resume_runs_them_oldest_first(worker: Any) -> None:
    r.delete("pz:ran", "pz:slow")
    (sid,) = client.send_sync(fanout.Event(name="pz/slow"))
    slow_run = run_of(client, sid, "slow")
    wait_for(lambda: getattr(client.get_run(slow_run), "status", None) == "sleeping", 30)
    assert client.pause(job) and client.pause("slow")
    assert not client.pause(job)  # paused already
    time.sleep(1.5)  # workers re-read the paused set every second
    # One at a time, each parked before the next is sent: "oldest first" is then the
    # order they were sent in (passes parked in the same millisecond have no order).
    runs: list[str] = []
    for n in (1, 2, 3):
        runs += _send(n)
        wait_for(lambda k=n: r.zcard("fanout:parked:{pz:job}") == k, 30)
    time.sleep(3)  # longer than the sleep: the sleeping run woke while paused
    assert _ran() == []
    assert all(client.get_run(rid) is not None for rid in runs)  # created, waiting
    assert [x.decode() for x in r.lrange("pz:slow", 0, -1)] == ["before"]
    assert client.is_paused(job)

    parked = [m.decode() for m in r.zrange("fanout:parked:{pz:job}", 0, -1)]
    assert [p.split('"')[1] for p in parked] == runs  # handed back oldest first
    assert client.resume(job) == 3
    for rid in runs:
        assert wait_run(client, rid).status == "completed"
    assert sorted(_ran()) == [1, 2, 3]
    assert client.resume("slow") == 1
    assert wait_run(client, slow_run).output == "woke"
    assert [x.decode() for x in r.lrange("pz:slow", 0, -1)] == ["before", "after"]


def test_resume_can_skip_the_backlog_without_losing_runs_in_flight(worker: Any) -> None:
    r.delete("pz:ran", "pz:slow")
    (sid,) = client.send_sync(fanout.Event(name="pz/slow"))
    slow_run = run_of(client, sid, "slow")
    wait_for(lambda: getattr(client.get_run(slow_run), "status", None) == "sleeping", 30)
    client.pause(job)
    client.pause("slow")
    time.sleep(1.5)
    runs = _send(4, 5)
    time.sleep(3)
    client.resume(job, skip_backlog=True)
    client.resume("slow", skip_backlog=True)  # under way: it continues
    for rid in runs:
        info = client.get_run(rid)
        assert info is not None and info.status == "skipped"
        assert info.error is not None and info.error["type"] == "FunctionPaused"
    assert wait_run(client, slow_run).output == "woke"
    assert _ran() == []


def test_the_pause_survives_a_worker_restart_and_the_cli_drives_it(
    worker: Any, log_dir: Path
) -> None:
    r.delete("pz:ran")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cli = [sys.executable, "-m", "fanout._cli", "-A", __name__]
    out = subprocess.run([*cli, "pause", "pz:job", "--reason", "deploy"], capture_output=True,
                         text=True, env=env, cwd=ROOT, timeout=60)
    assert out.returncode == 0 and "pz:job paused" in out.stdout, out.stderr
    worker.stop()
    fresh = Worker(__name__, name="w2", log_dir=log_dir)
    try:
        (rid,) = _send(6)
        time.sleep(3)
        assert _ran() == [] and client.is_paused(job)
        out = subprocess.run([*cli, "resume", "pz:job"], capture_output=True, text=True,
                             env=env, cwd=ROOT, timeout=60)
        assert out.returncode == 0 and "1 waiting pass(es)" in out.stdout, out.stderr
        assert wait_run(client, rid).status == "completed" and _ran() == [6]
        again = subprocess.run([*cli, "resume", "pz:job"], capture_output=True, text=True,
                               env=env, cwd=ROOT, timeout=60)
        assert again.returncode != 0 and "pz:job is not paused" in again.stderr
    finally:
        fresh.stop()
