"""The dashboard's actions (POST ``/actions/...``), each recorded in the audit log
with the token's name: cancel, replay, rerun, bulk cancel or replay, pause, resume,
send an event (also the "send the matching event" of a waiting run), invoke.

Only an operator reaches here (``app.DashboardApp.post`` checks the role and the
CSRF value first). Each returns where to go next and what to say there.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Protocol
from urllib.parse import quote

from .._errors import FanoutError
from .._ops.locate import Target
from .auth import Principal
from .web import HttpError, Request, local_path


class DashboardApp(Protocol):
    """What an action needs of the dashboard (``app.DashboardApp``)."""

    target: Target

    def record(self, req: Request, who: Principal, action: str, targets: Iterable[str],
               detail: str, **extra: Any) -> None: ...

MAX_BULK = 500


def _need(form: dict[str, str], name: str) -> str:
    value = form.get(name, "").strip()
    if not value:
        raise HttpError(400, f"missing form field {name!r}")
    return value


def perform(app: DashboardApp, req: Request, who: Principal, form: dict[str, str],
            run_ids: list[str]) -> tuple[str, str]:
    t = app.target
    path = req.path
    by = f"by {who.name}"

    def audit(action: str, targets: list[str], detail: str, **extra: object) -> None:
        app.record(req, who, action, targets, detail, **extra)

    if path == "/actions/cancel":
        rid = _need(form, "run_id")
        reason = (form.get("reason") or "cancelled from the dashboard").strip()
        head = t.cancel(rid, f"{reason} ({by})")
        audit("cancel", [rid], f"{reason}: {head}")
        text = {"cancelled": "Run cancelled.",
                "flagged": "Cancelling: the run stops after its running step.",
                "ended": "The run had already ended.", "missing": "No such run."}
        return f"/runs/{quote(rid)}", text.get(head, head)
    if path == "/actions/replay":
        rid = _need(form, "run_id")
        new = t.replay(rid)
        audit("replay", [rid, new], f"replayed {rid} as {new}", new_run=new)
        return f"/runs/{quote(new)}", f"Replay started: run {new}."
    if path == "/actions/rerun":
        rid, step = _need(form, "run_id"), _need(form, "step")
        new = t.rerun(rid, step)
        audit("rerun", [rid, new], f"reran {rid} from step {step} as {new}", new_run=new,
              step=step)
        return f"/runs/{quote(new)}", f"Rerun from step {step} started: run {new}."
    if path == "/actions/bulk":
        return _bulk(app, req, who, form, run_ids)
    if path == "/actions/bulk-job":
        return _bulk_job(app, who, form)
    if path == "/actions/bulk-job-cancel":
        return _bulk_job_cancel(app, who, form)
    if path == "/actions/pause":
        fn = t.function(_need(form, "fn"))
        t.pause(fn.key, f"paused from the dashboard {by}")
        audit("pause", [fn.key], f"paused {fn.key}")
        return "/functions", f"{fn.key} paused: its runs wait until you resume it."
    if path == "/actions/resume":
        fn = t.function(_need(form, "fn"))
        skip = bool(form.get("skip_backlog"))
        resumed, skipped = t.resume(fn.key, skip_backlog=skip)
        audit("resume", [fn.key], f"resumed {fn.key}: {resumed} pass(es) handed back"
              + (f", {skipped} run(s) skipped" if skipped else ""), skip_backlog=skip)
        return "/functions", (f"{fn.key} resumed: {resumed} waiting pass(es) continue"
                              + (f", {skipped} run(s) skipped" if skipped else "") + ".")
    if path in ("/actions/send", "/actions/invoke"):
        try:
            data = json.loads(form.get("data") or "{}")
        except ValueError as exc:
            raise ValueError(f"the data is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError("the data must be a JSON object")
        if path == "/actions/invoke":
            fn_ref = _need(form, "fn")
            rid = t.invoke(fn_ref, data)
            audit("invoke", [t.function(fn_ref).key, rid], f"invoked {fn_ref} as run {rid}")
            return f"/runs/{quote(rid)}", f"Invoked: run {rid}."
        name = _need(form, "name")
        for_run = form.get("for_run", "").strip()
        eid = t.send(name, data)
        targets = [eid] + ([for_run] if for_run else [])
        audit("send", targets, f"sent {name} as event {eid}"
              + (f" for the waiting run {for_run}" if for_run else ""), name=name)
        if for_run:
            return f"/runs/{quote(for_run)}", f"Event {eid} sent for this run's wait."
        return f"/events/{quote(eid)}", f"Event {eid} sent."
    raise HttpError(404, f"no action {path}")


def _bulk(app: DashboardApp, req: Request, who: Principal, form: dict[str, str],
          ids: list[str]) -> tuple[str, str]:
    """Cancel or replay every run selected on the runs list."""
    t = app.target
    what = form.get("bulk", "")
    back = local_path(form.get("back") or "/runs", "/runs")
    if not back.startswith("/runs"):
        back = "/runs"
    if what not in ("cancel", "replay"):
        raise HttpError(400, f"unknown bulk action {what!r}: cancel or replay")
    if not ids:
        raise ValueError("select at least one run first")
    if len(ids) > MAX_BULK:
        raise ValueError(f"{len(ids)} runs selected; act on at most {MAX_BULK} at once")
    done, skipped, failed = 0, [], []
    new_runs: list[str] = []
    for rid in ids:
        try:
            if what == "cancel":
                head = t.cancel(rid, f"cancelled from the dashboard (bulk, by {who.name})")
                if head in ("cancelled", "flagged"):
                    done += 1
                else:
                    skipped.append(rid)
            else:
                new_runs.append(t.replay(rid))
                done += 1
        except (FanoutError, ValueError) as exc:
            failed.append(f"{rid}: {exc}")
    verb = "Cancelled" if what == "cancel" else "Replayed"
    summary = _bulk_summary(verb, done, skipped, failed)
    app.record(req, who, f"bulk {what}", [*ids, *new_runs], summary, selected=len(ids))
    return back.split("?")[0], summary


def _bulk_job(app: DashboardApp, who: Principal, form: dict[str, str]) -> tuple[str, str]:
    """Every run the filters match, in a job on the workers (confirmed on /bulk/new)."""
    from .._celery.bulk_jobs import submit
    from .bulk_pages import query_from

    kind = form.get("kind", "")
    query = query_from(app.target, form, kind)
    reason = (form.get("reason") or "").strip()[:500] or f"{kind} from the dashboard"
    job = submit(app.target.runtime, kind, query, who=who.name, role=who.role, reason=reason,
                 client="dashboard")
    expect = form.get("expect", "")
    moved = (f" ({expect} matched when you confirmed: runs changed since)"
             if expect.isdigit() and int(expect) != job.total else "")
    return f"/bulk/{quote(job.id)}", f"Bulk {kind} of {job.total} run(s) started{moved}."


def _bulk_job_cancel(app: DashboardApp, who: Principal,
                     form: dict[str, str]) -> tuple[str, str]:
    """Stop a bulk job after its batch under way (its page's "Stop job")."""
    from .._celery.bulk_jobs import cancel

    job_id = _need(form, "job")
    reason = (form.get("reason") or "").strip()[:500] or "stopped from the dashboard"
    job, stopped = cancel(app.target.runtime, job_id, who=who.name, role=who.role,
                          reason=reason, client="dashboard")
    if job is None:
        raise HttpError(404, f"no bulk job {job_id} (unknown, or past its retention)")
    if not stopped:
        return f"/bulk/{quote(job.id)}", f"The job had ended already ({job.state})."
    return f"/bulk/{quote(job.id)}", (f"Bulk job stopped after {job.processed} of "
                                      f"{job.total} run(s): the batch under way finishes.")


def _bulk_summary(verb: str, done: int, skipped: list[str], failed: list[str]) -> str:
    parts = [f"{verb} {done} run(s)."]
    if skipped:
        parts.append(f"{len(skipped)} skipped (already ended): {', '.join(skipped[:5])}"
                     + (" ..." if len(skipped) > 5 else "") + ".")
    if failed:
        parts.append(f"{len(failed)} failed: {'; '.join(failed[:3])}.")
    return " ".join(parts)
