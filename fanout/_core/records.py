"""Plain records shared by the engine, the store and the inspection API."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

RunStatus = Literal[
    "queued", "running", "sleeping", "waiting", "completed", "failed", "cancelled", "skipped"
]
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled", "skipped"})

StepStatus = Literal["completed", "failed", "retrying", "sleeping", "waiting"]
MAX_ATTEMPT_HISTORY = 20  # attempts of a step kept with their start, end and error


def child_error(status: str, error: dict[str, Any] | None) -> dict[str, Any]:
    """The error of an ``invoke`` step whose child run ended ``status`` (not completed).

    A failed child passes on its error's type, message and stack, so the parent's
    ``InvokeError`` (a ``StepError``) carries the child's ``name``, ``message`` and
    ``stack``, as in inngest-py.
    """
    err = error or {}
    if status == "failed" and isinstance(err.get("type"), str) and err["type"]:
        out: dict[str, Any] = {"type": err["type"], "message": str(err.get("message", ""))}
        if isinstance(err.get("stack"), str):
            out["stack"] = err["stack"]
        return out
    detail = err.get("message") or status
    return {"type": "InvokeError", "message": f"the invoked run {status}: {detail}"}


@dataclass
class StepRecord:
    """One step of a run, as memoized in Redis (JSON)."""

    id: str
    kind: str = "run"
    status: str = "completed"
    output: Any = None
    error: dict[str, Any] | None = None
    attempts: int = 0
    seq: int = 0
    queued_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    retry_at: float | None = None
    extra: dict[str, Any] | None = None
    # Earlier attempts that failed: [{"n", "t0", "t1", "err"}], the last MAX_ATTEMPT_HISTORY.
    history: list[dict[str, Any]] | None = None
    max_attempts: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "k": self.kind, "st": self.status, "n": self.attempts}
        out["seq"] = self.seq
        if self.output is not None:
            out["out"] = self.output
        for key, val in (
            ("err", self.error),
            ("q", self.queued_at),
            ("t0", self.started_at),
            ("t1", self.ended_at),
            ("ra", self.retry_at),
            ("x", self.extra),
            ("h", self.history),
            ("m", self.max_attempts),
        ):
            if val is not None:
                out[key] = val
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> StepRecord:
        return cls(
            id=raw["id"],
            kind=raw.get("k", "run"),
            status=raw.get("st", "completed"),
            output=raw.get("out"),
            error=raw.get("err"),
            attempts=raw.get("n", 0),
            seq=raw.get("seq", 0),
            queued_at=raw.get("q"),
            started_at=raw.get("t0"),
            ended_at=raw.get("t1"),
            retry_at=raw.get("ra"),
            extra=raw.get("x"),
            history=raw.get("h"),
            max_attempts=raw.get("m"),
        )

    def with_attempt(self) -> list[dict[str, Any]]:
        """The history that a next attempt carries: this one's, then this attempt."""
        err = None if self.error is None else {  # no stack: the history stays small
            k: v for k, v in self.error.items() if k in ("type", "message")}
        mine = {"n": self.attempts, "t0": self.started_at, "t1": self.ended_at, "err": err}
        return [*(self.history or []), mine][-MAX_ATTEMPT_HISTORY:]


def _ts(value: float | None) -> _dt.datetime | None:
    return None if value is None else _dt.datetime.fromtimestamp(value, _dt.timezone.utc)


@dataclass(frozen=True)
class StepInfo:
    """A step as ``client.get_run`` reports it."""

    step_id: str
    status: str
    output: Any
    error: dict[str, Any] | None
    attempts: int
    started_at: _dt.datetime | None
    ended_at: _dt.datetime | None
    kind: str = "run"
    queued_at: _dt.datetime | None = None
    #: A retrying step: when its next attempt is due, and how many attempts it has.
    retry_at: _dt.datetime | None = None
    max_attempts: int | None = None
    #: A sleep: when it ends.
    sleep_until: _dt.datetime | None = None
    #: A wait_for_event: the event name, its ``match`` and ``if``; and for a wait or an
    #: invoke, when it times out.
    wait_event: str | None = None
    wait_match: str | None = None
    wait_if: str | None = None
    timeout_at: _dt.datetime | None = None
    #: An invoke: the child run it started.
    child_run_id: str | None = None
    #: A send_event: the ids of the events it sent, and the runs they started.
    sent_event_ids: list[str] = field(default_factory=list)
    started_runs: list[str] = field(default_factory=list)
    #: Every attempt (the last 20), oldest first, with its start, end and error.
    attempt_history: list[AttemptInfo] = field(default_factory=list)

    @classmethod
    def from_record(cls, rec: StepRecord) -> StepInfo:
        extra = rec.extra or {}
        pending = rec.status in ("sleeping", "waiting")
        until = _num(extra.get("until"))
        history = [AttemptInfo.from_json(h) for h in rec.history or []]
        if rec.kind in ("run", "send_event") and rec.attempts and rec.started_at is not None \
                and rec.status in ("completed", "failed", "retrying"):
            history.append(AttemptInfo(rec.attempts, _ts(rec.started_at), _ts(rec.ended_at),
                                       rec.error))
        sent = rec.output if rec.kind == "send_event" and isinstance(rec.output, list) else []
        return cls(
            step_id=rec.id,
            status=rec.status,
            output=rec.output,
            error=rec.error,
            attempts=rec.attempts,
            started_at=_ts(rec.started_at),
            ended_at=_ts(rec.ended_at),
            kind=rec.kind,
            queued_at=_ts(rec.queued_at),
            retry_at=_ts(rec.retry_at) if rec.status == "retrying" else None,
            max_attempts=rec.max_attempts,
            sleep_until=_ts(until) if rec.kind == "sleep" else None,
            wait_event=extra.get("event") if rec.kind == "wait" else None,
            wait_match=extra.get("match") if rec.kind == "wait" else None,
            wait_if=extra.get("if_exp") if rec.kind == "wait" else None,
            timeout_at=_ts(until) if rec.kind in ("wait", "invoke") and pending else None,
            child_run_id=extra.get("child") if rec.kind == "invoke" else None,
            sent_event_ids=[str(e) for e in sent],
            attempt_history=history[-MAX_ATTEMPT_HISTORY:],
        )

    @property
    def note(self) -> str:
        """What the step is doing or waiting for, in words (empty when it is done)."""
        if self.status == "retrying":
            of = f" of {self.max_attempts}" if self.max_attempts else ""
            at = f" at {_iso(self.retry_at)}" if self.retry_at else ""
            return f"retrying: attempt {self.attempts + 1}{of}{at}"
        if self.status == "sleeping" and self.sleep_until:
            return f"sleeping until {_iso(self.sleep_until)}"
        if self.status == "waiting" and self.kind == "wait":
            cond = ""
            if self.wait_match:
                cond += f" matching {self.wait_match}"
            if self.wait_if:
                cond += f" if {self.wait_if}"
            return f"waiting for event {self.wait_event!r}{cond} until {_iso(self.timeout_at)}"
        if self.status == "waiting" and self.kind == "invoke":
            return f"waiting for run {self.child_run_id} until {_iso(self.timeout_at)}"
        if self.status == "queued":
            return "queued as a parallel branch"
        return ""


