"""The driver: one pass of a function handler over the replay engine.

:func:`run_pass` builds the handler's context (:class:`~fanout._core.context.Context`
for an ``async def`` handler, :class:`~fanout._core.context.ContextSync` for a ``def``
one) over a :class:`~fanout._core.engine.Pass`, runs the handler (through the
function's middleware, if any) until it returns or stops at a step boundary, and
turns what happened into an :data:`~fanout._core.engine.Outcome`.  It sits above both
``engine`` (the pass and its outcomes) and the step tools (``step_tools``,
``group_tools``, ``context``), which do not import each other back.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._errors import (
    ConfigError,
    DecryptionError,
    EventError,
    ExpressionError,
    MiddlewareError,
    NonDeterminismError,
    NonRetriableError,
    RetryAfterError,
    StepError,
)
from .context import context_for
from .engine import Pass, PassInput, utcnow
from .event import dumps
from .loops import run_coroutine, thread_loop
from .middleware import PassRequest, Stack
from .outcomes import (
    BranchDone,
    Completed,
    Failed,
    Interrupt,
    Outcome,
    Parallel,
    Sink,
    error_info,
)
from .sealed import sealed_message, still_sealed
from .versions import strict_hint

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
    ctx = context_for(p)
    try:
        if inp.middleware:
            outcome = _with_middleware(p, ctx, handler)
        else:
            sealed = _sealed(ctx, inp)
            outcome = sealed if sealed is not None else _finish_pass(
                p, _call_handler(p, ctx, handler))
    except Interrupt as intr:
        outcome = intr.outcome
    if inp.branch is None and p.reached:  # the handler ran (a pass may fail before it)
        report = getattr(sink, "pass_divergence", None)
        if report is not None:  # the guard against nondeterministic step ids
            report(p.divergent(), sorted(p.unvisited))
    return outcome


def _with_middleware(p: Pass, ctx: Any, handler: Callable[..., Any]) -> Outcome:
    inp = p.inp
    try:
        p.stack = Stack.build(inp.middleware, inp.client,
                              PassRequest(inp.run_id, inp.fn_id, inp.attempt, inp.branch))
    except MiddlewareError as exc:
        return Failed(error_info(exc), True)
    p.hook("transform_input", ctx, inp.function, inp.memo)
    sealed = _sealed(ctx, inp)
    if sealed is not None:
        return sealed
    p.hook("before_memoization")
    if not p.unvisited:
        p.hook("memo_done")  # nothing memoized: the handler's first line is new code
    outcome = _call_handler(p, ctx, handler)
    if isinstance(outcome, (_Returned, Failed)) and inp.branch is None:
        p.hook("memo_done")  # the handler got to its end (or raised): new code ran
        p.hook("executed")
    result = _finish_pass(p, outcome)
    if isinstance(result, Completed):
        value = p.transformed(result.output, None, None)
        if value is not result.output:
            try:
                result = Completed(json.loads(dumps(value)))
            except (TypeError, ValueError) as exc:
                err = MiddlewareError(f"transform_output returned a value that is not JSON: {exc}")
                result = Failed(error_info(err), True)
    elif isinstance(result, Failed) and inp.branch is None:
        p.transformed(None, _ErrorView(result.error), None)
    p.hook("before_response", reverse=True)
    return result


def _sealed(ctx: Any, inp: PassInput) -> Failed | None:
    """A pass that would hand the handler a still-encrypted value fails (not retried)
    with an error naming the encryption middleware."""
    first = getattr(ctx, "event", None)
    events = [first, *(e for e in getattr(ctx, "events", None) or [] if e is not first)]
    where = still_sealed(events, inp.memo)
    if where is None:
        return None
    return Failed(error_info(DecryptionError(sealed_message(where))), True)


@dataclass(frozen=True)
class _Returned:
    """The handler returned ``value`` (not yet checked)."""

    value: Any


class _ErrorView(Exception):
    """The function's failure as an exception, for transform_output."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('type', 'Error')}: {error.get('message', '')}")
        self.error = error


def _call_handler(p: Pass, ctx: Any, handler: Callable[..., Any]) -> Outcome | _Returned:
    is_async = p.is_async
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
        if p.nested is not None:
            return Failed(error_info(p.nested), False)
        if isinstance(intr.outcome, BranchDone) and not p.branch_reached:
            return _branch_missed(p)
        return intr.outcome
    except RetryAfterError as exc:
        return Failed(error_info(exc), True, exc.delay_seconds(utcnow()))
    except _NON_RETRIABLE as exc:
        return Failed(error_info(exc), False)
    except Exception as exc:  # noqa: BLE001
        return Failed(error_info(exc), True)
    if p.nested is not None:
        return Failed(error_info(p.nested), False)
    return _Returned(result)


def _finish_pass(p: Pass, returned: Outcome | _Returned) -> Outcome:
    """The outcome of a pass whose handler returned (a branch, a memo left unvisited,
    or the function's output)."""
    if not isinstance(returned, _Returned):
        return returned
    inp, result = p.inp, returned.value
    if inp.branch is not None:
        return BranchDone(inp.branch) if p.branch_reached else _branch_missed(p)
    if p.unvisited and inp.strict:
        names = sorted(p.unvisited)
        return Failed(
            error_info(
                NonDeterminismError(
                    f"the handler returned without reaching the memoized step(s) {names!r}"
                    + strict_hint()
                )
            ),
            False,
        )
    racing = tuple(r.id for r in inp.memo.values()
                   if r.status not in ("completed", "failed") and (r.extra or {}).get("race"))
    if racing:
        # The losers of a race go on to their end (inngest-py's race): the run ends on
        # the pass after the last of them rejoins it.
        return Parallel((), racing)
    unreached = sorted(set(inp.memo) - p.reached)
    if unreached:
        p.warn(
            "unreached", f"the handler returned without reaching the memoized step(s) "
            f"{unreached!r}: the code no longer calls them; their saved results stay unused",
            steps=unreached,
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


def _branch_missed(p: Pass) -> Failed:
    """A branch task whose handler no longer reaches the branch's step: the parallel
    group it was planned in would never join, so the run fails."""
    branch = p.inp.branch
    where = (f"stopped at the step {p.stopped_at!r} instead" if p.stopped_at
             else "no longer calls it")
    err = NonDeterminismError(
        f"the step {branch!r} was planned in a parallel group, but on a later pass the "
        f"handler {where}: the steps of a parallel group, and the steps before it, must be "
        "the same on every pass (do not make them depend on values that change between "
        "passes; compute such values in a step)"
    )
    return Failed(error_info(err), False)
