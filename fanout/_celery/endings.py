"""How runs end: finishing, cancelling, and telling an invoking parent.

Every terminal status goes through :func:`finish` (a pass ended the run) or
:func:`cancel` (a request between passes); both release what the run held in
flow control, emit the ``fanout/function.*`` system events and resolve the
parent's ``invoke`` step.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .._core.event import dumps
from .._core.records import StepRecord
from .._core.run_record import CANCEL, ERROR, FK, INVOKER, OUTPUT
from .runlog import run_ended

if TYPE_CHECKING:
    from .runtime import Runtime


def cancel_reason(rt: Runtime, run_id: str) -> dict[str, Any]:
    """The error a cancel request recorded for the run."""
    raw = rt.store.run_fields(run_id).get(CANCEL)
    return rt.parse_json(raw) if raw else {"type": "Cancelled", "message": "cancelled"}


def finish(
    rt: Runtime, run_id: str, token: str, status: str, output: Any,
    error: dict[str, Any] | None, fields: dict[str, str] | None = None,
    steps: dict[str, str] | None = None,
) -> None:
    """End a run (writing the pass's deferred step records with it); release what it
    held, emit system events, tell an invoking parent."""
    values: dict[str, Any] = dict(steps or {})
    if status == "completed":
        values[OUTPUT] = dumps(output)
        values[ERROR] = ""  # an earlier attempt's error no longer describes the run
    if error is not None:
        values[ERROR] = dumps(error)
    if not rt.store.finish_run(run_id, token, status, values):
        return
    fields = fields if fields and FK in fields else rt.store.run_fields(run_id)
    run_ended(fields.get(FK, ""), run_id, status, error)
    rt.flow.ended(run_id, status, fields, output, error)
    inv = fields.get(INVOKER)
    if inv:
        tell_parent(rt, rt.parse_json(inv), status, output, error)


def tell_parent(
    rt: Runtime, inv: dict[str, Any], status: str, output: Any, error: dict[str, Any] | None
) -> None:
    """Resolve the parent's ``invoke`` step with how the child run ended."""
    rec = StepRecord(id=inv["step"], kind="invoke", seq=int(inv.get("seq", 0)),
                     ended_at=time.time())
    if status == "completed":
        rec.status, rec.output = "completed", output
    else:
        detail = (error or {}).get("message", status)
        rec.status = "failed"
        rec.error = {"type": "InvokeError", "message": f"the invoked run {status}: {detail}"}
    if rt.store.resolve_step(inv["run"], rec) == "enqueue":
        rt.enqueue(inv["fk"], inv["run"], None)


def cancel(rt: Runtime, run_id: str, reason: str = "cancelled by request") -> str:
    """Cancel a run between steps; returns 'cancelled', 'flagged', 'ended' or 'missing'."""
    error = {"type": "Cancelled", "message": reason}
    head = rt.store.cancel_run(run_id, error)
    if head == "cancelled":
        fields = rt.store.run_fields(run_id)
        rt.flow.ended(run_id, "cancelled", fields, None, error)
        inv = fields.get(INVOKER)
        if inv:
            tell_parent(rt, rt.parse_json(inv), "cancelled", None, error)
    return head
