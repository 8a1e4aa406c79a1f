"""Every exception fanout raises, in one place.

The tree::

    FanoutError                       base of everything below
    ├── ConfigError (ValueError)      bad options, found when a function is declared
    │                                 or a client is created (pickle, bad trigger, ...)
    ├── EventError (ValueError)       an event that cannot be sent; nothing was published
    ├── ExpressionError (ValueError)  a CEL expression that does not compile or evaluate
    ├── MiddlewareError               a middleware hook raised; names the middleware and hook
    ├── PublishError                  Redis or the broker refused a send; raised, never swallowed
    ├── NonRetriableError             raise it in a step or handler to fail at once
    │   ├── DecryptionError           stored data cannot be decrypted with the keys given
    │   ├── NestedStepError           a step tool was called inside a running step
    │   └── NonDeterminismError       a replay reached steps in an order the memo does not fit
    ├── RetryAfterError               raise it to retry after a given delay
    └── StepError                     a step used up its retries; the handler may catch it
        └── InvokeError               an invoked child run failed, timed out or is missing
                                      (also a NonRetriableError)

Every error keeps the arguments it was built with, so it pickles and unpickles
(Celery and ``multiprocessing`` move exceptions between processes that way).
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

__all__ = [
    "ConfigError",
    "DecryptionError",
    "EventError",
    "ExpressionError",
    "FanoutError",
    "InvokeError",
    "MiddlewareError",
    "NestedStepError",
    "NonDeterminismError",
    "NonRetriableError",
    "PublishError",
    "RetryAfterError",
    "StepError",
]


class FanoutError(Exception):
    """Base class of every fanout error."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args, self.__dict__.copy()))


def _rebuild(cls: type[FanoutError], args: tuple[Any, ...], state: dict[str, Any]) -> FanoutError:
    err = cls.__new__(cls)
    Exception.__init__(err, *args)
    err.__dict__.update(state)
    return err


class ConfigError(FanoutError, ValueError):
    """An option, trigger or client setting is invalid."""


class EventError(FanoutError, ValueError):
    """An event is invalid; raised before anything is published."""


class ExpressionError(FanoutError, ValueError):
    """A CEL expression failed to compile or to evaluate."""


class PublishError(FanoutError):
    """Redis or the broker could not take an event or a task message."""


class NonRetriableError(FanoutError):
    """Fails the step (or the run, outside a step) without further attempts.

    ``quiet=True`` keeps the error out of fanout's failure log (the
    ``fanout.failures`` logger); the run and its steps record it as usual.
    """

    def __init__(self, message: str | None = None, quiet: bool = False) -> None:
        super().__init__(*(() if message is None else (message,)))
        self.quiet = bool(quiet)


class RetryAfterError(FanoutError):
    """Retry the step (or the pass) after ``retry_after``.

    ``retry_after``, as in inngest-py: an ``int`` of **milliseconds**, a
    ``timedelta``, or a ``datetime`` to retry at (a naive one is local time).  A
    float is refused with :class:`ConfigError` (it could mean seconds or
    milliseconds).  ``quiet=True`` keeps the error out of fanout's failure log.
    """

    def __init__(
        self,
        message: str | None,
        retry_after: int | _dt.timedelta | _dt.datetime,
        quiet: bool = False,
    ) -> None:
        _check_retry_after(retry_after)
        super().__init__(message, retry_after)
        self.message = "" if message is None else message
        self.retry_after = retry_after
        self.quiet = bool(quiet)

    def __str__(self) -> str:
        return self.message

    def delay_seconds(self, now: _dt.datetime) -> float:
        """The delay this error asks for, measured from ``now`` (never negative)."""
        ra = self.retry_after
        if isinstance(ra, _dt.datetime):
            if ra.tzinfo is None:
                ra = ra.astimezone()  # a naive datetime is local time
            return max(0.0, (ra - now).total_seconds())
        if isinstance(ra, _dt.timedelta):
            return max(0.0, ra.total_seconds())
        return max(0.0, float(ra) / 1000.0)


