"""What an event does besides starting runs, for ``fanout send`` to say so: the
``wait_for_event`` steps it satisfies (the runs it resumes) and the functions whose
``cancel=`` names it.

The waits are read before the event is sent, with the router's own matching
(``fanout/_celery/routing.py``), so a send can list the runs it resumes; after the
send, :func:`received` tells whether a run's wait got this event.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._celery.runtime import Runtime
from .._core.waits import wait_bucket, wait_matches


@dataclass(frozen=True)
class Waiting:
    """A run whose ``wait_for_event`` step the event satisfies."""

    run_id: str
    fn_key: str
    step_id: str

    def to_json(self) -> dict[str, str]:
        return {"run_id": self.run_id, "fn_key": self.fn_key, "step_id": self.step_id}


def waiting_runs(rt: Runtime, event: Mapping[str, Any]) -> list[Waiting]:
    """The open waits ``event`` (its wire form, with ``ts``) satisfies, oldest run first."""
    waits = rt.store.waits
    name = str(event.get("name"))
    keys: list[tuple[str, str | None]] = [(name, None)]
    for path in waits.paths([name]).get(name, []):
        bucket = wait_bucket(path, event)
        if bucket is not None:
            keys.append((name, bucket))
    now, ts_ms = time.time(), event.get("ts") or 0
    found: dict[str, Waiting] = {}
    for specs in waits.open(keys).values():
        for spec in specs.values():
            if float(spec.get("until", 0)) < now or ts_ms < spec.get("since", 0) * 1000:
                continue
            if not wait_matches(spec, spec.get("trigger") or {}, event):
                continue
            run_id = str(spec["run"])
            found.setdefault(run_id, Waiting(run_id, str(spec["fk"]), str(spec["step"])))
    return sorted(found.values(), key=lambda w: w.run_id)


def cancelling_functions(rt: Runtime, name: str) -> list[str]:
    """The functions whose ``cancel=`` names this event (their matching runs end)."""
    return sorted({fn.key for fn, _i, _c in rt.cancel_index.get(name, ())})


def received(rt: Runtime, wait: Waiting, event_id: str) -> bool | None:
    """Whether the run's wait got this event: True, False (it got another event,
    timed out or the run ended without it), or None while it still waits."""
    info = rt.store.run_info(wait.run_id)
    if info is None:
        return False
    step = next((s for s in info.steps if s.step_id == wait.step_id), None)
    if step is not None and step.status == "completed":
        output = step.output
        return isinstance(output, Mapping) and output.get("id") == event_id
    return False if info.done else None
