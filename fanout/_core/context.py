"""What a handler receives: ``fanout.Context`` (``async def``) or ``fanout.ContextSync`` (``def``).

The names are inngest-py's.  Both carry the same event(s), ids, attempt and logger
and the same step tools (:class:`~fanout._core.step_tools.StepTools`,
:class:`~fanout._core.group_tools.GroupTools`); they differ only in what a type
checker sees of ``step`` and ``group``: values in a ``def`` handler, coroutines to
await in an ``async def`` one.  The driver gives each handler the one that matches
its kind, so ``isinstance(ctx, fanout.ContextSync)`` holds in a ``def`` handler.
"""

from __future__ import annotations

import logging
from typing import cast

from .._errors import ConfigError
from .engine import Pass
from .event import Event
from .group_tools import GroupTools
from .step_tools import StepTools
from .step_types import Group, GroupSync, Step, StepSync

__all__ = ["Context", "ContextSync", "context_for"]


class _BaseContext:
    """The fields and methods both contexts share."""

    def __init__(self, pass_: Pass) -> None:
        inp = pass_.inp
        self.event: Event = Event.from_wire(inp.event)
        self.events: list[Event] = [Event.from_wire(e) for e in inp.events]
        self.run_id: str = inp.run_id
        self.fn_id: str = inp.fn_id
        self.attempt: int = inp.attempt
        self.logger: logging.LoggerAdapter[logging.Logger] = pass_.logger
        self._pass = pass_

    def patched(self, marker: str) -> bool:
        """True when this run was created on code that declares the patch ``marker``
        (``create_function(patches=[...])``), False for runs created before it. The
        answer is fixed when the run is created: the same on every pass, on any worker.
        Not a step, and not awaited in an ``async def`` handler."""
        inp = self._pass.inp
        if not isinstance(marker, str) or not marker:
            raise ConfigError(f"ctx.patched needs a marker name, not {marker!r}")
        if inp.patches is not None and marker not in inp.patches:
            known = ", ".join(repr(m) for m in [*sorted(inp.patches), marker])
            raise ConfigError(
                f"ctx.patched({marker!r}): function {inp.fn_id!r} does not declare this "
                f"marker; declare it: create_function(..., patches=[{known}])"
            )
        return marker in inp.markers

    def __repr__(self) -> str:
        return (f"<fanout.{type(self).__name__} fn={self.fn_id!r} run={self.run_id!r} "
                f"attempt={self.attempt}>")


class Context(_BaseContext):
    """The context of an ``async def`` handler: the event(s), ids, the attempt, a
    logger, and ``step`` and ``group``, whose tools return coroutines to await."""

    def __init__(self, pass_: Pass) -> None:
        super().__init__(pass_)
        # A cast: mypy does not match ``*args: Any`` against the protocol's typed
        # ``*args`` (a TypeVarTuple); tests/unit/test_typing.py checks what users see.
        self.step: Step = cast("Step", StepTools(pass_))
        self.group: Group = GroupTools(pass_)


class ContextSync(_BaseContext):
    """The context of a ``def`` handler: the event(s), ids, the attempt, a logger, and
    ``step`` and ``group``, whose tools return their values."""

    def __init__(self, pass_: Pass) -> None:
        super().__init__(pass_)
        self.step: StepSync = cast("StepSync", StepTools(pass_))  # as in Context
        self.group: GroupSync = GroupTools(pass_)


def context_for(pass_: Pass) -> Context | ContextSync:
    """The context a pass's handler receives: :class:`Context` for an ``async def``
    handler, :class:`ContextSync` for a ``def`` one."""
    return Context(pass_) if pass_.is_async else ContextSync(pass_)
