"""HTML for the dashboard's pages. Every value from Redis or a request goes through
:func:`h` (HTML escaping); numbers in inline styles are formatted floats."""

from __future__ import annotations

import html
import json
import time
from collections.abc import Iterable, Sequence
from importlib import resources
from string import Template
from typing import Any
from urllib.parse import urlencode

from .._core.function import FunctionDef
from .._core.records import RunInfo
from .._core.run_record import FK, FROM_STEP, REPLAY_OF
from .._ops.render import human_ms, run_note, shown, step_timings
from .._ops.stats import SearchPage
from .._redis.history import RUN_STATUSES, EventSummary, Page, RunSummary, iso

NAV = (("/overview", "Overview"), ("/runs", "Runs"), ("/events", "Events"), ("/functions", "Functions"),
       ("/audit", "Audit"))


def h(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def pretty(value: Any) -> str:
    return h(json.dumps(shown(value), indent=2, sort_keys=True, default=str, ensure_ascii=False))


def _layout() -> Template:
    text = resources.files("fanout._dashboard").joinpath("templates", "layout.html").read_text("utf-8")
    return Template(text)


def page(title: str, body: str, *, path: str, where: str, user: str = "", msg: str = "",
         err: str = "") -> str:
    nav = "".join(
        f'<a href="{href}"{" class=on" if path.startswith(href) else ""}>{label}</a>'
        for href, label in NAV
    )
    flash = ""
    if msg:
        flash += f'<div class="flash" role="status">{h(msg)}</div>'
    if err:
        flash += f'<div class="flash err" role="alert">{h(err)}</div>'
    return _layout().substitute(title=h(title), nav=nav, where=h(where), flash=flash, body=body,
                                user=user)


def status_badge(status: str) -> str:
    return f'<span class="status {h(status)}">{h(status)}</span>'


def csrf_field(csrf: str) -> str:
    return f'<input type="hidden" name="csrf" value="{h(csrf)}">'


def button_form(action: str, label: str, csrf: str, fields: dict[str, str], *,
                cls: str = "", confirm: str = "") -> str:
    """A one-button form; nothing without a CSRF value (a read-only viewer)."""
    if not csrf:
        return ""
    hidden = "".join(f'<input type="hidden" name="{h(k)}" value="{h(v)}">' for k, v in fields.items())
    conf = f' data-confirm="{h(confirm)}"' if confirm else ""
    return (f'<form class="inline" method="post" action="{h(action)}"{conf}>{csrf_field(csrf)}'
            f'{hidden}<button type="submit" class="{h(cls)}">{h(label)}</button></form>')


def send_form(csrf: str, *, name: str = "", data: str = "{}", fn: str = "", for_run: str = "",
              label: str = "Send test event", ident: str = "") -> str:
    """The form that sends an event; nothing for a read-only viewer."""
    if not csrf:
        return ""
    fn_field = f'<input type="hidden" name="fn" value="{h(fn)}">' if fn else ""
    if for_run:
        fn_field += f'<input type="hidden" name="for_run" value="{h(for_run)}">'
    ident_attr = f' id="{h(ident)}"' if ident else ""
    return (
        f'<form method="post" action="/actions/send" class="filters send-form"{ident_attr}>'
        f'{csrf_field(csrf)}{fn_field}'
        f'<label>Event name<input name="name" value="{h(name)}" required size="32"></label>'
        f'<label>Data (JSON)<textarea name="data" rows="1" cols="40">{h(data)}</textarea></label>'
        f'<button type="submit" class="primary">{h(label)}</button></form>'
    )


# -- functions --------------------------------------------------------------------------


def functions_page(fns: Sequence[FunctionDef], csrf: str,
                   paused: dict[str, Any] | None = None) -> str:
    """``paused``: function key to its pause (``since``, ``parked``) for paused ones."""
    rows = []
    paused = paused or {}
    for fn in fns:
        d = fn.describe()
        trig = []
        for t in d["triggers"]:
            if "event" in t:
                expr = f' <span class="muted">if {h(t["expression"])}</span>' if t.get("expression") else ""
                trig.append(f'event <span class="mono">{h(t["event"])}</span>{expr}')
            else:
                jitter = f' <span class="muted">± {h(t["jitter"])}s</span>' if t.get("jitter") else ""
                trig.append(f'cron <span class="mono">{h(t["cron"])}</span>{jitter}')
        opts = {k: v for k, v in d.items() if k not in ("app_id", "fn_id", "name", "triggers")}
        opts.update(fn.options)
        opt_text = ", ".join(f"{k}={json.dumps(v, default=str)}" for k, v in sorted(opts.items()))
        first_event = next((t.event for t in fn.event_triggers if "*" not in t.event), "")
        actions = button_form("/actions/invoke", "Invoke", csrf, {"fn": fn.key})
        pause = paused.get(fn.key)
        if pause is not None:
            actions += (f' <span class="status paused" data-paused="{h(fn.key)}">paused</span> '
                        f'<span class="muted">{pause.parked} waiting'
                        + (f" · {h(pause.reason)}" if pause.reason else "") + '</span> '
                        + button_form("/actions/resume", "Resume", csrf, {"fn": fn.key})
                        + " " + button_form("/actions/resume", "Resume, skip backlog", csrf,
                                            {"fn": fn.key, "skip_backlog": "1"}, cls="danger",
                                            confirm="Record the runs that never started as skipped?"))
        else:
            actions += " " + button_form("/actions/pause", "Pause", csrf, {"fn": fn.key},
                                         confirm=f"Pause {fn.key}? Its runs wait until you resume it.")
        if first_event:
            actions += " " + send_form(csrf, name=first_event)
        rows.append(
            f'<tr><td class="mono"><a href="/runs?{urlencode({"fn": fn.key})}">{h(fn.key)}</a></td>'
            f'<td>{h(fn.name)}</td><td>{"<br>".join(trig)}</td><td class="mono">{h(opt_text)}</td>'
            f"<td>{actions}</td></tr>"
        )
    table = ('<table id="functions"><thead><tr><th>Function</th><th>Name</th><th>Triggers</th>'
             '<th>Options</th><th>Try it</th></tr></thead><tbody>'
             + ("".join(rows) or '<tr><td colspan="5" class="muted">no functions</td></tr>')
             + "</tbody></table>")
    return f"<h1>Functions</h1>{table}"


# -- events ----------------------------------------------------------------------------------


def _event_row(ev: EventSummary) -> str:
    data = json.dumps(ev.data, default=str, ensure_ascii=False)[:120]
    return (f'<tr><td class="mono"><a href="/events/{h(ev.event_id)}">{h(ev.event_id)}</a></td>'
            f"<td>{h(ev.name)}</td><td>{h(iso(ev.ts))}</td><td>{ev.run_count}</td>"
            f'<td class="mono">{h(data)}</td></tr>')


def events_page(events: Page[EventSummary], csrf: str, name: str) -> str:
    newest = max((e.ts or 0 for e in events.items), default=0.0)
    rows = "".join(_event_row(e) for e in events.items)
    empty = '' if rows else '<tr id="no-events"><td colspan="5" class="muted">no events yet</td></tr>'
    more = ""
    if events.next_cursor:
        q = urlencode({"cursor": events.next_cursor, **({"name": name} if name else {})})
        more = f'<div class="pager"><a href="/events?{q}">older events →</a></div>'
    return (
        "<h1>Events</h1>"
        f"{send_form(csrf)}"
        '<form class="filters" method="get" action="/events">'
        f'<label>Name<input name="name" value="{h(name)}"></label><button>Filter</button></form>'
        f'<p class="muted" id="stream-status">live</p>'
        f'<table id="event-stream" data-after="{newest:.3f}" data-name="{h(name)}"><thead><tr>'
        "<th>Event</th><th>Name</th><th>Time</th><th>Runs</th><th>Data</th></tr></thead>"
        f"<tbody>{rows}{empty}</tbody></table>{more}"
    )


def event_page(ev: EventSummary, runs: Sequence[RunSummary], csrf: str, *,
               resumed: Sequence[RunSummary] = ()) -> str:
    """An event: its data, the runs it started and the runs whose wait it ended."""
    return (
        f'<h1>Event <span class="mono">{h(ev.event_id)}</span></h1>'
        f'<dl class="meta"><dt>Name</dt><dd>{h(ev.name)}</dd><dt>Time</dt><dd>{h(iso(ev.ts))}</dd>'
        f"<dt>Runs</dt><dd>{len(runs)}</dd></dl>"
        f"<h2>Data</h2><pre>{pretty(ev.data)}</pre>"
        + (f"<h2>User</h2><pre>{pretty(ev.user)}</pre>" if ev.user else "")
        + "<h2>Runs it started</h2>" + runs_table(runs)
        + ('<h2>Runs it resumed</h2><div id="resumed-runs">' + runs_table(resumed) + "</div>"
           if resumed else "")
        + "<h2>Send again</h2>"
        + send_form(csrf, name=ev.name, data=json.dumps(ev.data, default=str))
    )


# -- runs ------------------------------------------------------------------------------------


def runs_table(runs: Iterable[RunSummary], names: dict[str, str] | None = None, *,
               select: bool = False) -> str:
    """One line per run; ``names`` (run id to event name) adds the Event column;
    ``select`` adds a checkbox per run for the bulk actions."""
    rows = []
    for r in runs:
        kind, a, b = run_note(r)
        note = ""
        if kind == "error":
            note = f'<span class="err-text">{h(a)}: {h(b)}</span>'
        elif kind == "replay":
            note = f'replay of <a class="mono" href="/runs/{h(a)}">{h(a[:10])}…</a>'
        if r.crossed_deploy:
            note += f' <span class="muted">crossed a deploy: {h(" → ".join(r.versions))}</span>'
        box = (f'<td><input type="checkbox" name="run_ids" value="{h(r.run_id)}" '
               f'aria-label="select run {h(r.run_id)}"></td>' if select else "")
        rows.append(
            f'<tr>{box}<td class="mono"><a href="/runs/{h(r.run_id)}">{h(r.run_id)}</a></td>'
            f'<td class="mono">{h(r.fn_key)}</td>'
            + ("" if names is None else f'<td class="mono">{h(names.get(r.run_id, ""))}</td>')
            + f"<td>{status_badge(r.status)}</td>"
            f'<td><time datetime="{h(iso(r.created_at))}" data-rel>{h(iso(r.created_at))}</time></td>'
            f"<td>{h(human_ms(r.duration))}</td><td>{note}</td></tr>"
        )
    body = "".join(rows) or '<tr><td colspan="8" class="muted">no runs</td></tr>'
    event_th = "" if names is None else "<th>Event</th>"
    box_th = '<th><input type="checkbox" id="select-all" aria-label="select all"></th>' if select else ""
    return ('<table class="runs"><thead><tr>' + box_th + '<th>Run</th><th>Function</th>' + event_th + '<th>Status</th>'
            f"<th>Created</th><th>Duration</th><th>Note</th></tr></thead><tbody>{body}</tbody></table>")


def status_counts(counts: dict[str, int], q: dict[str, str]) -> str:
    """Last day's runs per status, each a link that filters the list by it."""
    if not counts:
        return ""
    keep = {k: v for k, v in q.items() if v and k in ("fn",)}
    chips = "".join(
        f'<a href="/runs?{urlencode({**keep, "status": st})}" data-status="{h(st)}">'
        f'{status_badge(st)} {counts[st]}</a>'
        for st in RUN_STATUSES if counts.get(st)
    )
    return f'<div class="counts" id="status-counts"><span class="muted">last 24 h:</span>{chips}</div>'


def _search_note(found: SearchPage, q: dict[str, str], keep: dict[str, str]) -> str:
    """What a search found and how far it looked, with a link to keep looking."""
    query = f'<span class="mono">{h(q.get("q", ""))}</span>'
    if found.exact:
        note = (f'<p class="muted" id="search-note">{found.total} run(s) match {query} '
                "(a search attribute: exact).</p>")
    else:
        note = (f'<p class="muted" id="search-note">{len(found.items)} run(s) match {query}; '
                f"looked at {found.looked} of {found.total} runs"
                + ("." if found.complete else ", newest first.") + "</p>")
    if found.next_cursor:
        label = "next page →" if found.exact else "keep looking →"
        note += (f'<div class="pager"><a id="keep-looking" href="/runs?'
                 f'{urlencode({**keep, "cursor": found.next_cursor})}">{label}</a></div>')
    return note


def runs_page(runs: Page[RunSummary], fns: Sequence[FunctionDef], q: dict[str, str], *,
              counts: dict[str, int] | None = None, names: dict[str, str] | None = None,
              csrf: str = "", search: SearchPage | None = None, bulk: str = "") -> str:
    fn_opts = '<option value="">all functions</option>' + "".join(
        f'<option value="{h(f.key)}"{" selected" if q.get("fn") == f.key else ""}>{h(f.key)}</option>'
        for f in fns)
    st_opts = '<option value="">any status</option>' + "".join(
        f'<option{" selected" if q.get("status") == s else ""}>{h(s)}</option>'
        for s in ("active", "paused", *RUN_STATUSES))
    filters = (
        '<form class="filters" method="get" action="/runs">'
        f'<label>Function<select name="fn">{fn_opts}</select></label>'
        f'<label>Status<select name="status">{st_opts}</select></label>'
        f'<label>Since<input name="since" value="{h(q.get("since", ""))}" placeholder="15m, 2h, 7d, ISO" size="14"></label>'
        f'<label>Until<input name="until" value="{h(q.get("until", ""))}" placeholder="now" size="14"></label>'
        f'<label>Version<input name="version" value="{h(q.get("version", ""))}" placeholder="v7, src-…" size="12"></label>'
        f'<label>Event<input name="event_name" value="{h(q.get("event_name", ""))}" placeholder="order.created" size="16"></label>'
        f'<label>Search<input name="q" value="{h(q.get("q", ""))}" placeholder="run id, event id, user.id=42" size="26"></label>'
        '<button type="submit">Filter</button>'
        f"{live_toggle()}</form>"
    )
    keep = {k: v for k, v in q.items() if v and k not in ("cursor", "msg")}
    more = ""
    if search is not None:
        more = _search_note(search, q, keep)
    else:
        links = []
        if runs.prev_cursor:
            links.append(f'<a href="/runs?{urlencode({**keep, "cursor": runs.prev_cursor})}" '
                         'id="newer">← newer runs</a>')
        if runs.next_cursor:
            links.append(f'<a href="/runs?{urlencode({**keep, "cursor": runs.next_cursor})}" '
                         'id="older">older runs →</a>')
        if links:
            more = '<div class="pager">' + " ".join(links) + "</div>"
        if runs.total is not None:
            more += (f'<p class="muted" id="runs-total">{runs.total} run(s) match.</p>'
                     if runs.total else
                     '<p class="muted" id="runs-total">no runs match these filters.</p>')
    table = runs_table(runs.items, names or {}, select=bool(csrf))
    if csrf:
        back = "/runs?" + urlencode({k: v for k, v in q.items() if v and k != "msg"})
        table = (
            '<form method="post" action="/actions/bulk" id="bulk" '
            'data-confirm="Apply this to every selected run?">'
            f'{csrf_field(csrf)}<input type="hidden" name="back" value="{h(back)}">'
            '<div class="actions"><span class="muted">selected runs:</span>'
            '<button type="submit" name="bulk" value="replay">Replay selected</button>'
            '<button type="submit" name="bulk" value="cancel" class="danger">Cancel selected</button>'
            f"</div>{table}</form>"
        )
    live = "" if q.get("cursor") else ' data-live="3"'
    return (f'<h1{live}>Runs</h1>{filters}'
            f'<div data-region="runs-counts">{status_counts(counts or {}, q)}</div>'
            f'<div data-region="runs-list" data-keep-selection>{bulk}{table}{more}</div>')


def _pct(x: float | None, span: float) -> float:
    return 0.0 if x is None else max(0.0, min(100.0, x / span * 100))


def _ts(value: Any) -> float | None:
    return None if value is None else float(value.timestamp())


def segments(t: Any, origin: float, now: float) -> list[tuple[str, float, float]]:
    """The pieces of one step's lane, as (kind, start, end) in seconds since the run
    began: ``queued`` (waiting for a worker), ``exec`` (code running; one per attempt),
    ``backoff`` (between a failed attempt and the next), ``sleep``, ``wait`` (for an
    event) and ``invoke`` (for a child run)."""
    s = t.step
    out: list[tuple[str, float, float]] = []
    start = _ts(s.started_at)
    end = _ts(s.ended_at)
    if t.queued is not None and t.started is not None and t.started > t.queued:
        out.append(("queued", t.queued, t.started))
    if start is None:
        return out
    if s.kind in ("sleep", "wait", "wait_for_event", "invoke"):
        until = end or _ts(s.sleep_until) or _ts(s.timeout_at) or now
        kind = {"sleep": "sleep", "wait": "wait", "wait_for_event": "wait", "invoke": "invoke"}[s.kind]
        out.append((kind, start - origin, max(until, start) - origin))
        return out
    attempts = [a for a in (s.attempt_history or []) if a.started_at is not None]
    if not attempts:
        out.append(("exec", start - origin, (end or start) - origin))
    for i, a in enumerate(attempts):
        a0 = _ts(a.started_at) or start
        a1 = _ts(a.ended_at) or a0
        out.append(("exec", a0 - origin, a1 - origin))
        nxt = attempts[i + 1].started_at if i + 1 < len(attempts) else None
        if a.error is not None and (nxt is not None or s.status == "retrying"):
            until = _ts(nxt) or _ts(s.retry_at) or now
            out.append(("backoff", a1 - origin, max(until, a1) - origin))
    return out


_SEGMENT_LABEL = {"queued": "waiting in the queue", "exec": "executing", "backoff": "retry backoff",
                  "sleep": "sleeping", "wait": "waiting for an event", "invoke": "waiting for the child run"}


def waterfall(run: RunInfo, csrf: str) -> str:
    origin, span, timings = step_timings(run)
    now = time.time()
    rows = []
    lanes = [(t, segments(t, origin, now)) for t in timings]
    span = max([span, *(b for _t, pieces in lanes for _k, _a, b in pieces)])
    for t, pieces in lanes:
        s = t.step
        lane = ""
        last_exec = max((n for n, p in enumerate(pieces) if p[0] == "exec"), default=-1)
        for n, (kind, a, b) in enumerate(pieces):
            x0, x1 = _pct(a, span), _pct(b, span)
            state = f" {h(s.status)}" if n == last_exec else (" failed" if kind == "exec" else "")
            tip = f"{_SEGMENT_LABEL[kind]} {human_ms(max(b - a, 0.0))}"
            lane += (f'<div class="seg {kind}{state}" style="left:{x0:.2f}%;'
                     f'width:{max(x1 - x0, 0.3):.2f}%" title="{h(tip)}"></div>')
            if kind == "exec":
                lane += f'<div class="tick" style="left:{x0:.2f}%" title="attempt start"></div>'
        detail = ""
        if s.error:
            detail += (f'<div class="err-text">{h(s.error.get("type", "Error"))}: '
                       f'{h(s.error.get("message", ""))}</div>')
            if s.error.get("stack"):
                detail += f"<pre>{h(s.error.get('stack'))}</pre>"
        if s.output is not None:
            detail += f"<details><summary>output</summary><pre>{pretty(s.output)}</pre></details>"
        rerun = button_form("/actions/rerun", "Rerun from here", csrf,
                            {"run_id": run.run_id, "step": s.step_id},
                            confirm=f"Start a new run reusing the steps before {s.step_id}?")
        rows.append(
            f'<tr class="step" data-step="{h(s.step_id)}"><td class="mono">{h(s.step_id)}</td>'
            f"<td>{h(s.kind)}</td><td>{status_badge(s.status)}</td><td>{s.attempts}</td>"
            f"<td>{h(human_ms(t.queue_delay))}</td><td>{h(human_ms(t.execution))}</td>"
            f'<td class="track"><div class="lane">{lane}</div>{detail}</td><td>{rerun}</td></tr>'
        )
    body = "".join(rows) or '<tr><td colspan="8" class="muted">no steps yet</td></tr>'
    return (
        '<div class="legend">timeline 0 → ' + h(human_ms(span))
        + "".join(f'<span class="seg-key {k}"></span>{h(v)}' for k, v in _SEGMENT_LABEL.items())
        + ' <span class="tick-key"></span>attempt</div>'
        '<table class="waterfall"><thead><tr><th>Step</th><th>Kind</th><th>Status</th><th>Tries</th>'
        "<th>Queue</th><th>Exec</th><th>Timeline</th><th></th></tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )


def matching_event(step: Any, event: Any) -> tuple[str, dict[str, Any], str]:
    """For a step waiting for an event: the event's name, data that satisfies its
    ``match`` (the triggering event's value at the same path), and a note on what the
    data cannot say for itself (an ``if`` expression, a match outside ``data``)."""
    data: dict[str, Any] = {}
    notes = []
    match = step.wait_match or ""
    if match:
        path = match.split(".")
        node: Any = event if isinstance(event, dict) else {}
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if path[0] == "data" and len(path) > 1:
            cur = data
            for part in path[1:-1]:
                cur = cur.setdefault(part, {})
            cur[path[-1]] = node
        else:
            notes.append(f"the match is on {match} ({json.dumps(node, default=str)}), "
                         "outside the data")
    if step.wait_if:
        notes.append(f"the event must also satisfy: {step.wait_if}")
    return str(step.wait_event or ""), data, "; ".join(notes)


def _wait_forms(run: RunInfo, event: Any, csrf: str) -> str:
    out = []
    for s in run.steps:
        if s.kind == "wait" and s.status == "waiting" and s.wait_event and csrf:
            name, data, note = matching_event(s, event)
            out.append(
                f'<div class="wait-link" data-step="{h(s.step_id)}"><h2>Send the matching event'
                f'</h2><p class="muted">Step <span class="mono">{h(s.step_id)}</span> waits for '
                f'<span class="mono">{h(name)}</span>'
                + (f" matching <span class=\"mono\">{h(s.wait_match)}</span>" if s.wait_match else "")
                + "." + (f" {h(note)}." if note else "") + "</p>"
                + send_form(csrf, name=name, data=json.dumps(data, default=str),
                            for_run=run.run_id, label="Send the matching event",
                            ident=f"match-{s.step_id}")
                + "</div>")
    return "".join(out)


def run_page(run: RunInfo, fields: dict[str, str], event: Any, csrf: str,
             pause: Any = None, copy: bool = False) -> str:
    def link(rid: str | None) -> str:
        return f'<a class="mono" href="/runs/{h(rid)}">{h(rid)}</a>' if rid else "-"

    events = ", ".join(f'<a class="mono" href="/events/{h(e)}">{h(e)}</a>' for e in run.event_ids)
    meta = [
        ("Function", f'<a class="mono" href="/runs?{urlencode({"fn": fields.get(FK, "")})}">'
                     f'{h(fields.get(FK, run.fn_id))}</a>'),
        ("Status", status_badge(run.status)),
        ("Events", events or "-"),
        ("Parent run", link(run.parent_run_id)),
        ("Created", h(iso(run.created_at.timestamp() if run.created_at else None))),
        ("Started", h(iso(run.started_at.timestamp() if run.started_at else None)) or "-"),
        ("Ended", h(iso(run.ended_at.timestamp() if run.ended_at else None)) or "-"),
        ("Attempt", str(run.attempt)),
    ]
    if run.status == "paused" and pause is not None:
        why = f" ({pause.reason})" if pause.reason else ""
        meta.insert(2, ("Now", f'<span id="run-state">paused: its function was paused at '
                               f'{h(iso(pause.since))}{h(why)}; it waits for resume '
                               f'(<a href="/functions">functions</a>)</span>'))
    elif not run.done:
        meta.insert(2, ("Now", f'<span id="run-state">{h(run.state)}</span>'))
    for s in run.steps:
        if s.child_run_id:
            meta.append((f"Step {h(s.step_id)}", "invoked " + link(s.child_run_id)))
        if s.kind == "wait" and isinstance(s.output, dict) and s.output.get("id"):
            eid = str(s.output["id"])
            meta.append((f"Step {h(s.step_id)}", f'resumed by event <a class="mono resumed-by" '
                         f'href="/events/{h(eid)}">{h(eid)}</a>'))
        if s.started_runs:
            shown = ", ".join(link(r) for r in s.started_runs[:20])
            more = f" and {len(s.started_runs) - 20} more" if len(s.started_runs) > 20 else ""
            meta.append((f"Step {h(s.step_id)}", f"started {len(s.started_runs)} run(s): "
                         f"{shown}{more}"))
    if fields.get(REPLAY_OF):
        meta.append(("Replay of", link(fields[REPLAY_OF])
                     + (f' from step <span class="mono">{h(fields[FROM_STEP])}</span>'
                        if fields.get(FROM_STEP) else "")))
    if run.versions:
        meta.append(("Version", '<span class="mono" id="run-versions">'
                     + " → ".join(h(v) for v in run.versions) + "</span>"
                     + (' <span class="muted">(crossed a deploy)</span>'
                        if run.crossed_deploy else "")))
    if run.markers:
        meta.append(("Patches", h(", ".join(run.markers))))
    if run.warnings:
        meta.append(("Warnings", "".join(
            f'<div class="warn-text run-warning">{h(w.get("kind"))}: {h(w.get("message"))}</div>'
            for w in run.warnings)))
    if copy:  # Redis no longer holds the run: what the history store copied, read only
        csrf = ""  # so no action buttons
        meta.insert(0, ("Stored", '<span id="run-copy">in the PostgreSQL history store only: '
                        "the run is past Redis's retention, so it cannot be replayed, rerun "
                        "or cancelled from here (its event is shown below)</span>"))
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in meta)
    actions = []
    if not run.done:
        actions.append(button_form("/actions/cancel", "Cancel run", csrf, {"run_id": run.run_id},
                                   cls="danger", confirm="Cancel this run?"))
    actions.append(button_form("/actions/replay", "Replay", csrf, {"run_id": run.run_id},
                               confirm="Start a new run of this function for the same event?"))
    result = ""
    if run.status == "completed":
        result = f"<h2>Output</h2><pre id=\"run-output\">{pretty(run.output)}</pre>"
    if run.error:
        result += (f'<h2>Error</h2><div class="err-text" id="run-error">{h(run.error.get("type", "Error"))}: '
                   f'{h(run.error.get("message", ""))}</div>')
        if run.error.get("stack"):
            result += f"<pre>{h(run.error['stack'])}</pre>"
    refresh = "" if run.done else ' data-live="2"'
    return (
        f'<div data-region="run-head"><h1{refresh}>Run <span class="mono" id="run-id">'
        f'{h(run.run_id)}</span> <span id="run-status">{status_badge(run.status)}</span></h1>'
        f'<dl class="meta">{dl}</dl><div class="actions">{"".join(actions)}</div>'
        f'{_wait_forms(run, event, csrf)}</div>'
        f'<div data-region="run-steps"><h2>Steps</h2>{waterfall(run, csrf)}{result}</div>'
        f"<h2>Input event</h2><pre>{pretty(event)}</pre>"
    )


def live_toggle() -> str:
    return ('<label class="live-toggle"><input type="checkbox" id="autorefresh"> live '
            '<span class="muted" id="live-status"></span></label>')
