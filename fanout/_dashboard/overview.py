"""HTML for the overview page (``/``): the fleet at a glance, then one line per
function with its day drawn as a bar chart.  Charts are inline SVG built from
numbers only; names go through :func:`h`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from .._core.function import FunctionDef
from .._ops.render import human_ms
from .._ops.stats import Bucket, FunctionStats, Overview, WindowStats
from .._redis.history import iso
from .pages import h, live_toggle


def reltime(ts: float | None, *, empty: str = "never") -> str:
    """A ``<time>`` the page's script shows as "3 min ago", in local time on hover."""
    if ts is None:
        return f'<span class="muted">{h(empty)}</span>'
    return f'<time datetime="{h(iso(ts))}" data-rel>{h(iso(ts))}</time>'


def ticktime(t: datetime) -> str:
    stamp = t.timestamp()
    return f'<time datetime="{h(iso(stamp))}" data-rel>{h(iso(stamp))}</time>'


def bars(buckets: Sequence[Bucket], *, width: int = 168, height: int = 30) -> str:
    """A stacked bar per hour: completed (green), failed (red), other (grey)."""
    if not buckets:
        return ""
    top = max((b.ok + b.failed + b.other for b in buckets), default=0) or 1
    step = width / len(buckets)
    parts = []
    for i, b in enumerate(buckets):
        x = i * step
        y = float(height)
        tip = f"{iso(b.start)[11:16]} UTC: {b.ok} completed, {b.failed} failed, {b.other} other"
        for n, cls in ((b.ok, "ok"), (b.failed, "bad"), (b.other, "idle")):
            if n:
                hgt = max(1.0, n / top * (height - 2))
                y -= hgt
                parts.append(f'<rect class="{cls}" x="{x + 0.5:.1f}" y="{y:.1f}" '
                             f'width="{max(1.0, step - 1):.1f}" height="{hgt:.1f}"></rect>')
        parts.append(f'<rect class="hit" x="{x:.1f}" y="0" width="{step:.1f}" height="{height}">'
                     f"<title>{h(tip)}</title></rect>")
    return (f'<svg class="bars" role="img" aria-label="runs per hour over the last day" '
            f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
            + "".join(parts) + "</svg>")


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def _dur(value: float | None) -> str:
    return "–" if value is None else h(human_ms(value))


def _window_cells(w: WindowStats) -> str:
    bad = " err-text" if (w.failure_rate or 0) > 0 else ""
    return (f'<td class="num">{w.runs}</td><td class="num">{w.per_minute:.2f}</td>'
            f'<td class="num{bad}">{_pct(w.failure_rate)}</td>'
            f'<td class="num">{_dur(w.p50)}</td><td class="num">{_dur(w.p95)}</td>')


def _tile(label: str, value: str, note: str = "", *, cls: str = "", ident: str = "") -> str:
    return (f'<div class="tile {cls}"{f" id={chr(34)}{ident}{chr(34)}" if ident else ""}>'
            f'<div class="tile-label">{h(label)}</div><div class="tile-value">{value}</div>'
            f'<div class="tile-note">{note}</div></div>')


def overview_page(ov: Overview, fns: Sequence[FunctionDef], stats: Sequence[FunctionStats],
                  paused: dict[str, Any] | None = None) -> str:
    """``paused``: function key to its pause (``since``, ``reason``, ``parked``)."""
    paused = paused or {}
    tiles = []
    for name, depth in ov.queues.items():
        tiles.append(_tile(f"queue {name}", "–" if depth is None else str(depth),
                           "messages ready" if depth is not None else "broker does not say",
                           ident=f"queue-{name}"))
    age = ov.timers.oldest_age(ov.now)
    late = ov.timers.overdue > 0 and age > 5
    tiles.append(_tile("timers", str(ov.timers.total),
                       f"{ov.timers.overdue} due now" + (f", oldest {h(human_ms(age))} late" if late else ""),
                       cls="warn" if late else "", ident="timers"))
    if ov.workers is None:
        tiles.append(_tile("workers", "–", "the broker cannot broadcast", ident="workers"))
    else:
        names = ", ".join(ov.workers) or "none answered"
        tiles.append(_tile("workers", str(len(ov.workers)), h(names),
                           cls="" if ov.workers else "bad", ident="workers"))
    w = ov.hour
    tiles.append(_tile("last hour", str(w.runs),
                       f'{w.completed} completed · <span class="err-text">{w.failed} failed</span> · '
                       f"{w.active} active", cls="bad" if w.failed else "", ident="hour"))
    partial = "" if ov.complete else '<p class="muted">on a Redis Cluster runs are not indexed by status: the figures by status are not shown.</p>'

    by_key = {s.fn_key: s for s in stats}
    rows = []
    for fn in fns:
        s = by_key.get(fn.key)
        if s is None:
            continue
        link = f'/runs?{urlencode({"fn": fn.key})}'
        failed_link = f'/runs?{urlencode({"fn": fn.key, "status": "failed"})}'
        ticks = ", ".join(ticktime(t) for t in s.next_ticks[:2]) or '<span class="muted">–</span>'
        skipped = (f' <a class="muted" href="/runs?{urlencode({"fn": fn.key, "status": "skipped"})}">'
                   f"{s.day.skipped} skipped</a>" if s.day.skipped else "")
        last = reltime(s.last_run_at)
        if s.last_status:
            shown = ("paused" if s.last_status == "queued" and fn.key in paused
                     else s.last_status)
            last += f' <span class="status {h(shown)}">{h(shown)}</span>'
        pause = paused.get(fn.key)
        badge = ""
        if pause is not None:
            badge = (f' <a href="/runs?{urlencode({"fn": fn.key, "status": "paused"})}" '
                     f'class="status paused" data-paused="{h(fn.key)}" title="paused since '
                     f'{h(iso(pause.since))}">paused · {pause.parked} waiting</a>')
        rows.append(
            f'<tr data-fn="{h(fn.key)}"><td class="mono"><a href="{h(link)}">{h(fn.key)}</a>'
            + badge
            + ("" if s.complete else ' <span class="muted" title="not indexed by status on a Redis Cluster">*</span>')
            + f"</td><td>{bars(s.hourly)}</td>"
            + _window_cells(s.hour) + _window_cells(s.day)
            + f'<td><a href="{h(failed_link)}">{s.day.failed}</a></td>'
            + f"<td>{last}</td><td>{ticks}{skipped}</td></tr>"
        )
    empty = '<tr><td colspan="15" class="muted">no functions</td></tr>'
    table = (
        '<table id="fn-stats"><thead>'
        '<tr><th rowspan="2">Function</th><th rowspan="2">Last 24 h</th>'
        '<th colspan="5">Last hour</th><th colspan="5">Last day</th>'
        '<th rowspan="2">Failed (day)</th><th rowspan="2">Last run</th><th rowspan="2">Next cron ticks</th></tr>'
        "<tr>" + "<th>runs</th><th>/min</th><th>failure</th><th>p50</th><th>p95</th>" * 2 + "</tr>"
        f'</thead><tbody>{"".join(rows) or empty}</tbody></table>'
    )
    return (f'<h1 data-live="5">Overview</h1>{live_toggle()}'
            f'<div data-region="ov-tiles"><div class="tiles">{"".join(tiles)}</div>{partial}</div>'
            f'<h2>Functions</h2><div data-region="ov-functions">{table}</div>'
            '<p class="legend">bars: <span class="ok"></span>completed <span class="bad"></span>failed '
            '<span class="idle"></span>other, per hour; failure = failed ÷ (completed + failed); '
            "durations of runs that ended.</p>")
