"""What fanout tells the worker log about runs, and how a failed run reaches Celery.

Two loggers, both children of ``fanout``:

* ``fanout.failures``: a WARNING per failed step attempt (or failed attempt of the
  run's code outside any step), an ERROR when a run fails for good. On by default.
  An error raised with ``quiet=True`` (``NonRetriableError``, ``RetryAfterError``,
  and the ``StepError`` a quiet step failure becomes) is not logged here.
* ``fanout.runs``: an INFO line when a run starts and when it ends, and one
  each time a ``fanout.step`` task goes on to the run's next pass. Off by default
  (its level is WARNING); turn it on with
  ``logging.getLogger("fanout.runs").setLevel(logging.INFO)``.

Every line carries ``fanout_app``, ``fanout_fn``, ``fanout_run_id`` and, for a step,
``fanout_step_id``, ``fanout_attempt``, ``fanout_attempts`` and ``fanout_retry_at``
as attributes of the record (set by a filter on these loggers), for JSON formatters.
"""

from __future__ import annotations

import datetime as _dt
import logging
import threading
from typing import Any

failures = logging.getLogger("fanout.failures")
runs = logging.getLogger("fanout.runs")
if runs.level == logging.NOTSET:
    runs.setLevel(logging.WARNING)

_fields = threading.local()


class _Fields(logging.Filter):
    """Puts the line's fields on its record after the record is made.

    Not ``extra=``: logging refuses an ``extra`` key the record already has, and
    ``fanout.middleware.LogContext`` gives every record ``fanout_app`` and friends;
    this filter overwrites them with the line's own values instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = getattr(_fields, "current", None)
        if fields:
            record.__dict__.update(fields)
        return True


for _logger in (failures, runs):
    if not any(isinstance(f, _Fields) for f in _logger.filters):
        _logger.addFilter(_Fields())


def _log(logger: logging.Logger, level: int, fields: dict[str, Any], msg: str,
         *args: Any) -> None:
    _fields.current = fields
    try:
        logger.log(level, msg, *args)
    finally:
        _fields.current = None


class UserTraceback(Exception):
    """The traceback of the user's code, as the run recorded it: the cause of a
    :class:`RunFailed` or :class:`AttemptFailed`, so the worker log, Flower and error
    trackers show the user's own frames (``File "proj/tasks.py", line 12, ...``)."""

    def __init__(self, stack: str) -> None:
        self.stack = stack
        super().__init__(stack)

    def __str__(self) -> str:
        return "the user's code raised:\n" + self.stack.rstrip("\n")

    def __reduce__(self) -> tuple[Any, ...]:
        return (UserTraceback, (self.stack,))


def _with_user_traceback(exc: BaseException, error: dict[str, Any] | None) -> None:
    stack = (error or {}).get("stack")
    if isinstance(stack, str) and stack.strip():
        exc.__cause__ = UserTraceback(stack)


class RunFailed(Exception):
    """Raised by the ``fanout.step`` task whose pass ended a run as failed, after the
    run's end is recorded in Redis. Celery then acknowledges the message (as it does
    for any task that raised), marks the task FAILURE, sends ``task-failed`` and fires
    ``task_failure``: nothing is retried or redelivered. Its cause
    (:class:`UserTraceback`) is the user's traceback."""

    def __init__(self, run_id: str, fn_key: str, error: dict[str, Any] | None) -> None:
        err = error or {}
        self.run_id, self.fn_key, self.error = run_id, fn_key, err
        super().__init__(
            f"run {run_id} of {fn_key} failed: {err.get('type', 'Error')}: {err.get('message', '')}"
        )
        _with_user_traceback(self, err)

    def __reduce__(self) -> tuple[Any, ...]:  # Celery checks that a task's exception pickles
        return (RunFailed, (self.run_id, self.fn_key, self.error))


class AttemptFailed(Exception):
    """The error of a failed attempt that fanout will retry: the ``exc`` of the
    ``celery.exceptions.Retry`` the ``fanout.step`` task raises, so Flower and
    ``celery events`` show the task as RETRY with this error (``task-retried``).
    fanout retries the attempt itself (a timer in Redis), not Celery."""

    def __init__(self, run_id: str, fn_key: str, step_id: str | None, attempt: int,
                 attempts: int, error: dict[str, Any] | None, retry_at: float) -> None:
        err = error or {}
        self.run_id, self.fn_key, self.step_id = run_id, fn_key, step_id
        self.attempt, self.attempts, self.error, self.retry_at = attempt, attempts, err, retry_at
        where = f"step {step_id!r} of run {run_id}" if step_id else f"run {run_id}"
        super().__init__(f"{where} ({fn_key}) failed, attempt {attempt} of {attempts}: "
                         f"{_describe(err)}")
        _with_user_traceback(self, err)

    def __reduce__(self) -> tuple[Any, ...]:
        return (AttemptFailed, (self.run_id, self.fn_key, self.step_id, self.attempt,
                                self.attempts, self.error, self.retry_at))


