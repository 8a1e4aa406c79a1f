"""Bulk replay with intent: ``fanout replay --fn F --status failed`` replays the latest
failed run of each event once, never a replay of a replay unless
``--include-replays``, and ``--dry-run`` counts what it would do; with a real worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import fanout
from fanout._celery.bulk_jobs import replay_id
from tests.support import ROOT, make_app, redis_for, run_of, wait_run

MOD = __name__
app, client = make_app(__name__, app_id="bulk")


@client.create_function(fn_id="broken", trigger=fanout.TriggerEvent(event="bulk/broken"),
                        retries=0)
def broken(ctx: fanout.ContextSync) -> None:
    def charge() -> None:
        raise fanout.NonRetriableError("card declined")

    ctx.step.run("charge", charge)


@client.create_function(fn_id="once", trigger=fanout.TriggerEvent(event="bulk/once"), retries=0)
def once(ctx: fanout.ContextSync) -> str:
    def call() -> str:
        if int(redis_for(MOD).incr(f"side:once:{ctx.event.id}")) == 1:
            raise fanout.NonRetriableError("first time fails")
        return "ok"

    return str(ctx.step.run("call", call))


def cli(*args: str) -> tuple[dict[str, Any], str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-m", "fanout._cli", *args, "-A", MOD, "--json"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout), res.stderr


def text(*args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-m", "fanout._cli", *args, "-A", MOD], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout


def failed_runs(fn_id: str) -> list[fanout.RunInfo]:
    return [r for r in client.list_runs(fn_id=fn_id, limit=1000) if r.status == "failed"]


def test_replays_the_latest_failed_run_of_each_event_once(worker: Any) -> None:
    events = [client.emit("bulk/broken", {"n": i}) for i in range(3)]
    originals = [run_of(client, e, "broken") for e in events]
    for rid in originals:
        assert wait_run(client, rid).status == "failed"
    # One event was already replayed by hand, and that replay failed too.
    manual = client.replay(originals[0])
    assert wait_run(client, manual).status == "failed"
    assert len(failed_runs("broken")) == 4

    plan, _ = cli("replay", "--fn", "broken", "--status", "failed", "--dry-run")
    assert plan["count"] == 2
    assert sorted(plan["run_ids"]) == sorted(originals[1:])
    assert plan["skipped"]["replays"] == [manual]
    assert plan["skipped"]["superseded"] == [originals[0]]
    assert "would replay 2 run(s) (2 matching run(s) skipped: 1 replay(s) or rerun(s), " \
           "1 with a newer run of the same event)" in text(
               "replay", "--fn", "broken", "--status", "failed", "--dry-run")
    wide, _ = cli("replay", "--fn", "broken", "--status", "failed", "--dry-run",
                  "--include-replays")
    assert sorted(wide["run_ids"]) == sorted([manual, *originals[1:]])

    # A bulk job on the worker: 4 runs match, 2 replayed, 2 skipped by the same rule.
    done, _err = cli("replay", "--fn", "broken", "--status", "failed")
    job = done["job"]
    assert (job["state"], job["total"], job["done"], job["skipped"]) == ("done", 4, 2, 2)
    new_ids = [replay_id(job["id"], rid) for rid in originals[1:]]
    for rid in new_ids:
        info = wait_run(client, rid)
        assert info.status == "failed" and info.replay_of in originals[1:]
    assert len(failed_runs("broken")) == 6

    # Every event now has a replay as its latest run: nothing to do without asking.
    again, _ = cli("replay", "--fn", "broken", "--status", "failed", "--dry-run")
    assert again["count"] == 0
    # Asked, each event's latest failed run (a replay) is the one chosen: one per event.
    wide, _ = cli("replay", "--fn", "broken", "--status", "failed", "--dry-run",
                  "--include-replays")
    assert wide["count"] == 3
    assert sorted(wide["run_ids"]) == sorted([manual, *new_ids])
    # Explicit run ids are replayed as given.
    given, _ = cli("replay", originals[0], "--dry-run")
    assert given["run_ids"] == [originals[0]]


def test_an_event_whose_replay_succeeded_is_left_alone(worker: Any) -> None:
    rid = run_of(client, client.emit("bulk/once", {}), "once")
    assert wait_run(client, rid).status == "failed"
    assert wait_run(client, client.replay(rid)).status == "completed"
    for extra in ((), ("--include-replays",)):
        plan, _ = cli("replay", "--fn", "once", "--status", "failed", "--dry-run", *extra)
        assert plan["count"] == 0, extra
        assert plan["skipped"]["superseded"] == [rid]
