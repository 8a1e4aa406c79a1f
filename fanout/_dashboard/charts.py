"""Charts over time as inline SVG (no script, no CDN): per function, runs ended per
bucket (throughput), runs failed, the p95 run duration and the backlog (runs in
flight), for the last hour, day or week. Built from numbers only; names go through :func:`h`."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlencode

from .._ops.render import human_ms
from .._ops.timeseries import RANGES, Charts, Point
from .._redis.history import iso
from .pages import h

W, H = 240, 44


def _when(p: Point, width: int) -> str:
    start = iso(p.start)
    return f"{start[:16]}Z" if width < 86400 else start[:10]


def _frame(kind: str, label: str, body: str, **data: str) -> str:
    attrs = "".join(f' data-{k}="{h(v)}"' for k, v in data.items())
    return (f'<svg class="chart {kind}" role="img" aria-label="{h(label)}" width="{W}" '
            f'height="{H}" viewBox="0 0 {W} {H}"{attrs}>'
            f'<rect class="frame" x="0" y="0" width="{W}" height="{H}"></rect>{body}</svg>')


def throughput(points: Sequence[Point], width: int) -> str:
    top = max((p.ended for p in points), default=0) or 1
    step = W / max(1, len(points))
    parts = []
    for i, p in enumerate(points):
        x, y = i * step, float(H)
        for n, cls in ((p.completed, "ok"), (p.failed, "bad"), (p.other, "idle")):
            if n:
                hgt = max(1.0, n / top * (H - 4))
                y -= hgt
                parts.append(f'<rect class="{cls}" x="{x:.2f}" y="{y:.2f}" '
                             f'width="{max(0.8, step - 0.6):.2f}" height="{hgt:.2f}"></rect>')
        if p.ended:
            tip = (f"{_when(p, width)}: {p.ended} ended ({p.completed} completed, {p.failed} "
                   f"failed, {p.other} cancelled or skipped), {p.started} started")
            parts.append(f'<rect class="hit" x="{x:.2f}" y="0" width="{step:.2f}" height="{H}">'
                         f"<title>{h(tip)}</title></rect>")
    total = sum(p.ended for p in points)
    label = f"runs ended per bucket: {total} in all, at most {top if total else 0} in one"
    return _frame("throughput", label, "".join(parts), total=str(total), peak=str(
        top if total else 0))


def failures(points: Sequence[Point], width: int) -> str:
    top = max((max(p.failed, p.step_failures) for p in points), default=0) or 1
    step = W / max(1, len(points))
    parts = []
    for i, p in enumerate(points):
        x = i * step
        if p.step_failures:
            hgt = max(1.0, p.step_failures / top * (H - 4))
            parts.append(f'<rect class="warn" x="{x:.2f}" y="{H - hgt:.2f}" '
                         f'width="{max(0.8, step - 0.6):.2f}" height="{hgt:.2f}"></rect>')
        if p.failed:
            hgt = max(1.0, p.failed / top * (H - 4))
            parts.append(f'<rect class="bad" x="{x + step * 0.2:.2f}" y="{H - hgt:.2f}" '
                         f'width="{max(0.8, step * 0.6 - 0.6):.2f}" height="{hgt:.2f}"></rect>')
        if p.failed or p.step_failures:
            tip = f"{_when(p, width)}: {p.failed} run(s) failed, {p.step_failures} failed attempt(s)"
            parts.append(f'<rect class="hit" x="{x:.2f}" y="0" width="{step:.2f}" height="{H}">'
                         f"<title>{h(tip)}</title></rect>")
    total = sum(p.failed for p in points)
    attempts = sum(p.step_failures for p in points)
    return _frame("failures", f"runs failed: {total}; failed attempts: {attempts}",
                  "".join(parts), total=str(total), attempts=str(attempts))


def p95(points: Sequence[Point], width: int) -> str:
    values = [p.p95 for p in points if p.p95 is not None]
    top = max(values, default=0.0) or 1.0
    step = W / max(1, len(points))
    parts = []
    line: list[str] = []
    for i, p in enumerate(points):
        if p.p95 is None:
            if len(line) > 1:
                parts.append(f'<polyline class="line" points="{" ".join(line)}"></polyline>')
            line = []
            continue
        x = i * step + step / 2
        y = H - 2 - p.p95 / top * (H - 6)
        line.append(f"{x:.2f},{y:.2f}")
        parts.append(f'<circle class="dot" cx="{x:.2f}" cy="{y:.2f}" r="1.6">'
                     f"<title>{h(_when(p, width))}: p95 {h(human_ms(p.p95))} over "
                     f"{p.ended} run(s)</title></circle>")
    if len(line) > 1:
        parts.append(f'<polyline class="line" points="{" ".join(line)}"></polyline>')
    peak = max(values) if values else None
    label = "p95 run duration" + (f", peak {human_ms(peak)}" if peak is not None else ": no runs")
    return _frame("p95", label, "".join(parts),
                  peak="" if peak is None else f"{peak:.6f}")


def backlog(points: Sequence[Point], width: int) -> str:
    known = [(i, p) for i, p in enumerate(points) if p.backlog is not None]
    top = max((p.backlog or 0 for _i, p in known), default=0) or 1
    step = W / max(1, len(points))
    parts = []
    line = []
    for i, p in known:
        x = i * step + step / 2
        y = H - 2 - (p.backlog or 0) / top * (H - 6)
        line.append(f"{x:.2f},{y:.2f}")
        if p.backlog:
            parts.append(f'<rect class="hit" x="{i * step:.2f}" y="0" width="{step:.2f}" '
                         f'height="{H}"><title>{h(_when(p, width))}: {p.backlog} run(s) in '
                         f"flight at the end</title></rect>")
    if len(line) > 1:
        parts.insert(0, f'<polyline class="line backlog" points="{" ".join(line)}"></polyline>')
    now = known[-1][1].backlog if known else None
    peak = max((p.backlog or 0 for _i, p in known), default=0)
    label = ("backlog: not rolled yet" if now is None
             else f"backlog: {now} run(s) in flight at the last roll, at most {peak}")
    return _frame("backlog", label, "".join(parts), now="" if now is None else str(now),
                  peak=str(peak))


def charts_section(charts: Charts, fn_keys: Sequence[str], query: dict[str, str]) -> str:
    keep = {k: v for k, v in query.items() if k in ()}
    tabs = " ".join(
        (f'<b class="range on">{h(name)}</b>' if name == charts.range else
         f'<a class="range" href="/overview?{urlencode({**keep, "range": name})}#charts">'
         f"{h(name)}</a>")
        for name in RANGES)
    if not charts.enabled:
        return ('<h2 id="charts">Over time</h2><p class="muted">The store does not count on '
                "a Redis Cluster (or with fanout_metrics = False): no charts.</p>")
    rows = []
    for key in fn_keys:
        s = charts.series.get(key)
        if s is None:
            continue
        pk = s.peak_p95
        rows.append(
            f'<tr data-chart-fn="{h(key)}"><td class="mono">{h(key)}</td>'
            f"<td>{throughput(s.points, charts.width)}<div class=\"muted\">{s.ended} ended</div></td>"
            f"<td>{failures(s.points, charts.width)}<div class=\"muted\">{s.failed} failed</div></td>"
            f"<td>{p95(s.points, charts.width)}<div class=\"muted\">peak "
            f"{h(human_ms(pk)) if pk is not None else '–'}</div></td>"
            f"<td>{backlog(s.points, charts.width)}<div class=\"muted\">"
            f"{'–' if s.backlog_now is None else s.backlog_now} in flight</div></td></tr>")
    note = ("no minute rolled yet: the charts fill once a worker has run for a minute"
            if charts.last_roll is None else f"rolled up to {iso(charts.last_roll + 60)[:16]}Z")
    return (f'<h2 id="charts">Over time <span class="muted">({h(charts.label)})</span></h2>'
            f'<div class="ranges">{tabs} <span class="muted" id="charts-note">{h(note)}</span>'
            f'</div><table id="fn-charts" data-range="{h(charts.range)}"><thead><tr>'
            "<th>Function</th><th>Throughput (runs ended)</th><th>Failures (runs; attempts)</th>"
            "<th>p95 run duration</th><th>Backlog (runs in flight)</th></tr></thead><tbody>"
            + ("".join(rows) or '<tr><td colspan="5" class="muted">no functions</td></tr>')
            + '</tbody></table><p class="legend">throughput: <span class="ok"></span>completed '
            '<span class="bad"></span>failed <span class="idle"></span>cancelled or skipped; '
            'failures: <span class="bad"></span>runs <span class="warn"></span>attempts; the p95 '
            "is estimated from the run duration histogram's buckets; the backlog counts the runs "
            "started and not ended (queued, running, sleeping, waiting, paused) at the end of "
            "each bucket, up to the last roll.</p>")
