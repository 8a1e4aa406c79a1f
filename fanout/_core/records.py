"""Plain records shared by the engine, the store and the inspection API."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Any, Literal

RunStatus = Literal[
    "queued", "running", "sleeping", "waiting", "completed", "failed", "cancelled", "skipped"
]
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled", "skipped"})

StepStatus = Literal["completed", "failed", "retrying", "sleeping", "waiting"]


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
        )


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

    @classmethod
    def from_record(cls, rec: StepRecord) -> StepInfo:
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
        )


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


def ts_to_dt(value: float | None) -> _dt.datetime | None:
    return _ts(value)
