"""How runs end: finishing, cancelling, and telling an invoking parent.

Every terminal status goes through :func:`finish` (a pass ended the run) or
:func:`cancel` (a request between passes); both release what the run held in
flow control, emit the ``fanout/function.*`` system events and resolve the
parent's ``invoke`` step.  Flow control calls :func:`emit_system_events` once it
has given back what the run held.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from .._core.event import Event, dumps, prepare_batch
from .._core.flow import SYSTEM_CANCELLED, SYSTEM_FAILED, SYSTEM_FINISHED, is_system_event
from .._core.ids import derived_event_id
from .._core.records import StepRecord, child_error
from .._core.run_record import APP, CANCEL, ERROR, EVENT, FK, FN, INVOKER, OUTPUT
from .._errors import EventError
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
    ended = rt.store.finish_run(run_id, token, status, values)
    if not ended:
        return
    if ended == 2:  # a cancel matched while the last pass ran: the run is cancelled
        status, error = "cancelled", cancel_reason(rt, run_id)
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
        rec.status, rec.error = "failed", child_error(status, error)
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


# -- system events ---------------------------------------------------------------------------


def _subscribed(rt: Runtime, name: str) -> bool:
    """Whether a function of this app is triggered by ``name`` (no Redis call: the
    end of every run asks)."""
    return any(True for _ in rt.index.candidates(name))


def emit_system_events(rt: Runtime, run_id: str, status: str, fields: dict[str, str],
                       output: Any, error: dict[str, Any] | None) -> None:
    """Send the ``fanout/function.*`` events of a run that ended, to the functions of
    this app that listen for them (never for a run a system event started)."""
    names = {"failed": [SYSTEM_FAILED, SYSTEM_FINISHED], "completed": [SYSTEM_FINISHED],
             "cancelled": [SYSTEM_CANCELLED]}.get(status, [])
    if not names:
        return
    trigger = json.loads(fields.get(EVENT, "{}"))
    if is_system_event(trigger.get("name")):
        return  # a run started by a system event emits none (no loops)
    names = [n for n in names if _subscribed(rt, n)]
    if not names:
        return
    data: dict[str, Any] = {
        "function_id": fields.get(FN, ""), "app_id": fields.get(APP, ""),
        "run_id": run_id, "status": status, "event": trigger,
    }
    if error is not None:
        data["error"] = error
    if status == "completed":
        data["result"] = output
    try:
        prepared = _system_batch(names, run_id, data)
    except EventError:  # too large: keep the ids and the error, drop the payloads
        data.pop("result", None)
        data["event"] = {k: trigger.get(k) for k in ("name", "id", "ts")}
        prepared = _system_batch(names, run_id, data)
    rt.publish(prepared)


def _system_batch(names: list[str], run_id: str, data: dict[str, Any]) -> list[tuple[Event, str]]:
    events = [Event(name=n, data=data, id=derived_event_id(run_id, n, 0)) for n in names]
    return prepare_batch(events, allow_reserved=True)
