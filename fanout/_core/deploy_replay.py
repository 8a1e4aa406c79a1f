"""check-deploy's replay: one run in flight against the code about to be deployed.

Pure: the run's hash (read by the caller) goes through the same pass input and the
same engine a worker uses (``lifecycle.pass_input``, ``lifecycle.run_engine``), in
*dry* mode: every memoized step returns its saved result, and the replay stops at
the first step that is not final (a new step, or the step the run waits on), before
any of its code runs. Nothing is written: the sink refuses every write. What the
pass would do there (warn, fail, run a new step before saved ones) is the verdict.

See ``docs/howto/check-deploy.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from .event import Event
from .function import FunctionDef
from .lifecycle import pass_input, run_engine
from .outcomes import Completed, DryStop, Failed
from .records import StepRecord
from .run_record import ST

#: The run statuses whose runs are in flight (a pass will run them again).
IN_FLIGHT = ("queued", "running", "sleeping", "waiting")


class ReadOnlyError(RuntimeError):
    """The replay tried to write (an engine bug: a dry pass stops before any write)."""


@dataclass
class RunCheck:
    """What the code under check would do to one run in flight."""

    run_id: str
    status: str  # the run's status now
    #: ``ok`` (goes on, nothing to say), ``warn`` (goes on, with versioning warnings)
    #: or ``fail`` (the next pass would fail the run).
    verdict: str
    warnings: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None
    #: The new step the code would run before the saved steps in ``unused`` (a step
    #: renamed by the deploy runs again under its new id).
    would_run: list[str] = field(default_factory=list)
    #: Saved steps the code did not reach where the replay stopped.
    unused: list[str] = field(default_factory=list)
    #: The step where the replay stopped (None: the handler returned).
    stopped_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "status": self.status, "verdict": self.verdict,
                "warnings": self.warnings, "error": self.error, "would_run": self.would_run,
                "unused": self.unused, "stopped_at": self.stopped_at}


class _DrySink:
    """The engine's sink during a replay: collects warnings, writes nothing."""

    def __init__(self, fn: FunctionDef) -> None:
        self.fn = fn
        self.warnings: list[dict[str, Any]] = []
        self.unvisited: list[str] = []

    @property
    def max_event_bytes(self) -> int:
        return self.fn.max_event_bytes

    def versioning_warning(self, entry: dict[str, Any]) -> None:
        self.warnings.append({k: v for k, v in entry.items() if k not in ("at", "version")})

    def pass_divergence(self, divergent: bool, unreached: list[str]) -> None:
        self.unvisited = unreached

    def _refuse(self, what: str) -> Any:
        raise ReadOnlyError(f"check-deploy's replay must not {what}")

    def save_step(self, record: StepRecord) -> StepRecord | None:
        return self._refuse(f"save the step {record.id!r}")  # type: ignore[no-any-return]

    def defer_step(self, record: StepRecord) -> None:
        self._refuse(f"save the step {record.id!r}")

    def flush(self) -> None:
        return None  # nothing was deferred

    def send_events(self, step_id: str, events: list[tuple[Event, str]]) -> list[str]:
        return self._refuse("send events")  # type: ignore[no-any-return]

    def register_wait(self, step_id: str, spec: dict[str, Any]) -> dict[str, Any] | None:
        return self._refuse("register a wait")  # type: ignore[no-any-return]

    def drop_wait(self, step_id: str, event_name: str) -> None:
        self._refuse("drop a wait")

    def start_invoke(self, step_id: str, fn_ref: Any, data: dict[str, Any], seq: int) -> str:
        return self._refuse("invoke a function")  # type: ignore[no-any-return]

    def step_failed(self, record: StepRecord, attempts: int) -> None:
        return None


def replay_run(fn: FunctionDef, run_id: str, fields: dict[str, str]) -> RunCheck:
    """Replay the saved steps of ``run_id`` (its hash ``fields``) against ``fn``'s code."""
    # Every warning is reported, including kinds the run recorded already.
    inp = replace(pass_input(fn, run_id, dict(fields)), dry=True, warned=frozenset())
    sink = _DrySink(fn)
    outcome = run_engine(fn, inp, sink)  # type: ignore[arg-type]
    check = RunCheck(run_id=run_id, status=fields.get(ST, ""), verdict="ok",
                     warnings=sink.warnings, unused=list(sink.unvisited))
    if isinstance(outcome, Failed):
        check.verdict, check.error = "fail", {**outcome.error, "retriable": outcome.retriable}
        check.error.pop("stack", None)
        return check
    if isinstance(outcome, DryStop):
        check.stopped_at = outcome.step_id
        if outcome.new and check.unused:
            check.would_run = [outcome.step_id]
        elif check.unused and not any(w["kind"] == "unreached" for w in check.warnings):
            check.warnings.append({
                "kind": "unreached",
                "message": f"the handler reached {outcome.step_id!r}, where the run is "
                f"waiting, without reaching the memoized step(s) {check.unused!r}: unless "
                "the code reaches them later, their saved results stay unused",
                "steps": list(check.unused),
            })
    elif not isinstance(outcome, Completed):  # pragma: no cover - a dry pass stops first
        check.verdict = "fail"
        check.error = {"type": "CheckError", "message": f"the replay ended with {outcome!r}"}
        return check
    if check.warnings:
        check.verdict = "warn"
    return check
