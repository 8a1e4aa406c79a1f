"""The dashboard's bulk jobs: "Cancel all N matching" / "Replay all N matching" on a
filtered runs page, the confirmation with the exact count, the job's page (its
progress, refreshed live, and an operator's "Stop job") and the list of jobs (``/bulk``). The job itself runs on
the workers (``fanout/_celery/bulk_jobs.py``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import quote, urlencode

from .._ops.locate import Target
from .._redis.bulk_store import BulkJob, BulkQuery
from .._redis.history import iso, parse_time
from .pages import csrf_field, h

#: The runs-page filters a bulk job takes (a search box, "paused": no bulk button).
FILTERS = ("fn", "status", "since", "until", "version", "event_name")


def query_from(t: Target, q: Mapping[str, str], kind: str) -> BulkQuery:
    """The job's query from the runs page's filters (at least one)."""
    if kind not in ("cancel", "replay"):
        raise ValueError(f"unknown bulk action {kind!r}: cancel or replay")
    if not any(q.get(k) for k in FILTERS):
        raise ValueError("set a filter first (function, status, time, version or event)")
    if q.get("status") == "paused":
        raise ValueError("'paused' is a view, not a status: filter by function and "
                         "status 'queued' instead")
    return BulkQuery(fn_key=t.function(q["fn"]).key if q.get("fn") else None,
                     status=q.get("status") or ("active" if kind == "cancel" else None),
                     since=parse_time(q["since"]) if q.get("since") else None,
                     until=parse_time(q["until"]) if q.get("until") else None,
                     version=q.get("version") or None,
                     event_name=q.get("event_name") or None,
                     include_replays=bool(q.get("include_replays")))


def bulk_buttons(q: Mapping[str, str], total: int | None) -> str:
    """The runs page's "all matching" links (an operator, filters set, runs found)."""
    if not total or not any(q.get(k) for k in FILTERS) or q.get("status") == "paused" \
            or q.get("q"):
        return ""
    keep = {k: q[k] for k in FILTERS if q.get(k)}
    return ('<div class="actions" id="bulk-all"><span class="muted">all matching runs:</span>'
            f'<a class="button" id="replay-all" href="/bulk/new?{h(urlencode({**keep, "kind": "replay"}))}">'
            f"Replay all {total} matching</a> "
            f'<a class="button danger" id="cancel-all" href="/bulk/new?{h(urlencode({**keep, "kind": "cancel"}))}">'
            f"Cancel all {total} matching</a></div>")


def confirm_page(preview: BulkJob, q: Mapping[str, str], csrf: str) -> str:
    """What a job would do, with the exact count, and the form that starts it."""
    kind = preview.kind
    hidden = "".join(f'<input type="hidden" name="{h(k)}" value="{h(q[k])}">'
                     for k in FILTERS if q.get(k))
    first = "".join(f'<li><a class="mono" href="/runs/{quote(r)}">{h(r)}</a></li>'
                    for r in preview.sample)
    note = ("Each run stops between steps; runs that have ended are skipped."
            if kind == "cancel" else
            "The latest run of each event is replayed, once; replays and events with a "
            "newer run are skipped.")
    if not preview.total:
        return (f"<h1>{h(kind.title())} runs</h1><p id='bulk-count'>No runs match "
                f"{h(preview.query.describe())}.</p>")
    return (f"<h1>{h(kind.title())} {preview.total} run(s)?</h1>"
            f'<p id="bulk-count"><strong>{preview.total}</strong> run(s) match '
            f"<code>{h(preview.query.describe())}</code>. {h(note)} The job runs on the "
            "workers, in batches.</p>"
            f"<p class='muted'>The first ones:</p><ul>{first}</ul>"
            '<form method="post" action="/actions/bulk-job" id="bulk-confirm">'
            f'{csrf_field(csrf)}{hidden}<input type="hidden" name="kind" value="{h(kind)}">'
            f'<input type="hidden" name="expect" value="{preview.total}">'
            '<label>Reason <input name="reason" size="40" placeholder="why (audit log)"></label> '
            f'<button type="submit" class="{"danger" if kind == "cancel" else ""}">'
            f"{h(kind.title())} all {preview.total} run(s)</button></form>")


def _bar(job: BulkJob) -> str:
    pct = 100 if not job.total else int(100 * job.processed / job.total)
    return (f'<div class="progress" style="border:1px solid #999;width:30em;height:1em">'
            f'<div style="background:#4a7;width:{pct}%;height:100%"></div></div>')


def stop_form(job: BulkJob, csrf: str) -> str:
    """An operator's "Stop job" on a job that has not ended: the batch under way
    finishes, no other starts (``bulk_jobs.cancel``, audited with the reason)."""
    if not csrf or job.finished:
        return ""
    return ('<form method="post" action="/actions/bulk-job-cancel" id="bulk-stop">'
            f'{csrf_field(csrf)}<input type="hidden" name="job" value="{h(job.id)}">'
            '<label>Reason <input name="reason" size="40" placeholder="why (audit log)">'
            '</label> <button type="submit" class="danger">Stop job</button> '
            '<span class="muted">the batch under way finishes; what was done stays done'
            "</span></form>")


def job_page(job: BulkJob, csrf: str = "") -> str:
    """The job's progress; with ``csrf`` (an operator), "Stop job" while it runs."""
    live = "" if job.finished else ' data-live="2"'
    rows = [("kind", job.kind), ("query", job.query.describe()), ("who", job.who),
            ("reason", job.reason or "-"), ("created", iso(job.created_at)),
            ("ended", iso(job.ended_at) or "-")]
    if job.last_error:
        rows.append(("last error", job.last_error))
    dl = "".join(f"<dt>{h(k)}</dt><dd>{h(v)}</dd>" for k, v in rows)
    return (f'<div data-region="bulk-job"><h1{live}>Bulk {h(job.kind)} '
            f'<span class="mono">{h(job.id)}</span> <span id="job-state">{h(job.state)}</span></h1>'
            f"{_bar(job)}"
            f'<p id="job-progress">{job.processed} of {job.total} run(s): {job.done} done, '
            f"{job.skipped} skipped, {job.failed} failed</p>"
            f'<dl class="meta">{dl}</dl>{stop_form(job, csrf)}</div>')


def jobs_page(jobs: Sequence[BulkJob]) -> str:
    if not jobs:
        return "<h1>Bulk jobs</h1><p>No bulk jobs yet: filter the runs, then "\
               "“Cancel all” or “Replay all”.</p>"
    rows = "".join(
        f'<tr><td><a class="mono" href="/bulk/{quote(j.id)}">{h(j.id)}</a></td>'
        f"<td>{h(j.kind)}</td><td>{h(j.state)}</td><td>{j.processed}/{j.total}</td>"
        f"<td>{j.failed}</td><td>{h(j.who)}</td><td>{h(iso(j.created_at))}</td></tr>"
        for j in jobs)
    return ('<h1>Bulk jobs</h1><table id="bulk-jobs"><thead><tr><th>job</th><th>kind</th>'
            "<th>state</th><th>processed</th><th>failed</th><th>who</th><th>created</th>"
            f"</tr></thead><tbody>{rows}</tbody></table>")


__all__ = ["bulk_buttons", "confirm_page", "job_page", "jobs_page", "query_from",
           "stop_form"]
