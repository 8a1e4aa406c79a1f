"""The engine's view of Redis and the broker during one pass or parallel branch, on a
worker: :class:`~fanout._core.lifecycle.RunSink` (step records, saved or deferred to
the end of the pass) with the worker's outside world: sent events are published,
waits registered where the router finds them, invoked runs started.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from .._core.event import INVOKE_EVENT, Event, prepare_batch
from .._core.function import FunctionDef
from .._core.ids import derived_event_id, run_id_for
from .._core.lifecycle import RunSink
from .._core.records import StepRecord
from .._core.run_record import EVENT, step_field
from .._core.waits import wait_bucket, wait_matches
from .runlog import attempt_failed
from .runtime import Runtime


class PassSink(RunSink):
    """A worker's sink for one pass or branch."""

    def __init__(
        self, rt: Runtime, fn: FunctionDef, run_id: str, token: str, fields: dict[str, str],
        branch: str | None = None, group: Sequence[str] = (),
    ) -> None:
        super().__init__(rt.store, fn, run_id, token, fields, branch, group)
        self.rt = rt

    def step_failed(self, record: StepRecord, attempts: int) -> None:
        """An attempt of a step failed: a WARNING on ``fanout.failures``."""
        attempt_failed(self.fn.key, self.run_id, record.id, record.attempts, attempts,
                       record.error, record.retry_at if record.status == "retrying" else None)

    def send_events(self, step_id: str, events: list[tuple[Event, str]]) -> list[str]:
        return self.rt.publisher.publish(events, parent_run_id=self.run_id)

    def register_wait(self, step_id: str, spec: dict[str, Any]) -> dict[str, Any] | None:
        trigger = json.loads(self.fields.get(EVENT, "{}"))
        bucket = wait_bucket(spec.get("match"), trigger)
        full = {**spec, "run": self.run_id, "step": step_id, "fk": self.fn.key,
                "trigger": trigger, "started": time.time(), "bucket": bucket}
        store, member = self.rt.store, f"{self.run_id}:{step_id}"
        store.waits.register(spec["event"], member, full, bucket)
        if spec.get("since", 0) < time.time() - 0.001:  # a lookback was asked for
            for ev in store.events_since(spec["event"], spec["since"]):
                if wait_matches(spec, trigger, ev):
                    store.waits.drop(spec["event"], [member], bucket)
                    return ev
        return None

    def drop_wait(self, step_id: str, event_name: str) -> None:
        raw = self.fields.get(step_field(step_id))
        match = (json.loads(raw).get("x") or {}).get("match") if raw else None
        trigger = json.loads(self.fields.get(EVENT, "{}"))
        self.rt.store.waits.drop(event_name, [f"{self.run_id}:{step_id}"],
                                 wait_bucket(match, trigger))

    def start_invoke(self, step_id: str, fn_ref: Any, data: dict[str, Any], seq: int) -> str:
        child = self.rt.resolve_function(fn_ref, self.fn.app_id)
        eid = derived_event_id(self.run_id, step_id, 0)
        prepared = prepare_batch(
            Event(name=INVOKE_EVENT, data=data, id=eid), allow_reserved=True
        )
        invoker = {"run": self.run_id, "step": step_id, "seq": seq, "fk": self.fn.key}
        self.rt.publisher.publish(prepared, parent_run_id=self.run_id, target=child.key,
                                  invoker=invoker)
        return run_id_for(eid, child.key)
