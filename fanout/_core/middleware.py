"""Middleware: code that runs at fixed points of every pass of a function.

A middleware is a class; fanout makes a fresh instance for each pass, so per-pass
state on ``self`` is safe.  Client middleware (``Fanout(middleware=[...])``) run
before function middleware (``create_function(middleware=[...])``), each list in
order; the hooks that come back out of the pass (``after_*``, ``transform_output``,
``before_response``) run in the reverse order, so a pair of middleware nests.

Every hook may be ``def`` or ``async def``, whatever the handler is.  An async hook
called while an async handler's event loop is busy runs to completion on a helper
thread's loop (the handler waits for it, as it waits for any hook).

The pass model, and when each hook runs (``docs/howto/middleware.md`` has the table):

- ``transform_input(ctx, function, steps)``: once at the start of a pass, before the
  handler, with the memoized step records (``steps``: step id to record; change a
  record's ``output`` to change what the handler gets back, as decryption does).
- ``before_memoization`` / ``after_memoization``: around the replay of the memoized
  steps; ``after_memoization`` runs when the handler first reaches a step that has
  no saved result (or returns).
- ``before_execution`` / ``after_execution``: around new code: the steps the pass
  executes and the handler's own code after the last memoized step.
- ``transform_output(result)``: after a step ran (``result.step`` says which) and
  after the function returned (``result.step is None``), before the value is saved;
  setting ``result.output`` changes what is saved (encryption) but not what the
  handler got back in this pass.
- ``before_response``: at the end of the pass, before its outcome is stored.
- ``before_send_events(events)`` / ``after_send_events(result)``: around
  ``ctx.step.send_event`` and ``client.send``.

A hook that raises ends the pass with :class:`~fanout.MiddlewareError`, which names
the middleware and the hook; the function's retries apply, and a step result that
was already saved stays saved (a ``transform_output`` that raises happens before the
save, so that step runs again on the retry).
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._errors import MiddlewareError
from .loops import thread_loop

if TYPE_CHECKING:
    from .event import Event
    from .records import StepRecord

HOOKS = (
    "transform_input", "before_memoization", "after_memoization", "before_execution",
    "after_execution", "transform_output", "before_response", "before_send_events",
    "after_send_events",
)


@dataclass(frozen=True)
class PassRequest:
    """What fanout hands a middleware as ``raw_request``: the pass it runs in."""

    run_id: str
    fn_id: str
    attempt: int
    branch: str | None = None


@dataclass(frozen=True)
class StepInfo:
    """The step whose output a ``transform_output`` call is about."""

    id: str
    op: str  # the step tool: "run" or "send_event" (the steps whose code runs)


@dataclass
class TransformOutputResult:
    """A step's or the function's outcome on its way to the store."""

    output: Any
    error: BaseException | None = None
    step: StepInfo | None = None  # None for the function's own return value


@dataclass
class SendEventsResult:
    ids: list[str]
    error: BaseException | None = None


class Middleware:
    """Subclass and override the hooks you need; each may be ``def`` or ``async def``."""

    def __init__(self, client: Any, raw_request: Any) -> None:
        self.client = client
        self.raw_request = raw_request

    def transform_input(self, ctx: Any, function: Any, steps: Mapping[str, StepRecord]) -> Any:
        return None

    def before_memoization(self) -> Any:
        return None

    def after_memoization(self) -> Any:
        return None

    def before_execution(self) -> Any:
        return None

    def after_execution(self) -> Any:
        return None

    def transform_output(self, result: TransformOutputResult) -> Any:
        return None

    def before_response(self) -> Any:
        return None

    def before_send_events(self, events: list[Event]) -> Any:
        return None

    def after_send_events(self, result: SendEventsResult) -> Any:
        return None


#: inngest-py spells the sync base class ``MiddlewareSync``; in fanout one class
#: takes both kinds of hook.
MiddlewareSync = Middleware

MiddlewareFactory = Callable[..., Middleware]

_side = threading.local()


def _side_loop() -> asyncio.AbstractEventLoop:
    """A loop on a helper thread, for async hooks called inside a running loop."""
    loop: asyncio.AbstractEventLoop | None = getattr(_side, "loop", None)
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, name="fanout-middleware", daemon=True).start()
        _side.loop = loop
    return loop


def _await(value: Any) -> Any:
    if not inspect.isawaitable(value):
        return value
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return thread_loop().run_until_complete(_as_coro(value))
    return asyncio.run_coroutine_threadsafe(_as_coro(value), _side_loop()).result()


async def _as_coro(value: Any) -> Any:
    return await value


def validate(middleware: Any, where: str) -> tuple[MiddlewareFactory, ...]:
    """Check a ``middleware=`` list at declaration: classes (or factories) only."""
    if middleware is None:
        return ()
    if isinstance(middleware, (str, bytes)) or not isinstance(middleware, Sequence):
        raise TypeError(f"{where}: middleware must be a list of Middleware classes")
    out = []
    for item in middleware:
        if isinstance(item, Middleware):
            raise TypeError(
                f"{where}: pass the class {type(item).__name__}, not an instance: fanout "
                "makes a fresh instance for each pass (middleware=[{0}])".format(type(item).__name__)
            )
        if not callable(item):
            raise TypeError(f"{where}: middleware entries must be Middleware classes, not {item!r}")
        out.append(item)
    return tuple(out)


class Stack:
    """The middleware instances of one pass, and the calls into them."""

    def __init__(self, instances: Sequence[Middleware]) -> None:
        self.instances = list(instances)
        self.memoized = False
        self.executing = False

    @classmethod
    def build(
        cls, factories: Sequence[MiddlewareFactory], client: Any, request: PassRequest | None
    ) -> Stack:
        instances = []
        for make in factories:
            try:
                instances.append(make(client, request))
            except Exception as exc:  # noqa: BLE001 - named and re-raised
                raise MiddlewareError(f"middleware {_name(make)} could not be created: "
                                      f"{type(exc).__name__}: {exc}") from exc
        return cls(instances)

    def __bool__(self) -> bool:
        return bool(self.instances)

    def call(self, hook: str, *args: Any, reverse: bool = False) -> None:
        seq = reversed(self.instances) if reverse else self.instances
        for mw in seq:
            fn = getattr(type(mw), hook, None)
            if fn is None or fn is getattr(Middleware, hook):
                continue
            try:
                _await(getattr(mw, hook)(*args))
            except MiddlewareError:
                raise
            except Exception as exc:  # noqa: BLE001 - named and re-raised
                raise MiddlewareError(
                    f"middleware {type(mw).__name__}.{hook} raised {type(exc).__name__}: {exc}"
                ) from exc

    # -- the pass's milestones (each once per pass where that is their meaning) ----

    def memo_done(self) -> None:
        """The handler reached new code: end memoization, start execution."""
        if not self.memoized:
            self.memoized = True
            self.call("after_memoization", reverse=True)
        if not self.executing:
            self.executing = True
            self.call("before_execution")

    def executed(self) -> None:
        if self.executing:
            self.executing = False
            self.call("after_execution", reverse=True)

    def output(self, value: Any, error: BaseException | None, step: StepInfo | None) -> Any:
        result = TransformOutputResult(value, error, step)
        self.call("transform_output", result, reverse=True)
        return result.output


def _name(make: Any) -> str:
    return str(getattr(make, "__name__", None) or type(make).__name__)


EMPTY = Stack(())
