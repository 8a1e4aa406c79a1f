"""fanout: durable, event-driven functions for teams that already run Celery.

Write Inngest-style functions (``ctx.step.run``, ``ctx.step.send_event``); each
step runs as a Celery task and its result is memoized in Redis.  A ``def`` handler
takes ``ctx: fanout.ContextSync``, an ``async def`` one ``ctx: fanout.Context``, as
in inngest-py.
"""

from typing import TYPE_CHECKING, Any

from ._client import Fanout
from ._core.context import Context, ContextSync
from ._core.event import Event
from ._core.flow import (
    Batch,
    Cancel,
    Concurrency,
    Debounce,
    Priority,
    RateLimit,
    Singleton,
    Throttle,
    Timeouts,
)
from ._core.group_tools import ParallelMode
from ._core.middleware import Middleware, MiddlewareSync, SendEventsResult, TransformOutputResult
from ._core.records import RunInfo, StepInfo
from ._core.step_types import Group, GroupSync, Step, StepSync
from ._core.triggers import TriggerCron, TriggerEvent
from ._core.types import PydanticSerializer
from ._errors import (
    ConfigError,
    DecryptionError,
    EventError,
    ExpressionError,
    FanoutError,
    InvokeError,
    MiddlewareError,
    NestedStepError,
    NonDeterminismError,
    NonRetriableError,
    PublishError,
    RetryAfterError,
    StepError,
)
from ._ops.deploy_check import DeployCheck, check_deploy
from ._redis.bulk_store import BulkJob, BulkQuery
from ._version import __version__

__all__ = [
    "Batch",
    "BulkJob",
    "BulkQuery",
    "Cancel",
    "Concurrency",
    "ConfigError",
    "Context",
    "ContextSync",
    "Debounce",
    "DecryptionError",
    "DeployCheck",
    "Event",
    "EventError",
    "ExpressionError",
    "Fanout",
    "FanoutError",
    "Group",
    "GroupSync",
    "InvokeError",
    "Middleware",
    "MiddlewareError",
    "MiddlewareSync",
    "NestedStepError",
    "NonDeterminismError",
    "NonRetriableError",
    "ParallelMode",
    "Priority",
    "PublishError",
    "PydanticSerializer",
    "RateLimit",
    "RetryAfterError",
    "RunInfo",
    "SendEventsResult",
    "Singleton",
    "Step",
    "StepError",
    "StepInfo",
    "StepSync",
    "Throttle",
    "Timeouts",
    "TransformOutputResult",
    "TriggerCron",
    "TriggerEvent",
    "__version__",
    "check_deploy",
]

#: Names kept for one minor release after they were replaced; each access warns.
_DEPRECATED = {
    "AsyncContext": (
        "Context",
        "fanout.AsyncContext is deprecated and is removed in 0.3.0 at the earliest: an async def "
        "handler takes ctx: fanout.Context (a def handler ctx: fanout.ContextSync), as in "
        "inngest-py",
    ),
}

if TYPE_CHECKING:
    AsyncContext = Context  # deprecated: fanout.Context


def __getattr__(name: str) -> Any:
    if name in _DEPRECATED:
        import warnings

        new, message = _DEPRECATED[name]
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        return globals()[new]
    raise AttributeError(f"module 'fanout' has no attribute {name!r}")
