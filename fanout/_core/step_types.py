"""What a type checker sees of ``ctx.step`` and ``ctx.group``: typing-only views.

At run time there is one :class:`~fanout._core.step_tools.StepTools` (and one
:class:`~fanout._core.group_tools.GroupTools`) for both kinds of handler: each tool returns
its value directly to a ``def`` handler and an awaitable of it to an
``async def`` one.  These protocols say so to a type checker:

* a ``def`` handler takes ``ctx: fanout.Context``, whose ``step`` is a
  :class:`SyncStep`: ``ctx.step.run("id", handler)`` is of the handler's return
  type ``T``;
* an ``async def`` handler takes ``ctx: fanout.AsyncContext``, whose ``step`` is an
  :class:`AsyncStep`: the same call is an ``Awaitable[T]``.

``Fanout.create_function`` accepts either pairing (its decorator is overloaded on
whether the handler is a coroutine function) and rejects ``def f(ctx:
AsyncContext)``.  Nothing here exists at run time beyond the protocol classes.
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, overload

from .durations import Duration
from .event import Event

if TYPE_CHECKING:
    from .group_tools import ParallelMode

T = TypeVar("T")
R = TypeVar("R")



class SyncStep(Protocol):
    """``ctx.step`` in a ``def`` handler: each tool returns its value."""

    @overload
    def run(
        self, step_id: str, handler: Callable[..., Awaitable[T]], *args: Any,
        output_type: Any = None,
    ) -> T: ...
    @overload
    def run(
        self, step_id: str, handler: Callable[..., T], *args: Any, output_type: Any = None
    ) -> T: ...

    def send_event(self, step_id: str, events: Event | Iterable[Event]) -> list[str]: ...

    def sleep(self, step_id: str, duration: Duration) -> None: ...

    def sleep_until(self, step_id: str, when: _dt.datetime | str) -> None: ...

    def wait_for_event(
        self, step_id: str, *, event: str, timeout: Duration, if_exp: str | None = None,
        match: str | None = None, lookback: Duration | None = None,
    ) -> Event | None: ...

    @overload
    def invoke(
        self, step_id: str, *, function: Callable[..., Coroutine[Any, Any, R]],
        data: Mapping[str, Any] | None = None, timeout: Duration | None = None,
        output_type: Any = None,
    ) -> R: ...
    @overload
    def invoke(
        self, step_id: str, *, function: Callable[..., R],
        data: Mapping[str, Any] | None = None, timeout: Duration | None = None,
        output_type: Any = None,
    ) -> R: ...
    @overload
    def invoke(
        self, step_id: str, *, function: object,
        data: Mapping[str, Any] | None = None, timeout: Duration | None = None,
        output_type: Any = None,
    ) -> Any: ...

    def invoke_by_id(
        self, step_id: str, *, function_id: str, app_id: str | None = None,
        data: Mapping[str, Any] | None = None, timeout: Duration | None = None,
        output_type: Any = None,
    ) -> Any: ...


class AsyncStep(Protocol):
    """``ctx.step`` in an ``async def`` handler: each tool returns an awaitable."""

    @overload
    def run(
        self, step_id: str, handler: Callable[..., Awaitable[T]], *args: Any,
        output_type: Any = None,
    ) -> Awaitable[T]: ...
    @overload
    def run(
        self, step_id: str, handler: Callable[..., T], *args: Any, output_type: Any = None
    ) -> Awaitable[T]: ...

    def send_event(
        self, step_id: str, events: Event | Iterable[Event]
    ) -> Awaitable[list[str]]: ...

    def sleep(self, step_id: str, duration: Duration) -> Awaitable[None]: ...

    def sleep_until(self, step_id: str, when: _dt.datetime | str) -> Awaitable[None]: ...

    def wait_for_event(
        self, step_id: str, *, event: str, timeout: Duration, if_exp: str | None = None,
        match: str | None = None, lookback: Duration | None = None,
    ) -> Awaitable[Event | None]: ...

    @overload
    def invoke(
        self, step_id: str, *, function: Callable[..., Coroutine[Any, Any, R]],
        data: Mapping[str, Any] | None = None, timeout: Duration | None = None,
        output_type: Any = None,
    ) -> Awaitable[R]: ...
    @overload
    def invoke(
        self, step_id: str, *, function: Callable[..., R],
        data: Mapping[str, Any] | None = None, timeout: Duration | None = None,
        output_type: Any = None,
    ) -> Awaitable[R]: ...
    @overload
    def invoke(
        self, step_id: str, *, function: object,
        data: Mapping[str, Any] | None = None, timeout: Duration | None = None,
        output_type: Any = None,
    ) -> Awaitable[Any]: ...

    def invoke_by_id(
        self, step_id: str, *, function_id: str, app_id: str | None = None,
        data: Mapping[str, Any] | None = None, timeout: Duration | None = None,
        output_type: Any = None,
    ) -> Awaitable[Any]: ...


class SyncGroup(Protocol):
    """``ctx.group`` in a ``def`` handler."""

    def parallel(
        self, callables: Sequence[Callable[[], T]], parallel_mode: ParallelMode = ...
    ) -> tuple[T, ...]: ...


class AsyncGroup(Protocol):
    """``ctx.group`` in an ``async def`` handler."""

    def parallel(
        self, callables: Sequence[Callable[[], Awaitable[T]]], parallel_mode: ParallelMode = ...
    ) -> Awaitable[tuple[T, ...]]: ...


class AsyncContext(Protocol):
    """The context of an ``async def`` handler, for type checkers: what
    :class:`fanout.Context` is, with step tools that return awaitables.  At run time
    the handler receives a :class:`fanout.Context`."""

    @property
    def event(self) -> Event: ...
    @property
    def events(self) -> list[Event]: ...
    @property
    def run_id(self) -> str: ...
    @property
    def fn_id(self) -> str: ...
    @property
    def attempt(self) -> int: ...
    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]: ...
    @property
    def step(self) -> AsyncStep: ...
    @property
    def group(self) -> AsyncGroup: ...

    def patched(self, marker: str) -> bool: ...