@dataclass(frozen=True)
class AttemptInfo:
    """One attempt of a step: its number (from 1), start, end and error (None if it
    succeeded)."""

    attempt: int
    started_at: _dt.datetime | None
    ended_at: _dt.datetime | None
    error: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> AttemptInfo:
        return cls(int(raw.get("n") or 0), _ts(_num(raw.get("t0"))), _ts(_num(raw.get("t1"))),
                   raw.get("err"))


def _num(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _iso(value: _dt.datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class RunInfo:
    """A run's status, result and steps."""

    run_id: str
    fn_id: str
    status: str
    output: Any
    error: dict[str, Any] | None
    event_ids: list[str]
    parent_run_id: str | None
    attempt: int
    created_at: _dt.datetime | None
    started_at: _dt.datetime | None
    ended_at: _dt.datetime | None
    steps: list[StepInfo] = field(default_factory=list)
    app_id: str | None = None
    #: When the run next wakes between passes (end of a sleep, a wait's timeout, the
    #: next attempt after its code failed outside a step); None while it is not due.
    wake_at: _dt.datetime | None = None
    #: Attempts the run's code has outside any step, when it failed there.
    max_attempts: int | None = None
    #: The run this one replays (same event, from scratch), or reruns from a step.
    replay_of: str | None = None
    rerun_of: str | None = None
    rerun_from_step: str | None = None
    #: The function version the run was created on (None for runs older than versions).
    version: str | None = None
    #: The versions its passes ran on, in order (consecutive repeats collapsed).
    versions: list[str] = field(default_factory=list)
    #: Passes of the run ran on more than one version (a deploy happened under it).
    crossed_deploy: bool = False
    #: The patch markers declared when the run was created (``ctx.patched``).
    markers: list[str] = field(default_factory=list)
    #: Versioning warnings recorded on the run: dicts with ``kind`` ('order' or
    #: 'unreached'), ``message``, ``version`` and the step ids concerned.
    warnings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @property
    def pending_step(self) -> StepInfo | None:
        """The step the run is waiting on: sleeping, waiting or retrying."""
        if self.done:
            return None
        for s in self.steps:
            if s.status in ("retrying", "sleeping", "waiting"):
                return s
        return None

    @property
    def state(self) -> str:
        """What the run is doing, in words: ``sleeping until T (step 'nap')``, ``waiting
        for event 'E' matching data.id until T``, ``retrying: attempt 2 of 5 at T``."""
        if self.done:
            return self.status
        step = self.pending_step
        if step is not None and step.note:
            return f"{step.note} (step {step.step_id!r})"
        if self.error and self.wake_at is not None:
            of = f" of {self.max_attempts}" if self.max_attempts else ""
            return f"retrying: attempt {self.attempt + 1}{of} at {_iso(self.wake_at)}"
        if self.wake_at is not None:
            return f"{self.status} until {_iso(self.wake_at)}"
        return self.status


class RunList(list[RunInfo]):
    """The runs ``list_runs`` returns (a list), with ``next_cursor``: pass it back as
    ``cursor=`` for the next page; None when there are no more runs. ``total`` is how
    many runs match the filters in all (None for the runs of one event); ``prev_cursor``
    pages back to the runs just newer than the first one (None on the first page)."""

    next_cursor: str | None
    total: int | None
    prev_cursor: str | None

    def __init__(self, runs: Iterable[RunInfo] = (), next_cursor: str | None = None, *,
                 total: int | None = None, prev_cursor: str | None = None) -> None:
        super().__init__(runs)
        self.next_cursor = next_cursor
        self.total = total
        self.prev_cursor = prev_cursor


def ts_to_dt(value: float | None) -> _dt.datetime | None:
    return _ts(value)
