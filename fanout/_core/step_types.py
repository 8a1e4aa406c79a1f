"""What a type checker sees of ``ctx.step`` and ``ctx.group``: ``Step``, ``StepSync``,
``Group`` and ``GroupSync``.

At run time there is one :class:`~fanout._core.step_tools.StepTools` (and one
:class:`~fanout._core.group_tools.GroupTools`) for both kinds of handler: each tool
returns its value directly to a ``def`` handler and an awaitable of it to an
``async def`` one.  These protocols say so to a type checker, with the names
inngest-py gives them:

* a ``def`` handler takes ``ctx: fanout.ContextSync``, whose ``step`` is a
  :class:`StepSync`: ``ctx.step.run("id", handler, *args)`` is of the handler's
  return type ``T`` (a coroutine function's result is awaited by the step);
* an ``async def`` handler takes ``ctx: fanout.Context``, whose ``step`` is a
  :class:`Step`: the same call is a coroutine to await, of ``T``.

``args`` are typed by the handler's parameters (a ``TypeVarTuple``), so a step
called with the wrong number or types of arguments fails type-checking.
``Fanout.create_function`` accepts either pairing (its decorator is overloaded on
whether the handler is a coroutine function) and rejects ``def f(ctx:
fanout.Context)``.  Nothing here does anything at run time: the protocols are for
annotations (``def charge(step: fanout.StepSync) -> None``), not ``isinstance``.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar, overload

from typing_extensions import TypeVarTuple, Unpack

from .durations import Duration
from .event import Event
from .group_tools import ParallelMode

__all__ = ["Group", "GroupSync", "Step", "StepSync"]

T = TypeVar("T")
R = TypeVar("R")
Args = TypeVarTuple("Args")


class StepSync(Protocol):
    """``ctx.step`` in a ``def`` handler (``fanout.ContextSync``): each tool returns
    its value."""

    @overload
    def run(
        self, step_id: str, handler: Callable[[Unpack[Args]], Awaitable[T]],
        *args: Unpack[Args], output_type: Any = None,
    ) -> T: ...
    @overload
    def run(
        self, step_id: str, handler: Callable[[Unpack[Args]], T], *args: Unpack[Args],
        output_type: Any = None,
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


class Step(Protocol):
    """``ctx.step`` in an ``async def`` handler (``fanout.Context``): each tool returns
    a coroutine to await, as inngest-py's ``async def`` step tools do."""

    @overload
    def run(
        self, step_id: str, handler: Callable[[Unpack[Args]], Awaitable[T]],
        *args: Unpack[Args], output_type: Any = None,
    ) -> Coroutine[Any, Any, T]: ...
    @overload
    def run(
        self, step_id: str, handler: Callable[[Unpack[Args]], T], *args: Unpack[Args],
        output_type: Any = None,
    ) -> Coroutine[Any, Any, T]: ...

    def send_event(
        self, step_id: str, events: Event | Iterable[Event]
    ) -> Coroutine[Any, Any, list[str]]: ...

    def sleep(self, step_id: str, duration: Duration) -> Coroutine[Any, Any, None]: ...

    def sleep_until(
        self, step_id: str, when: _dt.datetime | str
    ) -> Coroutine[Any, Any, None]: ...

    def wait_for_event(
        self, step_id: str, *, event: str, timeout: Duration, if_exp: str | None = None,
        match: str | None = None, lookback: Duration | None = None,
    ) -> Coroutine[Any, Any, Event | None]: ...

    @overload
    def invoke(
        self, step_id: str, *, function: Callable[..., Coroutine[Any, Any, R]],
        data: Mapping[str, Any] | None = None, timeout: Duration | None = None,
        output_type: Any = None,
    ) -> Coroutine[Any, Any, R]: ...
    @overload
    def invoke(
        self, step_id: str, *, function: Callable[..., R],
        data: Mapping[str, Any] | None = None, timeout: Duration | None = None,
        output_type: Any = None,
    ) -> Coroutine[Any, Any, R]: ...
    @overload
    def invoke(
        self, step_id: str, *, function: object,
        data: Mapping[str, Any] | None = None, timeout: Duration | None = None,
        output_type: Any = None,
    ) -> Coroutine[Any, Any, Any]: ...

    def invoke_by_id(
        self, step_id: str, *, function_id: str, app_id: str | None = None,
        data: Mapping[str, Any] | None = None, timeout: Duration | None = None,
        output_type: Any = None,
    ) -> Coroutine[Any, Any, Any]: ...


class GroupSync(Protocol):
    """``ctx.group`` in a ``def`` handler (``fanout.ContextSync``)."""

    def parallel(
        self, callables: Sequence[Callable[[], T]], parallel_mode: ParallelMode = ...
    ) -> tuple[T, ...]: ...


class Group(Protocol):
    """``ctx.group`` in an ``async def`` handler (``fanout.Context``): each callable
    returns an awaitable (``lambda: ctx.step.run(...)``)."""

    def parallel(
        self, callables: Sequence[Callable[[], Awaitable[T]]], parallel_mode: ParallelMode = ...
    ) -> Coroutine[Any, Any, tuple[T, ...]]: ...
