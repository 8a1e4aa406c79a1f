"""The driver: one pass of a function handler over the replay engine.

:func:`run_pass` builds the handler's :class:`~fanout._core.steps.Context` over a
:class:`~fanout._core.engine.Pass`, runs the handler until it returns or stops at
a step boundary, and turns what happened into an
:data:`~fanout._core.engine.Outcome`.  It sits above both ``engine`` (the pass and
its outcomes) and ``steps`` (the step tools), which do not import each other back.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable
from typing import Any

from .._errors import (
    ConfigError,
    EventError,
    ExpressionError,
    NonDeterminismError,
    NonRetriableError,
    RetryAfterError,
    StepError,
)
from .engine import (
    BranchDone,
    Completed,
    Failed,
    Interrupt,
    Outcome,
    Pass,
    PassInput,
    Sink,
    error_info,
    run_coroutine,
    thread_loop,
    utcnow,
)
from .event import dumps
from .steps import Context

_NON_RETRIABLE = (NonRetriableError, StepError, EventError, ConfigError, ExpressionError)


async def _drive_async(handler: Callable[..., Any], ctx: Any) -> Any:
    try:
        return await handler(ctx)
    finally:
        # Steps parked by a parallel plan never resume: cancel them with the pass.
        me = asyncio.current_task()
        for task in asyncio.all_tasks():
            if task is not me:
                task.cancel()


def run_pass(
    handler: Callable[..., Any], inp: PassInput, sink: Sink, *, is_async: bool
) -> Outcome:
    """Run one pass of ``handler`` and say what should happen next."""
    p = Pass(inp, sink, is_async=is_async)
    ctx = Context(p)
    try:
        if is_async:
            try:
                result = run_coroutine(_drive_async(handler, ctx))
            finally:
                loop = thread_loop()
                if not loop.is_running():
                    loop.run_until_complete(asyncio.sleep(0))
        else:
            result = handler(ctx)
            if inspect.isawaitable(result):
                result = run_coroutine(result)
    except Interrupt as intr:
        return intr.outcome
    except RetryAfterError as exc:
        return Failed(error_info(exc), True, exc.delay_seconds(utcnow()))
    except _NON_RETRIABLE as exc:
        return Failed(error_info(exc), False)
    except Exception as exc:  # noqa: BLE001
        return Failed(error_info(exc), True)
    if inp.branch is not None:
        return BranchDone(inp.branch)
    if p.unvisited:
        names = sorted(p.unvisited)
        return Failed(
            error_info(
                NonDeterminismError(
                    f"the handler returned without reaching the memoized step(s) {names!r}; "
                    "the code changed under a running run"
                )
            ),
            False,
        )
    try:
        text = dumps(result)
    except (TypeError, ValueError) as exc:
        err = NonRetriableError(
            f"the function returned a value that is not JSON-serializable "
            f"({type(result).__name__}): {exc}"
        )
        return Failed(error_info(err), False)
    return Completed(json.loads(text))
