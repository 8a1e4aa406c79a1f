"""fanout: durable, event-driven functions for teams that already run Celery.

Write Inngest-style functions (``ctx.step.run``, ``ctx.step.send_event``); each
step runs as a Celery task and its result is memoized in Redis.
"""

from ._client import Fanout
from ._core.context import Context
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
from ._core.group_tools import GroupTools as Group
from ._core.group_tools import ParallelMode
from ._core.middleware import Middleware, MiddlewareSync, SendEventsResult, TransformOutputResult
from ._core.records import RunInfo, StepInfo
from ._core.step_tools import StepTools as Step
from ._core.step_types import AsyncContext
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
from ._version import __version__

__all__ = [
    "AsyncContext",
    "Batch",
    "Cancel",
    "Concurrency",
    "ConfigError",
    "Context",
    "Debounce",
    "DecryptionError",
    "Event",
    "EventError",
    "ExpressionError",
    "Fanout",
    "FanoutError",
    "Group",
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
    "Throttle",
    "Timeouts",
    "TransformOutputResult",
    "TriggerCron",
    "TriggerEvent",
    "__version__",
]
