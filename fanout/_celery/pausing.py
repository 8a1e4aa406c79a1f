"""Resuming a paused function: its parked passes go back to the broker.

Pausing itself, and parking the passes that arrive meanwhile, is ``paused.py``.
Resuming hands the parked passes back oldest first, where the function's flow
control applies as usual; ``skip_backlog`` records the runs that never started as
skipped instead.
"""

from __future__ import annotations

import logging

from .._core.run_record import ATTEMPT, is_step_field
from . import endings
from .runtime import Runtime

log = logging.getLogger("fanout")


def resume(rt: Runtime, fn_key: str, *, skip_backlog: bool = False) -> tuple[int, int]:
    """Resume; returns (passes handed back, runs recorded as skipped)."""
    resumed = skipped = 0
    for run_id, seq in rt.paused.resumed(fn_key):
        if skip_backlog and _never_started(rt, run_id):
            endings.finish(rt, run_id, "", "skipped", None, {
                "type": "FunctionPaused",
                "message": "the run arrived while its function was paused, and the "
                           "function was resumed with its backlog skipped",
            })
            skipped += 1
        else:
            rt.publisher.enqueue(fn_key, run_id, seq)
            resumed += 1
    log.warning("fanout: %s resumed: %d pass(es) handed back, %d run(s) skipped",
                fn_key, resumed, skipped)
    return resumed, skipped


def _never_started(rt: Runtime, run_id: str) -> bool:
    fields = rt.store.run_fields(run_id)
    return bool(fields) and fields.get(ATTEMPT, "0") == "0" and not any(
        is_step_field(k) for k in fields)
