"""``fanout cancel`` / ``fanout replay`` with filters: a bulk job run on the workers in
batches (``fanout/_celery/bulk_jobs.py``), its count first, then its progress; and
``fanout jobs`` / ``fanout job ID [--cancel]``."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from .._celery import bulk_jobs
from .._core.search import parse_term
from .._errors import FanoutError
from .._ops.locate import Target
from .._ops.render import Progress, table
from .._redis.audit import operator_name
from .._redis.bulk_store import BulkJob, BulkQuery, BulkStore
from .._redis.history import MAX_LIMIT, RunSummary, iso
from .common import EXIT_ERROR, EXIT_USAGE, CliError, find_target, note, out

POLL_S = 0.5


def query_of(target: Target, args: argparse.Namespace, kind: str) -> BulkQuery:
    if not (args.fn or args.status or args.since or args.until or args.version or args.search
            or args.event_name is not None):
        raise CliError(f"{kind} needs run ids or a filter (--fn, --status, --since, --until, "
                       "--version, --search, --event-name)", EXIT_USAGE)
    if "paused" in [s.strip() for s in (args.status or "").split(",")]:
        raise CliError("--status paused is a view, not a status a job can select: use "
                       "--fn F --status queued for the runs a paused function holds",
                       EXIT_USAGE)
    try:
        search = dict(parse_term(term) for term in args.search or ())
        from .._redis.history import statuses

        statuses(args.status)
    except FanoutError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    return BulkQuery(fn_key=target.function(args.fn).key if args.fn else None,
                     status=args.status or ("active" if kind == "cancel" else None),
                     since=args.since, until=args.until, version=args.version or None,
                     search=search, include_replays=bool(getattr(args, "include_replays", False)),
                     event_name=args.event_name)


def _listed(target: Target, q: BulkQuery, limit: int) -> list[RunSummary]:
    runs: list[RunSummary] = []
    cursor: str | None = None
    while len(runs) < limit:
        page = target.history.runs(fn_key=q.fn_key, status=q.status, since=q.since,
                                   until=q.until, version=q.version, search=q.search or None,
                                   event_name=q.event_name,
                                   limit=min(MAX_LIMIT, limit - len(runs)), cursor=cursor)
        runs.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    return runs


def dry_run(target: Target, args: argparse.Namespace, kind: str, q: BulkQuery,
            matched: int) -> int:
    """The exact count, and the runs themselves (at most --limit): for a replay, those
    it would replay and those it would skip."""
    runs = _listed(target, q, args.limit)
    skipped: dict[str, Any] | None = None
    ids = [r.run_id for r in runs]
    if kind == "replay":
        from .._ops.bulk import plan_replays

        plan = plan_replays(target.history, runs, include_replays=q.include_replays)
        ids = [r.run_id for r in plan.chosen]
        skipped = {"count": plan.skipped, "replays": plan.replays,
                   "superseded": plan.superseded}
    extra = ""
    if skipped and skipped["count"]:
        extra = (f" ({skipped['count']} matching run(s) skipped: {len(skipped['replays'])} "
                 f"replay(s) or rerun(s), {len(skipped['superseded'])} with a newer run "
                 "of the same event)")
    partial = len(runs) < matched
    if partial:
        extra += f"; listed the first {len(runs)} of {matched} (--limit)"
    out(args, {"would": kind, "matched": matched, "count": len(ids), "run_ids": ids,
               "complete": not partial, **({"skipped": skipped} if skipped is not None else {})},
        f"{matched} run(s) match {q.describe()}\nwould {kind} {len(ids)} run(s){extra}"
        + "".join(f"\n{r}" for r in ids))
    return 0


def submit(target: Target, args: argparse.Namespace, kind: str) -> int:
    """With filters: count, then (unless --dry-run) a job on the workers, followed
    until it ends (or its id at once with --detach)."""
    q = query_of(target, args, kind)
    who = (getattr(args, "operator", None) or "").strip()[:100] or operator_name("cli")
    reason = getattr(args, "reason", "") or ""
    rt = target.runtime
    try:
        counted = bulk_jobs.submit(rt, kind, q, who=who, reason=reason, client="cli",
                                   dry_run=True)
    except FanoutError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    if args.dry_run:
        return dry_run(target, args, kind, q, counted.total)
    job = bulk_jobs.submit(rt, kind, q, who=who, reason=reason, client="cli",
                           batch=args.batch)
    if not args.json:
        note(f"{job.total} run(s) match {q.describe()}: bulk {kind} job {job.id}")
    if args.detach or not job.total:
        out(args, {"job": job.to_json()}, job.id if job.total else f"no runs match "
            f"{q.describe()}")
        return 0
    if not args.json:
        note(f"following job {job.id} (Ctrl-C stops following, not the job; "
             f"'fanout job {job.id}' shows it)")
    return follow(target, args, job)


def follow(target: Target, args: argparse.Namespace, job: BulkJob,
           sleep: Callable[[float], None] = time.sleep) -> int:
    """Redraw the progress bar until the job ends; the summary, and its exit code."""
    store = BulkStore(target.runtime.store)
    progress = None if args.json else Progress(job.total, job.kind)
    while True:
        now = store.get(job.id)
        if now is None:
            raise CliError(f"bulk job {job.id} is gone (past its retention)")
        job = now
        if progress is not None and job.processed != progress.done:
            progress.update(job.processed, job.failed)
        if job.finished:
            break
        sleep(POLL_S)
    out(args, {"job": job.to_json()}, summary(job))
    code = exit_code(job)
    if code and not args.json:
        note(f"fanout {args.command}: error: {failure(job)}")
    return code


def summary(job: BulkJob) -> str:
    text = (f"{job.kind}: {job.done} of {job.total} run(s)"
            + (f", {job.skipped} skipped" if job.skipped else "")
            + (f", {job.failed} failed (last: {job.last_error})" if job.failed else ""))
    return text + (" (the job was cancelled)" if job.state == "cancelled" else "")


def exit_code(job: BulkJob) -> int:
    """1 when the job could not act on some of its runs (``failed``: for a replay, a run
    it could not start) or was cancelled; the runs a replay started are not waited for."""
    return EXIT_ERROR if job.failed or job.state == "cancelled" else 0


def failure(job: BulkJob) -> str:
    """Why :func:`exit_code` is 1, in one line."""
    what = f"bulk {job.kind} job {job.id}"
    if job.failed:
        return (f"{what}: {job.failed} of {job.total} run(s) failed (last: {job.last_error})"
                + ("; the job was cancelled" if job.state == "cancelled" else ""))
    return f"{what} was cancelled after {job.processed} of {job.total} run(s)"


def describe(job: BulkJob) -> str:
    rows = [("job", job.id), ("kind", job.kind), ("state", job.state),
            ("query", job.query.describe()), ("who", job.who), ("reason", job.reason or "-"),
            ("progress", f"{job.processed}/{job.total} (done {job.done}, skipped "
                         f"{job.skipped}, failed {job.failed})"),
            ("created", iso(job.created_at)), ("ended", iso(job.ended_at) or "-")]
    if job.last_error:
        rows.append(("last error", job.last_error))
    return "\n".join(f"{k:<9} {v}" for k, v in rows)


def cmd_jobs(args: argparse.Namespace) -> int:
    jobs = BulkStore(find_target(args).runtime.store).jobs(args.limit)
    out(args, {"jobs": [j.to_json() for j in jobs]},
        table(["JOB", "KIND", "STATE", "DONE", "SKIPPED", "FAILED", "TOTAL", "CREATED", "WHO"],
              [[j.id, j.kind, j.state, str(j.done), str(j.skipped), str(j.failed),
                str(j.total), iso(j.created_at), j.who] for j in jobs])
        if jobs else "no bulk jobs")
    return 0


def cmd_job(args: argparse.Namespace) -> int:
    target = find_target(args)
    store = BulkStore(target.runtime.store)
    job = store.get(args.job_id)
    if job is None:
        raise CliError(f"no bulk job {args.job_id!r} (unknown, or past its retention)")
    if args.cancel:
        if job.finished:
            raise CliError(f"bulk job {job.id} has ended already ({job.state})")
        who = (getattr(args, "operator", None) or "").strip()[:100] or operator_name("cli")
        now, stopped = bulk_jobs.cancel(target.runtime, job.id, who=who, reason=args.reason,
                                        client="cli")
        if now is None or not stopped:  # ended (or gone) since it was read above
            raise CliError(f"bulk job {job.id} has ended already "
                           f"({now.state if now else 'past its retention'})")
        job = now
        if not args.json:
            note(f"bulk job {job.id} cancelled: the batch under way finishes, no other starts")
        out(args, {"job": job.to_json()}, describe(job))
        return 0
    if args.follow and not job.finished:
        return follow(target, args, job)
    out(args, {"job": job.to_json()}, describe(job))
    code = exit_code(job) if job.finished else 0
    if code and not args.json:
        note(f"fanout {args.command}: error: {failure(job)}")
    return code


def add_bulk_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--version", metavar="V", help="runs created on function version V, or "
                   "with a pass that ran on it")
    p.add_argument("--search", action="append", metavar="PATH=VALUE",
                   help="runs whose declared search attribute has VALUE (repeatable)")
    p.add_argument("--event-name", metavar="NAME", help="runs started by an event of this "
                   "name (a batch run: by any of its events)")
    p.add_argument("--detach", action="store_true", help="with filters: print the job id "
                   "at once instead of following its progress")
    p.add_argument("--batch", type=int, default=bulk_jobs.DEFAULT_BATCH, metavar="N",
                   help=f"with filters: runs per batch on the workers "
                   f"({bulk_jobs.DEFAULT_BATCH})")


def add_job_commands(add: Callable[..., Any]) -> None:
    p = add("jobs", cmd_jobs, "list bulk cancel and replay jobs, newest first")
    p.add_argument("--limit", type=int, default=50)
    p = add("job", cmd_job, "show a bulk job and its progress")
    p.add_argument("job_id")
    p.add_argument("--cancel", action="store_true", help="stop the job after its current "
                   "batch (the runs it handled stay handled)")
    p.add_argument("--reason", default="", help="with --cancel: why, for the audit log")
    p.add_argument("-f", "--follow", action="store_true", help="follow it until it ends")