def _check_retry_after(value: object) -> None:
    if isinstance(value, (_dt.datetime, _dt.timedelta)):
        return
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ConfigError(f"RetryAfterError retry_after must not be negative, not {value!r}")
        return
    if isinstance(value, float):
        raise ConfigError(
            f"RetryAfterError retry_after {value!r} is a float, which is ambiguous: an int "
            f"is milliseconds (as in inngest-py). For {value:g} seconds write "
            f"timedelta(seconds={value:g}) or {round(value * 1000)} (milliseconds)"
        )
    raise ConfigError(
        "RetryAfterError retry_after must be an int of milliseconds, a timedelta or a "
        f"datetime, not {type(value).__name__}"
    )


def _stack_or_line(stack: object, name: str, message: str) -> str:
    """A recorded traceback, or the error's last line as a traceback would end."""
    if isinstance(stack, str) and stack:
        return stack
    return f"{name}: {message}\n" if message else f"{name}\n"


class StepError(FanoutError):
    """A step failed for good: its retries are used up, or it raised ``NonRetriableError``.

    As in inngest-py, ``name``, ``message`` and ``stack`` describe the last error the
    step raised: its class name, its message and its formatted traceback. ``stack`` is
    always a string: when no traceback was recorded (an invoke that timed out, a child
    that was cancelled) it is the error's last line, ``"<name>: <message>"``.
    ``step_id`` names the step; ``error_type`` and ``error_message`` are other names
    for ``name`` and ``message``.
    """

    def __init__(
        self,
        step_id: str,
        error_type: str,
        error_message: str,
        stack: str | None = None,
        *,
        quiet: bool = False,
    ) -> None:
        super().__init__(step_id, error_type, error_message)
        self.step_id = step_id
        self.error_type = str(error_type or "Error")
        self.error_message = str(error_message or "")
        self.stack: str = _stack_or_line(stack, self.error_type, self.error_message)
        self.quiet = bool(quiet)

    @property
    def name(self) -> str:
        """The class name of the error the step raised (``"ValueError"``)."""
        return self.error_type

    @property
    def message(self) -> str:
        """The message of the error the step raised."""
        return self.error_message

    def __str__(self) -> str:
        return f"step {self.step_id!r} failed: {self.error_type}: {self.error_message}"


class InvokeError(StepError, NonRetriableError):
    """The function invoked with ``ctx.step.invoke`` failed, timed out or was not found.

    A :class:`StepError` (as in inngest-py): ``name``, ``message`` and ``stack`` are
    those of the child's error (``"InvokeTimeoutError"`` when it timed out,
    ``"InvokeError"`` when there was nothing to invoke).  Also a
    :class:`NonRetriableError`: the child has its own retries.
    """

    def __init__(
        self,
        message: str,
        *,
        step_id: str = "",
        name: str = "InvokeError",
        error_message: str | None = None,
        stack: str | None = None,
        quiet: bool = False,
    ) -> None:
        FanoutError.__init__(self, message)
        self.step_id = step_id
        self.error_type = str(name or "InvokeError")
        self.error_message = str(message if error_message is None else error_message)
        self.stack = _stack_or_line(stack, self.error_type, self.error_message)
        self.quiet = bool(quiet)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else self.error_message


class NestedStepError(NonRetriableError):
    """A step tool (``ctx.step.*``) was called from inside a running step."""


class NonDeterminismError(NonRetriableError):
    """The handler reached its steps in an order that does not fit the memoized run."""


class MiddlewareError(FanoutError):
    """A middleware hook raised (or a middleware could not be created); the message
    names the middleware and the hook.  The pass fails and the function's retries
    apply; results already saved stay saved."""


class DecryptionError(NonRetriableError):
    """Encrypted data in the store cannot be decrypted with the keys configured (a
    wrong or missing key); the ciphertext is left as it was."""
