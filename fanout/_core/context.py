"""What a handler receives: ``fanout.Context``, the same for ``def`` and ``async def``
handlers (``fanout.AsyncContext`` in ``step_types.py`` is what a type checker sees of
it in an ``async def`` one)."""

from __future__ import annotations

import logging

from .._errors import ConfigError
from .engine import Pass
from .event import Event
from .group_tools import GroupTools
from .step_tools import StepTools
from .step_types import SyncGroup, SyncStep

__all__ = ["Context"]


class Context:
    """What a handler receives: the event(s), ids, the attempt, a logger, ``step`` and ``group``."""

    def __init__(self, pass_: Pass) -> None:
        inp = pass_.inp
        self.event: Event = Event.from_wire(inp.event)
        self.events: list[Event] = [Event.from_wire(e) for e in inp.events]
        self.run_id: str = inp.run_id
        self.fn_id: str = inp.fn_id
        self.attempt: int = inp.attempt
        self.logger: logging.LoggerAdapter = pass_.logger  # type: ignore[type-arg]
        # One StepTools and one GroupTools serve both kinds of handler; what a type
        # checker sees is the sync view here and the async one in AsyncContext.
        self.step: SyncStep = StepTools(pass_)
        self.group: SyncGroup = GroupTools(pass_)
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
        return f"<fanout.Context fn={self.fn_id!r} run={self.run_id!r} attempt={self.attempt}>"
