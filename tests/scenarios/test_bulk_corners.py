"""Bulk jobs at their edges, with real ``celery worker`` subprocesses: a job cancelled
while it runs stops after the batch under way (the runs it handled stay handled, the
rest are left alone, the stop is audited); the CLI exits 1 with a line naming what
failed when a replay job could not replay some runs (and 0 when the replays merely
fail later: it does not wait for them); ``--search data.x=V`` acts on exactly the
matching runs, its dry-run count first; runs created while a job runs are not part of
it (the job acts on the runs that matched when it was submitted).

Nothing here races the worker: a function is paused before the worker that parks its
runs starts (a worker process reads the paused set when it starts, then once a
second), and a job "while it runs" is held at a gate the test opens, a batch at a
time (:data:`GATED`), not caught by a signal sent after a poll."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fanout
from fanout._celery import bulk_jobs
from fanout._core.ids import run_id_for
from fanout._redis.audit import AuditLog
from fanout._redis.history import History
from tests.support import ROOT, Worker, make_app, redis_for, wait_for

MOD = __name__
app, client = make_app(__name__, app_id="bc")
#: A worker started with this set does not declare ``gone`` (a function removed by a
#: deploy): a replay of its runs fails on that worker.
WITHOUT_GONE = "BC_WITHOUT_GONE"
#: A worker started with this set holds each batch of a bulk cancel, its runs
#: cancelled, before it counts: until the test pushes a token onto :data:`GATE` (one
#: batch each), or sets :data:`GATE_OPEN` (every batch from then on).
GATED = "BC_GATED"
GATE, GATE_OPEN = "bc:test:gate", "bc:test:gate:open"


def _wait_at_gate() -> None:
    r = redis_for(__name__)
    while not r.exists(GATE_OPEN):
        if r.blpop([GATE], timeout=1):
            return


if os.environ.get(GATED) == "1":
    _cancel_batch = bulk_jobs._cancel

    def _gated_cancel(*args: Any) -> str:
        last_error = _cancel_batch(*args)
        _wait_at_gate()
        return last_error

    bulk_jobs._cancel = _gated_cancel


@client.create_function(fn_id="hold", trigger=fanout.TriggerEvent(event="bc/hold"))
def hold(ctx: fanout.ContextSync) -> str:
    return "ran"


@client.create_function(fn_id="grow", trigger=fanout.TriggerEvent(event="bc/grow"))
def grow(ctx: fanout.ContextSync) -> str:
    return "ran"


@client.create_function(fn_id="find", trigger=fanout.TriggerEvent(event="bc/find"),
                        search=["data.x"])
def find(ctx: fanout.ContextSync) -> str:
    return "ran"


@client.create_function(fn_id="near", trigger=fanout.TriggerEvent(event="bc/find"),
                        search=["data.x"])
def near(ctx: fanout.ContextSync) -> str:
    return "ran"


@client.create_function(fn_id="kept", trigger=fanout.TriggerEvent(event="bc/kept"))
def kept(ctx: fanout.ContextSync) -> str:
    return "ran"


@client.create_function(fn_id="flop", trigger=fanout.TriggerEvent(event="bc/flop"), retries=0)
def flop(ctx: fanout.ContextSync) -> None:
    raise fanout.NonRetriableError("always fails")


if os.environ.get(WITHOUT_GONE) != "1":
    @client.create_function(fn_id="gone", trigger=fanout.TriggerEvent(event="bc/gone"))
    def gone(ctx: fanout.ContextSync) -> str:
        return "ran"


def history() -> History:
    return History(client._rt.store)


def key(fn_id: str) -> str:
    return f"bc:{fn_id}"


def paused_worker(*fn_ids: str, env: dict[str, str] | None = None,
                  log_dir: Path) -> Worker:
    """A worker started after ``fn_ids`` were paused: it parks every pass of theirs (a
    pause made while a worker runs reaches its processes within a second or so, and a
    pass arriving before that runs)."""
    for fn_id in fn_ids:
        client.pause(fn_id)
    return Worker(MOD, log_dir=log_dir, env=env)


def parked(fn_id: str, n: int) -> None:
    """``n`` runs of a paused function (:func:`paused_worker`): created, queued, parked."""
    client.send_sync([fanout.Event(name=f"bc/{fn_id}", data={"i": i}) for i in range(n)])
    wait_parked(fn_id, n)


def wait_parked(fn_id: str, n: int) -> None:
    """Wait until the paused function ``fn_id`` has ``n`` runs, all queued, and their
    first passes parked (no message of theirs left for a later test)."""
    assert client.is_paused(fn_id)
    wait_for(lambda: history().count_runs(key(fn_id), status="active") == n, 120)
    # The function's listing of all runs is written just after the active set (the
    # store's second round trip): wait for it too.
    wait_for(lambda: history().count_runs(key(fn_id)) == n, 120)
    wait_for(lambda: (info := client._rt.paused.info(key(fn_id))) is not None
             and info.parked == n, 120)


def finished(job_id: str, timeout: float = 180) -> fanout.BulkJob:
    job: fanout.BulkJob = wait_for(
        lambda: (j if (j := client.bulk_job(job_id)) is not None and j.finished else None),
        timeout, interval=0.1)
    return job


def statuses(fn_id: str) -> dict[str, str]:
    """Every run of ``fn_id``: its status, by run id."""
    runs = client.list_runs(fn_id=fn_id, limit=5000)
    assert runs.next_cursor is None
    return {r.run_id: r.status for r in runs}


def gate() -> Any:
    """The gate of a :data:`GATED` worker, shut."""
    r = redis_for(MOD)
    r.delete(GATE, GATE_OPEN)
    return r


def held(job_id: str, fn_id: str, counted: int, batch: int) -> fanout.BulkJob:
    """Wait until ``counted`` runs of the job are counted and the next batch, its runs
    cancelled, waits at the gate; returns the job then."""
    wait_for(lambda: history().count_runs(key(fn_id), status="cancelled") == counted + batch
             and (j := client.bulk_job(job_id)) is not None and j.processed == counted,
             120, interval=0.01)
    job = client.bulk_job(job_id)
    assert job is not None
    return job


def cli(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("FANOUT_OPERATOR", None)
    res = subprocess.run([sys.executable, "-m", "fanout._cli", "-A", MOD, *args], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=180)
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    return res


@pytest.fixture
def workers(clean_db: Any, log_dir: Path) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for w in started:
        w.stop()


def test_a_job_cancelled_while_it_runs_stops_after_its_batch(
        workers: list[Worker], log_dir: Path) -> None:
    g = gate()
    w = paused_worker("hold", env={GATED: "1"}, log_dir=log_dir)
    workers.append(w)
    total = 300
    parked("hold", total)
    job = client.bulk_cancel("hold", batch=5, by="erin", reason="drain hold")
    g.rpush(GATE, *["go"] * 4)  # four batches count; the fifth waits, its runs cancelled
    at_cancel = held(job.id, "hold", 20, job.batch)
    assert (at_cancel.state, at_cancel.processed, at_cancel.cursor) == ("running", 20, 20)

    stopped = client.cancel_bulk_job(job.id, reason="wrong filter", by="erin")
    assert stopped is not None and stopped.state == "cancelled" and stopped.ended_at
    again = client.cancel_bulk_job(job.id, reason="twice", by="erin")  # changes nothing
    assert again is not None and again.state == "cancelled"
    assert client.cancel_bulk_job("no-such-job") is None
    g.rpush(GATE, "go")  # the batch under way finishes and counts
    wait_for(lambda: client.bulk_job(job.id).processed > 20, 60)  # type: ignore[union-attr]
    w.stop()

    final = client.bulk_job(job.id)
    assert final is not None and final.state == "cancelled"
    # The batch under way counted after the cancel; no other batch started.
    assert final.processed == at_cancel.processed + job.batch
    assert final.done == final.processed and final.cursor == final.processed
    runs = statuses("hold")
    cancelled = [rid for rid, st in runs.items() if st == "cancelled"]
    # The runs it handled stay cancelled; the rest are untouched, still queued.
    assert len(cancelled) == final.done
    assert sorted(runs.values()).count("queued") == total - final.done
    store = client._rt.store
    assert all(f"drain hold (bulk job {job.id})" in (f.get("err") or "")
               for f in store.many_run_fields(cancelled))

    # Who stopped it and why: one record (the second call changed nothing).
    recs = [r for r in AuditLog(client._rt.store).recent(200)
            if r.action == "bulk cancel cancelled" and f"bulk:{job.id}" in r.targets]
    assert len(recs) == 1
    assert (recs[0].who, recs[0].client) == ("erin", "python")
    assert "wrong filter" in recs[0].detail and f"of {total} run(s)" in recs[0].detail

    # The CLI shows it cancelled (exit 1: the job did not do all it was asked).
    shown = cli("job", job.id, code=1)
    assert "state     cancelled" in shown.stdout
    assert shown.stderr.strip() == (f"fanout job: error: bulk cancel job {job.id} was "
                                    f"cancelled after {final.processed} of {total} run(s)")
    assert "has ended already (cancelled)" in cli("job", job.id, "--cancel", code=1).stderr

    # From the CLI: a queued job (no worker now) stopped with who and why.
    queued = client.bulk_cancel("hold", by="erin")
    assert (queued.state, queued.total) == ("queued", total - final.done)
    res = cli("job", queued.id, "--cancel", "--as", "frank", "--reason", "not now")
    assert "state     cancelled" in res.stdout and "cancelled: the batch under way" in res.stderr
    rec = next(r for r in AuditLog(client._rt.store).recent(50)
               if r.action == "bulk cancel cancelled" and f"bulk:{queued.id}" in r.targets)
    assert (rec.who, rec.role, rec.client) == ("frank", "cli", "cli")
    assert "not now" in rec.detail
    # Clean up (in this process): the queued runs left are cancelled.
    assert client.cancel_runs("hold", by="test") == total - final.done


def test_runs_created_while_a_job_runs_are_not_part_of_it(
        workers: list[Worker], log_dir: Path) -> None:
    g = gate()
    workers.append(paused_worker("grow", env={GATED: "1"}, log_dir=log_dir))
    total = 200
    parked("grow", total)
    originals = set(statuses("grow"))
    job = client.bulk_cancel("grow", batch=5, by="gina")
    assert job.total == total
    g.rpush(GATE, "go", "go")  # two batches count; the third waits, its runs cancelled
    mid = held(job.id, "grow", 10, job.batch)
    assert (mid.state, mid.cursor) == ("running", 10)
    # Three new runs that match the job's filter (fn=grow, active), made now.
    new = {client.replay(rid) for rid in sorted(originals)[:3]}
    assert len(new) == 3 and not new & originals
    # The filter's count now includes them; the job's does not change.
    now = statuses("grow")
    assert client.bulk_cancel("grow", dry_run=True).total == \
        sum(st == "queued" for st in now.values())
    assert {now[rid] for rid in new} == {"queued"}
    assert client.bulk_job(job.id).total == total  # type: ignore[union-attr]
    g.set(GATE_OPEN, "1")
    g.rpush(GATE, "go")

    done = finished(job.id)
    # The job's total and work are the runs counted when it was submitted.
    assert (done.state, done.total, done.done, done.skipped, done.failed) == \
        ("done", total, total, 0, 0)
    runs = statuses("grow")
    assert {rid for rid, st in runs.items() if st == "cancelled"} == originals
    assert {runs[rid] for rid in new} == {"queued"}  # created after the count: untouched
    # A new job over the same filter finds exactly them.
    after = client.bulk_cancel("grow", dry_run=True)
    assert after.total == 3 and set(after.sample) == new
    assert client.cancel_runs("grow", by="test") == 3


def test_search_attributes_select_exactly_the_matching_runs(
        workers: list[Worker], log_dir: Path) -> None:
    # The same events start runs of another function, ``near``.
    workers.append(paused_worker("find", "near", log_dir=log_dir))
    # data.x=2 matches the value's text: 2, 2.0 and "2"; not 20, 12, 2.5, 3 or none.
    xs: list[Any] = [2, 2, 20, 12, 2.0, "2", 3, None, 2.5, 2]
    events = [fanout.Event(name="bc/find", data={"i": i} if x is None else {"i": i, "x": x})
              for i, x in enumerate(xs)]
    ids = client.send_sync(events)
    wait_parked("find", len(xs))
    wait_parked("near", len(xs))
    want = {run_id_for(eid, key("find")) for eid, x in zip(ids, xs, strict=True)
            if x in (2, "2")}
    assert len(want) == 5 and want <= set(statuses("find"))

    dry = json.loads(cli("cancel", "--fn", "find", "--search", "data.x=2", "--dry-run",
                         "--json").stdout)
    assert (dry["matched"], dry["count"], dry["complete"]) == (5, 5, True)
    assert set(dry["run_ids"]) == want
    text = cli("cancel", "--fn", "find", "--search", "data.x=2", "--dry-run").stdout
    assert text.startswith("5 run(s) match fn=bc:find status=active data.x=2\n"
                           "would cancel 5 run(s)")

    res = cli("cancel", "--fn", "find", "--search", "data.x=2", "--as", "hana",
              "--reason", "x=2 was a bad batch")
    assert res.stdout.strip() == "cancel: 5 of 5 run(s)"
    runs = statuses("find")
    assert {rid for rid, st in runs.items() if st == "cancelled"} == want
    assert sum(st == "queued" for st in runs.values()) == len(xs) - 5
    assert set(statuses("near").values()) == {"queued"}  # another function: untouched
    # Nothing left to match; a neighbouring value still matches its own runs.
    assert json.loads(cli("cancel", "--fn", "find", "--search", 'data.x="2"', "--dry-run",
                          "--json").stdout)["matched"] == 0
    assert json.loads(cli("cancel", "--fn", "find", "--search", "data.x=2.5", "--dry-run",
                          "--json").stdout)["matched"] == 1
    assert "cannot search for" in cli("cancel", "--search", "x", code=2).stderr
    # A path no function declares would match nothing: a usage error, not "0 runs".
    err = cli("cancel", "--fn", "find", "--search", "data.y=1", "--dry-run", code=2).stderr
    assert "search attribute 'data.y' is not declared by function bc:find" in err
    with pytest.raises(fanout.ConfigError, match="not declared by any function here"):
        client.bulk_replay(search={"output.x": 1})
    assert client.cancel_runs("find", by="test") == len(xs) - 5
    assert client.cancel_runs("near", by="test") == len(xs)


def test_cli_exit_code_when_a_replay_job_fails_some_runs(
        workers: list[Worker], log_dir: Path) -> None:
    w1 = Worker(MOD, log_dir=log_dir, name="w1")
    workers.append(w1)
    client.send_sync([fanout.Event(name="bc/kept", data={"i": i}) for i in range(3)]
                     + [fanout.Event(name="bc/gone", data={"i": i}) for i in range(2)]
                     + [fanout.Event(name="bc/flop", data={"i": i}) for i in range(2)])
    wait_for(lambda: history().count_runs(key("kept"), status="completed") == 3
             and history().count_runs(key("gone"), status="completed") == 2
             and history().count_runs(key("flop"), status="failed") == 2, 120)
    w1.stop()
    # A deploy removed ``gone``: the new worker does not declare it.
    w2 = Worker(MOD, log_dir=log_dir, name="w2", env={WITHOUT_GONE: "1"})
    workers.append(w2)

    dry = cli("replay", "--status", "completed", "--dry-run")
    assert dry.stdout.startswith("5 run(s) match status=completed\nwould replay 5 run(s)")
    res = cli("replay", "--status", "completed", "--as", "ivan", code=1)
    gone_runs = set(statuses("gone"))
    summary = res.stdout.strip()
    assert summary.startswith("replay: 3 of 5 run(s), 2 failed (last: ")
    assert summary.endswith("function bc:gone is not declared on this worker)")
    assert any(rid in summary for rid in gone_runs)
    error = res.stderr.strip().splitlines()[-1]
    assert error.startswith("fanout replay: error: bulk replay job ") and \
        "2 of 5 run(s) failed (last: " in error
    job = client.bulk_jobs()[0]
    assert (job.state, job.done, job.failed, job.who) == ("done", 3, 2, "ivan")
    # The job's own items, not the outcome of the runs it started: replays of failing
    # runs are started (exit 0) and fail later, on their own.
    ok = cli("replay", "--fn", "flop", "--status", "failed")
    assert ok.stdout.strip() == "replay: 2 of 2 run(s)"
    wait_for(lambda: history().count_runs(key("kept"), status="completed") == 6
             and history().count_runs(key("flop"), status="failed") == 4, 120)
