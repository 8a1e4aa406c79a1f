"""Bulk jobs on the workers: cancel or replay every run a query matched, a batch at a
time (the record and its copy of the runs: ``fanout/_redis/bulk_store.py``).

:func:`submit` records the job and sends the first ``fanout.bulk`` message; each
message runs :func:`run_batch`: the batch at the job's cursor, its counts added and
the cursor moved only if nobody moved it meanwhile, then the next message. A batch
redone (a worker killed mid-batch, a message delivered twice) changes nothing twice:

* cancel is idempotent; a run this job cancelled already counts as done again (its
  cancel reason names the job);
* a replay's new run id is derived from (job, run), and a run is created once per id;
  the job's own replays do not make the run "superseded" when the batch is redone.

A message lost with a worker (Redis transport: redelivered only after the visibility
timeout) is made up for when a worker starts: every unfinished job is sent again; the
extra chain stops at its first batch that someone else counted.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from .._core.ids import _digest_id, new_token
from .._core.replay_plan import plan_replays
from .._core.run_record import ERROR, EVENT, REPLAY_OF, ST
from .._errors import ConfigError
from .._redis.audit import AuditLog
from .._redis.bulk_store import KINDS, BulkJob, BulkQuery, BulkStore
from .._redis.history import History
from .._redis.store import StoreError
from . import admission, endings
from .runtime import Runtime

log = logging.getLogger("fanout")

BULK_TASK = "fanout.bulk"
DEFAULT_BATCH = 500
MAX_BATCH = 5000
SAMPLE = 10


def replay_id(job_id: str, run_id: str) -> str:
    """The run a bulk job's replay of ``run_id`` creates: the same id however often the
    batch runs."""
    return _digest_id("bulk-replay", job_id, run_id)


def _tag(job_id: str) -> str:
    return f"(bulk job {job_id})"


def submit(rt: Runtime, kind: str, query: BulkQuery, *, who: str, reason: str,
           client: str, role: str = "", dry_run: bool = False,
           batch: int = DEFAULT_BATCH) -> BulkJob:
    """Count the runs ``query`` matches (exact, from the indexes); unless ``dry_run``,
    record the job with a copy of them, put it in the audit log and send its first
    batch. Bad input raises :class:`ConfigError` before anything is written."""
    if kind not in KINDS:
        raise ConfigError(f"unknown bulk action {kind!r}: use {' or '.join(KINDS)}")
    if not isinstance(batch, int) or not 1 <= batch <= MAX_BATCH:
        raise ConfigError(f"batch must be an integer from 1 to {MAX_BATCH}")
    if query.since is not None and query.until is not None and query.since > query.until:
        raise ConfigError("since is after until: no run can match")
    if query.event_name is not None and (not isinstance(query.event_name, str)
                                         or not query.event_name):
        raise ConfigError("event_name must be an event's name (a non-empty string)")
    _check_search(rt, query)
    history = History(rt.store)
    q = History.query(query.fn_key, query.status, query.version, query.search,
                      query.event_name)
    key = history.index.key_for(q, since=query.since, until=query.until)
    now = time.time()
    if dry_run:
        count = history.index.count(key, since=query.since, until=query.until)
        first = history.runs(fn_key=query.fn_key, status=query.status, since=query.since,
                             until=query.until, version=query.version,
                             search=query.search or None, event_name=query.event_name,
                             limit=SAMPLE)
        return BulkJob(id="", kind=kind, query=query, who=who, reason=reason, total=count,
                       state="dry-run", created_at=now, batch=batch,
                       sample=tuple(r.run_id for r in first.items))
    job = BulkJob(id=new_token(), kind=kind, query=query, who=who, reason=reason,
                  created_at=round(now, 3), batch=batch)
    job = BulkStore(rt.store).create(job, key, since=query.since, until=query.until,
                                     sample=SAMPLE)
    AuditLog(rt.store).record(
        who, role or client, f"bulk {kind}", [f"bulk:{job.id}", *([query.fn_key] if query.fn_key else [])],
        f"job {job.id}: {job.total} run(s) matching {query.describe()}"
        + (f": {reason}" if reason else ""), client=client,
        extra={"job": job.id, "query": query.to_json(), "total": job.total})
    if job.total:
        send(rt, job.id)
    return job


def _check_search(rt: Runtime, query: BulkQuery) -> None:
    """A job selects by search attributes from their indexes: a path no function here
    declares would match nothing, silently; say so instead."""
    declared = {path for fn in rt.functions.values()
                if query.fn_key is None or fn.key == query.fn_key for path in fn.search}
    for path in query.search:
        if path not in declared:
            where = f"function {query.fn_key}" if query.fn_key else "any function here"
            raise ConfigError(
                f"search attribute {path!r} is not declared by {where}: a bulk job "
                "selects runs by declared attributes only "
                f"(create_function(search=[{path!r}])); declared: "
                f"{', '.join(sorted(declared)) or 'none'}")


def cancel(rt: Runtime, job_id: str, *, who: str, reason: str, client: str,
           role: str = "") -> tuple[BulkJob | None, bool]:
    """Stop a job: the batch under way finishes and counts, no other starts; the runs
    handled so far stay as they are. Returns the job (None when unknown) and whether
    this call stopped it. The call that stops it goes into the audit log under ``who``
    with ``reason``; a job that had ended already is returned as it is, and nothing is
    recorded."""
    job, stopped = BulkStore(rt.store).stop(job_id)
    if job is not None and stopped:
        AuditLog(rt.store).record(
            who, role or client, f"bulk {job.kind} cancelled", [f"bulk:{job.id}"],
            f"job {job.id} stopped after {job.processed} of {job.total} run(s)"
            + (f": {reason}" if reason else ""), client=client,
            extra={"job": job.id, "processed": job.processed, "total": job.total})
    return job, stopped


def send(rt: Runtime, job_id: str) -> None:
    rt.publisher.send(BULK_TASK, (job_id,), argsrepr=repr((job_id,)))


def resend_unfinished(rt: Runtime) -> int:
    """Send every unfinished job again (a worker starting: a message may have died with
    a worker). Returns how many."""
    jobs = [j for j in BulkStore(rt.store).jobs(limit=1000) if not j.finished]
    for j in jobs:
        send(rt, j.id)
    return len(jobs)


def run_batch(rt: Runtime, job_id: str) -> bool:
    """Act on the batch at the job's cursor and count it; True when a next batch was
    sent."""
    bulk = BulkStore(rt.store)
    job = bulk.start(job_id)
    if job is None or job.finished:
        return False
    start = job.cursor
    ids = bulk.runs(job_id, start, job.batch)
    counts: dict[str, int] = {"done": 0, "failed": 0, "skipped": 0}
    acted: list[str] = []
    if job.kind == "cancel":
        last_error = _cancel(rt, job, ids, counts, acted)
    else:
        last_error = _replay(rt, job, ids, counts, acted)
    # No runs left to read (the copy gone with its retention): the job is over.
    end = start + len(ids) if ids else max(start, job.total)
    after, outcome = bulk.commit(job_id, start, end, last_error=last_error, **counts)
    if after is None or outcome == "stale":
        return False  # another delivery counted this batch: its chain goes on
    if acted:
        _record(rt, after, f"bulk {job.kind} batch", acted,
                f"job {job.id}: runs {start + 1} to {end} of {job.total}: "
                f"{counts['done']} done, {counts['skipped']} skipped, "
                f"{counts['failed']} failed", {"job": job.id, **counts})
    if outcome == "finished":
        _record(rt, after, f"bulk {job.kind} done", [],
                f"job {job.id}: {after.done} done, {after.failed} failed, "
                f"{after.skipped} skipped of {after.total}",
                {"job": job.id, "done": after.done, "failed": after.failed,
                 "skipped": after.skipped, "total": after.total})
        return False
    if after.finished or not ids:
        return False  # cancelled: it stops after this batch
    send(rt, job_id)
    return True


def _cancel(rt: Runtime, job: BulkJob, ids: list[str], counts: dict[str, int],
            acted: list[str]) -> str:
    reason = f"{job.reason or 'cancelled by a bulk job'} {_tag(job.id)}"
    last_error = ""
    for rid in ids:
        try:
            head = endings.cancel(rt, rid, reason)
        except StoreError:
            raise
        except Exception as exc:  # noqa: BLE001 - one run's failure is counted, the job goes on
            counts["failed"] += 1
            last_error = f"{rid}: {type(exc).__name__}: {exc}"
            continue
        if head in ("cancelled", "flagged") or (
                head == "ended" and _cancelled_by(rt, rid, job.id)):  # (a batch redone)
            counts["done"] += 1
            acted.append(rid)
        else:
            counts["skipped"] += 1
    return last_error


def _cancelled_by(rt: Runtime, run_id: str, job_id: str) -> bool:
    fields = rt.store.run_fields(run_id)
    return fields.get(ST) == "cancelled" and _tag(job_id) in (fields.get(ERROR) or "")


def _replay(rt: Runtime, job: BulkJob, ids: list[str], counts: dict[str, int],
            acted: list[str]) -> str:
    history = History(rt.store)
    found = history._summaries(ids)
    present = [s for s in found if s is not None]
    counts["skipped"] += len(ids) - len(present)  # past the retention since
    plan = plan_replays(history.runs_of_event, present,
                        include_replays=job.query.include_replays,
                        ignore={replay_id(job.id, rid) for rid in ids})
    counts["skipped"] += plan.skipped
    last_error = ""
    for run in plan.chosen:
        fn = rt.functions.get(run.fn_key)
        if fn is None:
            counts["failed"] += 1
            last_error = f"{run.run_id}: function {run.fn_key} is not declared on this worker"
            continue
        try:
            fields = rt.store.run_fields(run.run_id)
            event: Mapping[str, Any] = json.loads(fields.get(EVENT) or "{}")
            new_id = replay_id(job.id, run.run_id)
            admission.start_run(rt, fn, dict(event), run_id=new_id,
                                extra_fields={REPLAY_OF: run.run_id})
        except StoreError:
            raise
        except Exception as exc:  # noqa: BLE001 - one run's failure is counted, the job goes on
            counts["failed"] += 1
            last_error = f"{run.run_id}: {type(exc).__name__}: {exc}"
            continue
        counts["done"] += 1  # created now, or by an earlier delivery of this batch
        acted += [run.run_id, new_id]
    return last_error


def _record(rt: Runtime, job: BulkJob, action: str, targets: list[str], detail: str,
            extra: dict[str, Any]) -> None:
    """An audit record under the job's author: each batch names the runs it acted on
    (and, for a replay, the runs it started), so a run's page shows the job."""
    try:
        AuditLog(rt.store).record(job.who, "bulk job", action, [f"bulk:{job.id}", *targets],
                                  detail, client="worker", extra=extra)
    except StoreError:
        log.warning("fanout: bulk job %s: %s not recorded in the audit log", job.id, action)


__all__ = ["BULK_TASK", "cancel", "replay_id", "resend_unfinished", "run_batch", "submit"]
