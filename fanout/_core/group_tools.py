"""``ctx.group`` at run time: parallel groups, for both kinds of handler.

Each callable given to ``ctx.group.parallel`` makes one step or a few in a row; the
new ones become parallel branches, each run as its own task, and a later pass reads
their results back.  In a ``def`` handler the callables are called one after the
other while their new steps are collected; in an ``async def`` one they are awaited
together, as with ``asyncio.gather``.  What a type checker sees of this is
:class:`~fanout._core.step_types.GroupSync` or :class:`~fanout._core.step_types.Group`.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any

from .._errors import ConfigError, NonRetriableError, StepError
from .engine import Op, Pass
from .step_tools import Planned

__all__ = ["GroupTools", "ParallelMode"]


class ParallelMode(str, Enum):
    """How ``ctx.group.parallel`` ends: ``WAIT`` for every branch (the default), or
    ``RACE``: the group returns when the first branch finishes, with its result; the
    other branches go on to their end (their steps run and are recorded) and their
    results are ignored, as in inngest-py."""

    WAIT = "wait"
    RACE = "race"


class GroupTools:
    """``ctx.group``: run steps in parallel, each branch as its own task."""

    def __init__(self, pass_: Pass) -> None:
        self._p = pass_

    def parallel(
        self, callables: Sequence[Callable[[], Any]],
        parallel_mode: ParallelMode = ParallelMode.WAIT,
    ) -> Any:
        """Call each callable (each makes one step or a few in a row) and return their
        results as a tuple; with ``ParallelMode.RACE``, a tuple of the winner's result."""
        p = self._p
        fns = tuple(callables)
        if not all(callable(c) for c in fns):
            raise NonRetriableError("ctx.group.parallel takes a sequence of callables")
        try:
            mode = ParallelMode(parallel_mode)
        except ValueError:
            raise ConfigError(
                f"parallel_mode must be ParallelMode.WAIT or ParallelMode.RACE, "
                f"not {parallel_mode!r}"
            ) from None
        if mode is ParallelMode.RACE:
            return self._race_async(fns) if p.is_async else self._race(fns)
        if p.is_async:

            async def _gather() -> tuple[Any, ...]:
                return tuple(await asyncio.gather(*(c() for c in fns)))

            return _gather()
        planned: list[Op] = []
        results: list[Any] = []
        outer, p.collecting = p.collecting, planned
        try:
            for c in fns:
                try:
                    results.append(c())
                except Planned:
                    results.append(None)
        finally:
            p.collecting = outer
        if planned:
            p.plan_parallel(planned)
        return tuple(results)

    def _race(self, fns: tuple[Callable[[], Any], ...]) -> Any:
        p = self._p
        planned: list[Op] = []
        done: list[tuple[float, int, Any, Exception | None]] = []
        outer, p.collecting = p.collecting, planned
        try:
            for i, c in enumerate(fns):
                p.last_end = 0.0
                try:
                    value = c()
                except Planned:
                    continue
                except StepError as exc:  # the branch ended with a failed step
                    done.append((p.last_end, i, None, exc))
                    continue
                done.append((p.last_end, i, value, None))
        finally:
            p.collecting = outer
        return self._decide(planned, done)

    async def _race_async(self, fns: tuple[Callable[[], Any], ...]) -> Any:
        p = self._p
        planned: list[Op] = []
        done: list[tuple[float, int, Any, Exception | None]] = []
        outer, p.collecting = p.collecting, planned
        try:
            for i, c in enumerate(fns):
                p.last_end = 0.0
                try:
                    value = c()
                    if inspect.isawaitable(value):
                        value = await value
                except Planned:
                    continue
                except StepError as exc:
                    done.append((p.last_end, i, None, exc))
                    continue
                done.append((p.last_end, i, value, None))
        finally:
            p.collecting = outer
        return self._decide(planned, done)

    def _decide(self, planned: list[Op],
                done: list[tuple[float, int, Any, Exception | None]]) -> tuple[Any, ...]:
        """The winner of a race: of the branches that ended, the one whose last step
        ended first (every later pass agrees); with none yet, plan the others. Once it
        is decided, the losers go on: their new steps are planned as branches the run
        does not wait for (a loser's failed step fails only the loser)."""
        if not done:
            self._p.plan_parallel(planned, race=True)
            return ()
        _end, _i, value, error = min(done, key=lambda d: (d[0], d[1]))
        if error is not None:
            raise error
        new = [op for op in planned if op.memo is None]
        if new:
            self._p.plan_parallel(new, race=True, go_on=True)
        return (value,)
