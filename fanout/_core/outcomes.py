"""What a pass can end with (the outcomes the Celery adapter dispatches on), the
``Sink`` protocol a pass writes through, and the retry policy: the vocabulary shared
by the engine, the driver and the adapters, with no behaviour of its own."""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any, Protocol

from .._errors import StepError
from .event import Event
from .records import StepRecord

# --------------------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class Completed:
    output: Any


@dataclass(frozen=True)
class Failed:
    """The pass failed outside any step, or a step failure reached the top."""

    error: dict[str, Any]
    retriable: bool
    retry_after: float | None = None


@dataclass(frozen=True)
class Continue:
    """A step was executed; ``next_step`` is new and runs in the next pass."""

    next_step: str


@dataclass(frozen=True)
class RetryStep:
    step_id: str
    delay: float


@dataclass(frozen=True)
class Sleep:
    step_id: str
    until: float


@dataclass(frozen=True)
class Wait:
    """Waiting for an event or a child run, until ``until`` (the timeout)."""

    step_id: str
    until: float


@dataclass(frozen=True)
class Parallel:
    """Several new steps at once. ``new`` need a task each; ``group`` is the fan-in set.
    ``go_on``: the run does not wait for them (the losers of a decided race): its next
    pass is queued with the branches."""

    new: tuple[str, ...]
    group: tuple[str, ...]
    go_on: bool = False


@dataclass(frozen=True)
class BranchDone:
    step_id: str


@dataclass(frozen=True)
class LeaseLost:
    """The pass must stop: another worker owns the run now, or (``cancelled``) a
    cancel was requested while the pass ran."""

    cancelled: bool = False


@dataclass(frozen=True)
class DryStop:
    """check-deploy's replay stopped at ``step_id``, the first step that is not final
    (``new``: not saved at all, so a pass would run it now)."""

    step_id: str
    new: bool


Outcome = (
    Completed | Failed | Continue | RetryStep | Sleep | Wait | Parallel | BranchDone | LeaseLost
    | DryStop
)


class Interrupt(BaseException):
    """Stops the handler at a step boundary. A BaseException so ``except Exception``
    in user code does not swallow it."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__()
        self.outcome = outcome


class SaveRejected(Exception):
    """Raised by a :class:`Sink` when the run's lease is no longer ours, or when the
    run was cancelled during the pass (``cancelled``)."""

    def __init__(self, run_id: str, *, cancelled: bool = False) -> None:
        super().__init__(run_id)
        self.cancelled = cancelled


class Sink(Protocol):
    """What a pass needs from the outside world."""

    def save_step(self, record: StepRecord) -> StepRecord | None:
        """Persist ``record``; return the record already saved for that step, if any
        (the first final record wins), or raise :class:`SaveRejected`."""
        ...

    def send_events(self, step_id: str, events: list[tuple[Event, str]]) -> list[str]: ...

    def register_wait(self, step_id: str, spec: dict[str, Any]) -> dict[str, Any] | None:
        """Register a wait; return an already-arrived matching event (lookback) or None."""
        ...

    def drop_wait(self, step_id: str, event_name: str) -> None:
        """Forget a wait that timed out."""
        ...

    def start_invoke(self, step_id: str, fn_ref: Any, data: dict[str, Any], seq: int) -> str:
        """Start the child run (idempotently); return its run id. Raise InvokeError if
        the function is unknown."""
        ...

    def defer_step(self, record: StepRecord) -> None:
        """Keep the final record of a step this pass executed, to write it with the end
        of the pass (or at :meth:`flush`); a sink that does not defer saves it now, as
        :meth:`save_step` would."""
        ...

    def flush(self) -> None:
        """Write the deferred step records now (before a side effect leaves the
        process); raise :class:`SaveRejected` like :meth:`save_step`."""
        ...

    def step_failed(self, record: StepRecord, attempts: int) -> None:
        """An attempt of a step failed (``attempts``: how many it may have in all)."""
        ...


# --------------------------------------------------------------------------- retry policy


INNGEST_BACKOFF: tuple[float, ...] = (15, 30, 60, 120, 300, 600, 1200, 2400, 3600, 7200)


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` further attempts after the first; ``backoff[i]`` seconds before attempt i+2."""

    retries: int = 4
    backoff: tuple[float, ...] = INNGEST_BACKOFF

    def delay(self, failed_attempts: int) -> float:
        table = self.backoff or (0.0,)
        return float(table[min(max(failed_attempts, 1) - 1, len(table) - 1)])


def error_info(exc: BaseException) -> dict[str, Any]:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-4000:]
    inner = getattr(exc, "stack", None) if isinstance(exc, StepError) else None
    if isinstance(inner, str) and inner.strip() and inner not in tb:
        # A StepError: the step's own traceback (the user's line that raised) first,
        # as Python shows an exception's cause.
        tb = (inner.rstrip("\n")[-3000:] + "\n\nThe above exception was the direct cause "
              "of the following exception:\n\n" + tb)
    info: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc), "stack": tb}
    if getattr(exc, "quiet", False) is True:
        info["quiet"] = True  # raised with quiet=True: kept out of the failure log
    return info
