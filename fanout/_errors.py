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
    │   ├── InvokeError               an invoked child run failed, timed out or is missing
    │   ├── NestedStepError           a step tool was called inside a running step
    │   └── NonDeterminismError       a replay reached steps in an order the memo does not fit
    ├── RetryAfterError               raise it to retry after a given delay
    └── StepError                     a step used up its retries; the handler may catch it

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
    """Fails the step (or the run, outside a step) without further attempts."""


class InvokeError(NonRetriableError):
    """The function invoked with ``ctx.step.invoke`` failed, timed out or was not found."""


class RetryAfterError(FanoutError):
    """Retry the step (or the pass) after ``retry_after``.

    ``retry_after`` is seconds, a ``timedelta`` or an aware ``datetime``.
    """

    def __init__(
        self, message: str, retry_after: float | int | _dt.timedelta | _dt.datetime
    ) -> None:
        super().__init__(message, retry_after)
        self.message = message
        self.retry_after = retry_after

    def __str__(self) -> str:
        return self.message

    def delay_seconds(self, now: _dt.datetime) -> float:
        """The delay this error asks for, measured from ``now`` (never negative)."""
        ra = self.retry_after
        if isinstance(ra, _dt.datetime):
            if ra.tzinfo is None:
                ra = ra.replace(tzinfo=_dt.timezone.utc)
            return max(0.0, (ra - now).total_seconds())
        if isinstance(ra, _dt.timedelta):
            return max(0.0, ra.total_seconds())
        return max(0.0, float(ra))


class StepError(FanoutError):
    """A step failed for good: its retries are used up, or it raised ``NonRetriableError``.

    ``step_id`` names the step; ``error_type`` and ``error_message`` describe the
    last error the step raised.
    """

    def __init__(self, step_id: str, error_type: str, error_message: str) -> None:
        super().__init__(step_id, error_type, error_message)
        self.step_id = step_id
        self.error_type = error_type
        self.error_message = error_message

    def __str__(self) -> str:
        return f"step {self.step_id!r} failed: {self.error_type}: {self.error_message}"


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