_ended = threading.local()


def take_failed() -> RunFailed | None:
    """The run this thread's task ended as failed since the last call, if any."""
    value: RunFailed | None = getattr(_ended, "failed", None)
    _ended.failed = None
    return value


def take_retrying() -> AttemptFailed | None:
    """The last failed attempt this thread's task left to be retried since the last
    call, if any."""
    value: AttemptFailed | None = getattr(_ended, "retrying", None)
    _ended.retrying = None
    return value


def _split(fn_key: str) -> tuple[str, str]:
    app, _, fn = fn_key.partition(":")
    return (app, fn) if fn else ("", app)


def _when(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).isoformat(timespec="milliseconds")


def is_quiet(err: dict[str, Any] | None) -> bool:
    """Whether the error was raised with ``quiet=True`` (``NonRetriableError``,
    ``RetryAfterError``): such failures stay out of ``fanout.failures``."""
    return err is not None and err.get("quiet") is True


def _describe(err: dict[str, Any] | None) -> str:
    err = err or {}
    return f"{err.get('type', 'Error')}: {err.get('message', '')}"


def attempt_failed(
    fn_key: str, run_id: str, step_id: str | None, attempt: int, attempts: int,
    error: dict[str, Any] | None, retry_at: float | None,
) -> None:
    """One failed attempt (``attempt`` counts from 1, of ``attempts`` allowed)."""
    if retry_at is not None:
        _ended.retrying = AttemptFailed(run_id, fn_key, step_id, attempt, attempts, error,
                                        retry_at)
    if is_quiet(error) or not failures.isEnabledFor(logging.WARNING):
        return
    app, fn = _split(fn_key)
    where = f"step {step_id!r} of run {run_id}" if step_id else f"run {run_id}"
    nxt = f"next attempt at {_when(retry_at)}" if retry_at is not None else "no attempt left"
    _log(failures, logging.WARNING,
         {"fanout_app": app, "fanout_fn": fn, "fanout_run_id": run_id,
          "fanout_step_id": step_id, "fanout_attempt": attempt,
          "fanout_attempts": attempts, "fanout_retry_at": retry_at, "fanout_error": error},
         "fanout: %s (%s) failed, attempt %d of %d: %s; %s",
         where, fn_key, attempt, attempts, _describe(error), nxt)


def run_started(fn_key: str, run_id: str) -> None:
    if runs.isEnabledFor(logging.INFO):
        app, fn = _split(fn_key)
        _log(runs, logging.INFO, {"fanout_app": app, "fanout_fn": fn, "fanout_run_id": run_id},
             "fanout: run %s (%s) started", run_id, fn_key)


def pass_went_on(fn_key: str, run_id: str, seq: int) -> None:
    """A task goes on to pass ``seq`` of the run (its next step) without a message."""
    if runs.isEnabledFor(logging.INFO):
        app, fn = _split(fn_key)
        _log(runs, logging.INFO, {"fanout_app": app, "fanout_fn": fn, "fanout_run_id": run_id,
                                   "fanout_pass": seq},
             "fanout: run %s (%s) goes on to pass %d in the same task", run_id, fn_key, seq)


def run_ended(fn_key: str, run_id: str, status: str, error: dict[str, Any] | None) -> None:
    """A run reached ``status``: ERROR for failed (and remembered for the task), INFO else."""
    app, fn = _split(fn_key)
    extra = {"fanout_app": app, "fanout_fn": fn, "fanout_run_id": run_id,
             "fanout_status": status}
    if status == "failed":
        _ended.failed = RunFailed(run_id, fn_key, error)
        if is_quiet(error):
            return
        _log(failures, logging.ERROR, {**extra, "fanout_error": error},
             "fanout: run %s (%s) failed for good: %s", run_id, fn_key, _describe(error))
    elif runs.isEnabledFor(logging.INFO):
        _log(runs, logging.INFO, extra, "fanout: run %s (%s) %s", run_id, fn_key, status)
