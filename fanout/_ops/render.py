"""Text rendering shared by the CLI: tables, a run's step timeline, a progress bar."""

from __future__ import annotations

import datetime as _dt
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

from .._core.records import RunInfo, StepInfo
from .._core.run_record import FROM_STEP, REPLAY_OF
from .._redis.history import EventSummary, RunSummary, iso


def _epoch(value: _dt.datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def human_ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    ms = seconds * 1000
    if ms <= 0:
        return "0ms"
    if ms < 1:
        return "<1ms"
    if ms < 10_000:
        return f"{ms:.0f}ms"
    if seconds < 600:
        return f"{seconds:.1f}s"
    if seconds < 36_000:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


ENCRYPTED_MARKER = "__fanout_encrypted__"


def shown(value: Any) -> Any:
    """``value`` with every encrypted value replaced by a short note saying so."""
    if isinstance(value, dict):
        if value.get(ENCRYPTED_MARKER) and "data" in value:
            return f"<encrypted ({value[ENCRYPTED_MARKER]}): pass --key to show it>"
        return {k: shown(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shown(v) for v in value]
    return value


def short_json(value: Any, width: int = 60) -> str:
    text = json.dumps(shown(value), sort_keys=True, default=str, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 3] + "..."


def run_note(r: RunSummary) -> tuple[str, str, str]:
    """What a listing's note column says of a run, for the CLI and the dashboard:
    ``("error", type, message)``, ``("replay", original run id, from step)`` or
    ``("", "", "")``."""
    if r.error:
        return "error", str(r.error.get("type", "Error")), str(r.error.get("message", ""))
    if r.replay_of:
        return "replay", r.replay_of, r.from_step or ""
    return "", "", ""


def runs_table(runs: Sequence[RunSummary]) -> str:
    rows = []
    for r in runs:
        kind, a, b = run_note(r)
        if kind == "error":
            note = f"{a}: {b}"
        elif kind == "replay":
            note = f"replay of {a}" + (f" from {b}" if b else "")
        else:
            note = ""
        if r.crossed_deploy:
            note = (f"{note}; " if note else "") + "crossed a deploy: " + " -> ".join(r.versions)
        rows.append([r.run_id, r.fn_key, r.status, iso(r.created_at), human_ms(r.duration),
                     note[:70]])
    return table(["RUN", "FUNCTION", "STATUS", "CREATED", "DURATION", "NOTE"], rows)


def events_table(events: Sequence[EventSummary]) -> str:
    rows = [[e.event_id, e.name, iso(e.ts), str(e.run_count), short_json(e.data, 50)]
            for e in events]
    return table(["EVENT", "NAME", "TIME", "RUNS", "DATA"], rows)


@dataclass(frozen=True)
class StepTiming:
    """A step's position on its run's timeline, in seconds from the run's creation."""

    step: StepInfo
    queued: float | None
    started: float | None
    ended: float | None

    @property
    def queue_delay(self) -> float | None:
        if self.queued is None or self.started is None:
            return None
        return max(0.0, self.started - self.queued)

    @property
    def execution(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return max(0.0, self.ended - self.started)


def step_timings(run: RunInfo) -> tuple[float, float, list[StepTiming]]:
    """(origin, span, timings): origin is the run's creation (epoch s), span its length."""
    origin = _epoch(run.created_at) or _epoch(run.started_at) or time.time()
    out: list[StepTiming] = []
    last = _epoch(run.ended_at) or origin
    prev_end = origin
    for s in run.steps:
        q, t0, t1 = _epoch(s.queued_at), _epoch(s.started_at), _epoch(s.ended_at)
        if q is None and t0 is not None:
            # Sequential steps carry no enqueue time: the wait since the previous
            # step ended (or the run was created) is routing, queue and replay.
            q = min(prev_end, t0)
        if t1 is not None and s.queued_at is None:
            prev_end = max(prev_end, t1)
        out.append(StepTiming(s, None if q is None else q - origin,
                              None if t0 is None else t0 - origin,
                              None if t1 is None else t1 - origin))
        for v in (q, t0, t1):
            if v is not None:
                last = max(last, v)
    if run.ended_at is None and not run.done:
        last = max(last, time.time())
    return origin, max(last - origin, 1e-3), out


def _bar(t: StepTiming, span: float, width: int) -> str:
    cells = [" "] * width

    def col(x: float) -> int:
        return min(width - 1, max(0, int(x / span * width)))

    if t.queued is not None and t.started is not None:
        for i in range(col(t.queued), col(t.started) + 1):
            cells[i] = "."
    if t.started is not None:
        end = t.ended if t.ended is not None else t.started
        for i in range(col(t.started), col(end) + 1):
            cells[i] = "#"
    return "|" + "".join(cells) + "|"


def timeline(run: RunInfo, extra: dict[str, str] | None = None, width: int = 32) -> str:
    """A run's header, its steps with queue delay and execution time, and a bar chart
    (``.`` waiting in the queue, ``#`` executing), then its output or error."""
    extra = extra or {}
    origin, span, timings = step_timings(run)
    lines = [f"run {run.run_id}  {run.app_id or ''}:{run.fn_id}  {run.status}"]
    if run.event_ids:
        lines.append(f"  events   {', '.join(run.event_ids)}")
    if run.parent_run_id:
        lines.append(f"  parent   {run.parent_run_id}")
    if run.replay_of:
        lines.append(f"  replay of {run.replay_of}")
    elif run.rerun_of:
        lines.append(f"  rerun of {run.rerun_of} from step {run.rerun_from_step}")
    if not run.done:
        lines.append(f"  now      {run.state}")
    if run.versions:
        lines.append(f"  version  {' -> '.join(run.versions)}"
                     + ("  (crossed a deploy)" if run.crossed_deploy else ""))
    if run.markers:
        lines.append(f"  patches  {', '.join(run.markers)}")
    for w in run.warnings:
        lines.append(f"  warning  [{w.get('kind')}, on {w.get('version') or '?'}] "
                     f"{w.get('message', '')}")
    started = _epoch(run.started_at)
    ended = _epoch(run.ended_at)
    lines.append(f"  created  {iso(origin)}")
    lines.append(f"  started  {iso(started) or '-'}"
                 + (f"  (+{human_ms(started - origin)} in queue)" if started else ""))
    lines.append(f"  ended    {iso(ended) or '-'}"
                 + (f"  (total {human_ms(ended - origin)})" if ended else ""))
    lines.append("")
    rows = []
    for i, t in enumerate(timings, 1):
        rows.append([str(i), t.step.step_id, t.step.kind, t.step.status, str(t.step.attempts),
                     human_ms(t.queued) if t.queued is not None else "-",
                     human_ms(t.queue_delay), human_ms(t.execution), _bar(t, span, width)])
    if rows:
        lines.append(table(["#", "STEP", "KIND", "STATUS", "TRIES", "QUEUED AT", "QUEUE",
                            "EXEC", f"0 .. {human_ms(span)}"], rows))
    else:
        lines.append("  (no steps yet)")
    lines.extend(step_details(run))
    lines.append("")
    if run.status == "completed":
        lines.append(f"output: {short_json(run.output, 400)}")
    if run.error:
        lines.append(f"error: {run.error.get('type', 'Error')}: {run.error.get('message', '')}")
    return "\n".join(lines).rstrip() + "\n"


def _err(err: dict[str, Any] | None) -> str:
    return f"{(err or {}).get('type', 'Error')}: {(err or {}).get('message', '')}"


def step_details(run: RunInfo) -> list[str]:
    """Lines under the step table: what each step waits for, its child run, the runs
    its events started, every attempt of a step that failed at least once, errors."""
    out: list[str] = []
    for s in run.steps:
        if s.note and not run.done:
            out.append(f"  step {s.step_id}: {s.note}")
        if s.child_run_id:
            out.append(f"  step {s.step_id}: invoked run {s.child_run_id}")
        if s.sent_event_ids:
            runs = ", ".join(s.started_runs[:10]) + (" ..." if len(s.started_runs) > 10 else "")
            out.append(f"  step {s.step_id}: sent {len(s.sent_event_ids)} event(s), "
                       f"started {len(s.started_runs)} run(s)" + (f": {runs}" if runs else ""))
        failed = [a for a in s.attempt_history if a.error]
        if failed:
            for a in s.attempt_history:
                took = (human_ms(a.ended_at.timestamp() - a.started_at.timestamp())
                        if a.started_at and a.ended_at else "-")
                out.append(f"  step {s.step_id} attempt {a.attempt}"
                           + (f" of {s.max_attempts}" if s.max_attempts else "")
                           + f": {iso(_epoch(a.started_at))} ({took}) "
                           + (_err(a.error) if a.error else "ok"))
        elif s.error:
            out.append(f"  step {s.step_id} error: {_err(s.error)}")
    return out


def _dt_json(value: _dt.datetime | None) -> float | None:
    return _epoch(value)


def step_json(s: StepInfo) -> dict[str, Any]:
    """The explanatory fields of a step, for ``--json`` and the dashboard's API."""
    return {
        "note": s.note, "retry_at": _dt_json(s.retry_at), "max_attempts": s.max_attempts,
        "sleep_until": _dt_json(s.sleep_until), "wait_event": s.wait_event,
        "wait_match": s.wait_match, "wait_if": s.wait_if, "timeout_at": _dt_json(s.timeout_at),
        "child_run_id": s.child_run_id, "sent_event_ids": s.sent_event_ids,
        "started_runs": s.started_runs,
        "attempt_history": [{"attempt": a.attempt, "started_at": _dt_json(a.started_at),
                             "ended_at": _dt_json(a.ended_at), "error": a.error}
                            for a in s.attempt_history],
    }


def run_json(run: RunInfo, extra: dict[str, str] | None = None) -> dict[str, Any]:
    _origin, _span, timings = step_timings(run)
    return {
        "run_id": run.run_id, "app_id": run.app_id, "fn_id": run.fn_id, "status": run.status,
        "output": run.output, "error": run.error, "event_ids": run.event_ids,
        "parent_run_id": run.parent_run_id, "attempt": run.attempt,
        "created_at": _epoch(run.created_at), "started_at": _epoch(run.started_at),
        "ended_at": _epoch(run.ended_at),
        "replay_of": (extra or {}).get(REPLAY_OF), "from_step": (extra or {}).get(FROM_STEP),
        "rerun_of": run.rerun_of, "rerun_from_step": run.rerun_from_step,
        "state": run.state, "wake_at": _dt_json(run.wake_at), "max_attempts": run.max_attempts,
        "version": run.version, "versions": run.versions, "crossed_deploy": run.crossed_deploy,
        "markers": run.markers, "warnings": run.warnings,
        "steps": [{
            "step_id": t.step.step_id, "kind": t.step.kind, "status": t.step.status,
            "attempts": t.step.attempts, "output": t.step.output, "error": t.step.error,
            "queued_at": _epoch(t.step.queued_at), "started_at": _epoch(t.step.started_at),
            "ended_at": _epoch(t.step.ended_at), "queue_delay": t.queue_delay,
            "execution": t.execution, **step_json(t.step),
        } for t in timings],
    }


class Progress:
    """A progress bar on stderr: redrawn in place on a terminal, a few plain lines
    otherwise (logs, pipes)."""

    def __init__(self, total: int, label: str, stream: IO[str] | None = None,
                 width: int = 30) -> None:
        self.total, self.label, self.width = max(total, 0), label, width
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.done = 0
        self.failed = 0
        self._last_line = -1

    def advance(self, ok: bool = True) -> None:
        self.done += 1
        if not ok:
            self.failed += 1
        self._draw()

    def update(self, done: int, failed: int = 0) -> None:
        """Jump to ``done`` of the total (a job whose progress is read, not counted)."""
        self.done, self.failed = done, failed
        self._draw()

    def _draw(self) -> None:
        total = self.total or 1
        filled = int(self.width * self.done / total)
        text = (f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] "
                f"{self.done}/{self.total}" + (f" ({self.failed} failed)" if self.failed else ""))
        if self.tty:
            self.stream.write("\r" + text)
            if self.done >= self.total:
                self.stream.write("\n")
        else:
            tenth = self.done * 10 // total
            if tenth != self._last_line or self.done >= self.total:
                self._last_line = tenth
                self.stream.write(text + "\n")
        self.stream.flush()


__all__ = ["Progress", "events_table", "human_ms", "run_json", "runs_table", "table",
           "timeline"]


def decrypted(info: Any, key: str) -> Any:
    """The run with its encrypted outputs opened (``fanout run --key``, the dashboard
    with ``FANOUT_ENCRYPTION_KEY``)."""
    import dataclasses

    from ..encryption import Keyring

    ring = Keyring(key)

    def open_(value: Any, where: str) -> Any:
        if isinstance(value, dict):
            value = ring.open(value, where)
            if isinstance(value, dict):
                return {k: open_(v, where) for k, v in value.items()}
        if isinstance(value, list):
            return [open_(v, where) for v in value]
        return value

    steps = [dataclasses.replace(s, output=open_(s.output, f"step {s.step_id!r}"))
             for s in info.steps]
    return dataclasses.replace(info, output=open_(info.output, "the output"), steps=steps)
