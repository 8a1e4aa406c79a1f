"""Bulk cancel and replay by query, run on the workers in batches: a job over 1,200
runs cancels exactly the matching ones; a worker SIGKILLed mid-job leaves a job that
finishes after a restart with every run replayed once; the dry-run count is the final
count; the CLI follows, detaches, lists and shows jobs; the audit log names who and
why. Real Redis, real ``celery worker`` subprocesses.

Nothing here races the worker: a function is paused before the worker that parks its
runs starts (a worker process reads the paused set when it starts, then once a
second), and the worker killed mid-job is held at a gate, a batch's replays started,
before it counts that batch (:data:`GATED`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fanout
from fanout._celery import bulk_jobs
from fanout._celery.bulk_jobs import replay_id
from fanout._redis.audit import AuditLog
from fanout._redis.history import History
from tests.support import ROOT, Worker, make_app, redis_for, wait_for

MOD = __name__
app, client = make_app(__name__, app_id="bj")
N = 1200
#: A worker started with this set holds each batch of a bulk replay, its replays
#: started, before it counts: until the test pushes a token onto :data:`GATE` (one
#: batch each).
GATED = "BJ_GATED"
GATE = "bj:test:gate"

if os.environ.get(GATED) == "1":
    _replay_batch = bulk_jobs._replay

    def _gated_replay(*args: Any) -> str:
        last_error = _replay_batch(*args)
        redis_for(__name__).blpop([GATE])
        return last_error

    bulk_jobs._replay = _gated_replay


@client.create_function(fn_id="drain", trigger=fanout.TriggerEvent(event="bj/drain"))
def drain(ctx: fanout.ContextSync) -> str:
    return "ran"


@client.create_function(fn_id="keep", trigger=fanout.TriggerEvent(event="bj/keep"))
def keep(ctx: fanout.ContextSync) -> str:
    return "ran"


@client.create_function(fn_id="again", trigger=fanout.TriggerEvent(event="bj/again"))
def again(ctx: fanout.ContextSync) -> str:
    return str(ctx.step.run("work", lambda: "done"))


@client.create_function(fn_id="cli", trigger=fanout.TriggerEvent(event="bj/cli"))
def cli_fn(ctx: fanout.ContextSync) -> str:
    return "ran"


def history() -> History:
    return History(client._rt.store)


def key(fn_id: str) -> str:
    return f"bj:{fn_id}"


def paused_worker(*fn_ids: str, log_dir: Path, name: str = "w1",
                  env: dict[str, str] | None = None) -> Worker:
    """A worker started after ``fn_ids`` were paused: it parks every pass of theirs (a
    pause made while a worker runs reaches its processes within a second or so, and a
    pass arriving before that runs)."""
    for fn_id in fn_ids:
        client.pause(fn_id)
    return Worker(MOD, log_dir=log_dir, name=name, env=env)


def parked(fn_id: str, n: int) -> None:
    """``n`` runs of a paused function (:func:`paused_worker`): created, queued and
    their first passes parked (no message of theirs left for a later test)."""
    assert client.is_paused(fn_id)
    for start in range(0, n, 200):
        client.send_sync([fanout.Event(name=f"bj/{fn_id}", data={"i": i})
                          for i in range(start, min(n, start + 200))])
    wait_for(lambda: history().count_runs(key(fn_id), status="active") == n, 120)
    # The function's listing of all runs is written just after the active set (the
    # store's second round trip): wait for it too.
    wait_for(lambda: history().count_runs(key(fn_id)) == n, 120)
    wait_for(lambda: (info := client._rt.paused.info(key(fn_id))) is not None
             and info.parked == n, 120)


def finished(job_id: str, timeout: float = 180) -> fanout.BulkJob:
    job: fanout.BulkJob = wait_for(
        lambda: (j if (j := client.bulk_job(job_id)) is not None and j.finished else None),
        timeout, interval=0.2)
    return job


def all_runs(fn_id: str) -> list[dict[str, str]]:
    store = client._rt.store
    ids = [m.decode() for m in store.r.zrange(store.keys.fn_index(key(fn_id)), 0, -1)]
    pipe = store.r.pipeline(transaction=False)
    for rid in ids:
        pipe.hmget(store.keys.run(rid), ["st", "replay_of", "err"])
    return [{"id": rid, "st": (v[0] or b"").decode(), "replay_of": (v[1] or b"").decode(),
             "err": (v[2] or b"").decode()} for rid, v in zip(ids, pipe.execute(), strict=True)]


@pytest.fixture
def workers(clean_db: Any, log_dir: Path) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for w in started:
        w.stop()


def test_a_job_over_1200_runs_cancels_exactly_the_matching_ones(
        workers: list[Worker], log_dir: Path) -> None:
    workers.append(paused_worker("drain", "keep", log_dir=log_dir))
    parked("drain", N)
    parked("keep", 30)

    dry = client.bulk_cancel("drain", dry_run=True)
    assert (dry.id, dry.state, dry.total, len(dry.sample)) == ("", "dry-run", N, 10)
    job = client.bulk_cancel("drain", reason="bad deploy", by="alice")
    assert (job.total, job.batch, job.state) == (N, 500, "queued")  # 3 batches
    done = finished(job.id)
    assert (done.state, done.done, done.failed, done.skipped, done.cursor) == \
        ("done", N, 0, 0, N)
    assert done.done == dry.total
    runs = all_runs("drain")
    assert len(runs) == N and {r["st"] for r in runs} == {"cancelled"}
    assert all("bad deploy (bulk job " in r["err"] for r in runs)
    # Not the others: the other function's runs are untouched.
    assert history().count_runs(key("keep"), status="active") == 30
    assert client.bulk_jobs()[0].id == job.id

    # Who and why, when it was asked for and when it ended.
    recs = [r for r in AuditLog(client._rt.store).recent(50) if job.id in r.detail]
    by_action = {r.action: r for r in recs}
    asked, ended = by_action["bulk cancel"], by_action["bulk cancel done"]
    assert (asked.who, asked.role, asked.client) == ("alice", "python", "python")
    assert "bad deploy" in asked.detail and f"{N} run(s) matching fn=bj:drain" in asked.detail
    assert asked.extra["total"] == N and f"bulk:{job.id}" in asked.targets
    assert ended.who == "alice" and ended.extra["done"] == N
    # Three batches, each naming the runs it cancelled: a run's own records show it.
    batches = [r for r in recs if r.action == "bulk cancel batch"]
    assert sorted(r.extra["done"] for r in batches) == [200, 500, 500]
    assert AuditLog(client._rt.store).about(runs[0]["id"])[0].action == "bulk cancel batch"

    # A second job over the same query finds nothing left to cancel.
    assert client.bulk_cancel("drain", dry_run=True).total == 0
    empty = client.bulk_cancel("drain", by="alice")
    assert (empty.total, empty.state) == (0, "done")
    client.resume("keep")
    client.resume("drain")
    wait_for(lambda: history().count_runs(key("keep"), status="completed") == 30, 60)


def test_a_worker_killed_mid_job_replays_every_run_once(
        workers: list[Worker], log_dir: Path) -> None:
    gate = redis_for(MOD)
    gate.delete(GATE)
    w1 = paused_worker("again", log_dir=log_dir, env={GATED: "1"})
    workers.append(w1)
    parked("again", N)
    setup = finished(client.bulk_cancel("again", by="setup").id)
    assert setup.done == N
    client.resume("again")
    originals = [r["id"] for r in all_runs("again")]

    dry = client.bulk_replay("again", status="cancelled", dry_run=True)
    assert dry.total == N
    job = client.bulk_replay("again", status="cancelled", reason="retry after fix",
                             by="bob", batch=100)

    gate.rpush(GATE, "go", "go")  # two batches count; the third waits, replays started

    def mid_batch() -> bool:
        # Two batches counted, and the third's replays started: a batch under way.
        j = client.bulk_job(job.id)
        started = history().count_runs(key("again")) - N
        return j is not None and j.done == 200 and started == 300

    wait_for(mid_batch, 120, interval=0.01)
    w1.kill()
    at_kill = client.bulk_job(job.id)
    assert at_kill is not None and (at_kill.state, at_kill.done) == ("running", 200)
    replays_at_kill = sum(1 for r in all_runs("again") if r["replay_of"])
    assert replays_at_kill == 300  # killed mid-batch: that batch is redone

    w2 = Worker(MOD, log_dir=log_dir, name="w2")
    workers.append(w2)
    done = finished(job.id)
    # The killed worker's message waits for the broker's visibility timeout: the new
    # worker sent the unfinished job again when it started.
    assert "resumed 1 unfinished bulk job(s)" in w2.log()
    assert (done.state, done.done, done.failed, done.skipped) == ("done", N, 0, 0)
    assert done.done == dry.total
    replays = [r for r in all_runs("again") if r["replay_of"]]
    counts = Counter(r["replay_of"] for r in replays)
    assert len(replays) == N and set(counts) == set(originals)  # none missed
    assert max(counts.values()) == 1  # none replayed twice
    assert {r["id"] for r in replays} == {replay_id(job.id, o) for o in originals}
    wait_for(lambda: history().count_runs(key("again"), status="completed") == N, 180)
    print(f"\nkilled at done={at_kill.done} cursor={at_kill.cursor}, "
          f"replays started by then: {replays_at_kill}")


def cli(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("FANOUT_OPERATOR", None)
    res = subprocess.run([sys.executable, "-m", "fanout._cli", "-A", MOD, *args], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == code, (res.stdout, res.stderr)
    return res


def test_cli_counts_follows_detaches_and_lists_jobs(
        workers: list[Worker], log_dir: Path) -> None:
    workers.append(paused_worker("cli", log_dir=log_dir))
    parked("cli", 40)
    dry = cli("cancel", "--fn", "cli", "--dry-run")
    assert "40 run(s) match fn=bj:cli status=active\nwould cancel 40 run(s)" in dry.stdout
    assert client.bulk_jobs() == [] or all(j.query.fn_key != "bj:cli"
                                           for j in client.bulk_jobs())

    res = cli("cancel", "--fn", "cli", "--as", "carol", "--reason", "drain", "--batch", "15")
    assert "40 run(s) match fn=bj:cli status=active: bulk cancel job " in res.stderr
    assert "cancel [" in res.stderr and "40/40" in res.stderr  # the progress bar
    assert res.stdout.strip() == "cancel: 40 of 40 run(s)"
    job = client.bulk_jobs()[0]
    assert (job.who, job.reason, job.done, job.batch) == ("carol", "drain", 40, 15)
    asked = next(r for r in AuditLog(client._rt.store).recent(20)
                 if r.action == "bulk cancel" and job.id in r.detail)
    assert (asked.who, asked.role, asked.client) == ("carol", "cli", "cli")

    client.resume("cli")
    detached = json.loads(cli("replay", "--fn", "cli", "--status", "cancelled", "--detach",
                              "--json").stdout)["job"]
    assert detached["total"] == 40 and detached["kind"] == "replay"
    shown = json.loads(cli("job", detached["id"], "--follow", "--json").stdout)["job"]
    assert (shown["state"], shown["done"]) == ("done", 40)
    assert detached["id"] in cli("job", detached["id"]).stdout
    listed = json.loads(cli("jobs", "--json").stdout)["jobs"]
    assert [j["id"] for j in listed][:2] == [detached["id"], job.id]
    assert "already" in cli("job", detached["id"], "--cancel", code=1).stderr
    assert "needs run ids or a filter" in cli("replay", code=2).stderr
    assert "unknown run status" in cli("cancel", "--status", "nope", code=2).stderr
    # A replay of the same runs again: each event has a newer run now, all skipped.
    again = cli("replay", "--fn", "cli", "--status", "cancelled")
    assert again.stdout.strip() == "replay: 0 of 40 run(s), 40 skipped"
    wait_for(lambda: history().count_runs(key("cli"), status="active") == 0, 60)


def test_a_cancelled_job_stops_after_its_batch(workers: list[Worker], log_dir: Path) -> None:
    client.pause("keep")
    client.send_sync([fanout.Event(name="bj/keep", data={"i": i}) for i in range(20)])
    job = client.bulk_replay("keep", status="completed", batch=5, by="dave")
    assert job.total == 30  # the runs of the first test
    stopped = client.cancel_bulk_job(job.id)
    assert stopped is not None and stopped.state == "cancelled"
    workers.append(Worker(MOD, log_dir=log_dir))
    # The worker starts, finds the job cancelled: nothing is replayed.
    wait_for(lambda: history().count_runs(key("keep"), status="active") == 20, 60)
    after = client.bulk_job(job.id)
    assert after is not None and after.state == "cancelled" and after.done == 0
    assert not [r for r in all_runs("keep") if r["replay_of"]]
    client.resume("keep")
    wait_for(lambda: history().count_runs(key("keep"), status="active") == 0, 60)
