"""The engine's view of Redis and the broker during one pass or parallel branch.

:func:`fanout._core.driver.run_pass` talks to a sink; this one writes step records
(deferred to the end of the pass), publishes sent events, registers waits and
starts invoked runs through the :class:`~fanout._celery.runtime.Runtime`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .._core.engine import SaveRejected
from .._core.event import INVOKE_EVENT, Event, dumps, prepare_batch
from .._core.function import FunctionDef
from .._core.ids import derived_event_id, run_id_for
from .._core.records import StepRecord
from .runlog import attempt_failed

if TYPE_CHECKING:
    from .runtime import Runtime


class PassSink:
    """The engine's view of Redis and the broker during one pass or branch."""

    def __init__(
        self, rt: Runtime, fn: FunctionDef, run_id: str, token: str, fields: dict[str, str],
        branch: str | None = None, group: Sequence[str] = (),
    ) -> None:
        self.rt, self.fn, self.run_id, self.token, self.fields = rt, fn, run_id, token, fields
        self.lease_field = "lease" if branch is None else f"bl:{branch}"
        self.group = group
        self.joined = False
        self.deferred: list[StepRecord] = []
        self.warnings: list[dict[str, Any]] = []

    def versioning_warning(self, entry: dict[str, Any]) -> None:
        """A versioning warning (order changed, steps unreached): recorded on the run
        with the end of the pass."""
        self.warnings.append(entry)

    @property
    def max_event_bytes(self) -> int:
        """The client's limit on one event's size, for ``ctx.step.send_event``."""
        return self.fn.max_event_bytes

    def defer_step(self, record: StepRecord) -> None:
        """Keep a step record to write with the end of the pass (see Pass.finish)."""
        self.deferred.append(record)

    def step_failed(self, record: StepRecord, attempts: int) -> None:
        """An attempt of a step failed: a WARNING on ``fanout.failures``."""
        attempt_failed(self.fn.key, self.run_id, record.id, record.attempts, attempts,
                       record.error, record.retry_at if record.status == "retrying" else None)

    def flush(self) -> None:
        records, self.deferred = self.deferred, []
        for rec in records:
            self.save_step(rec)

    def take_deferred(self) -> dict[str, str]:
        """The deferred records as run-hash fields, for end_pass / finish_run."""
        records, self.deferred = self.deferred, []
        return {f"s:{rec.id}": dumps(rec.to_json()) for rec in records}

    def save_step(self, record: StepRecord) -> StepRecord | None:
        head, existing, joined = self.rt.store.save_step(
            self.run_id, self.token, record, lease_field=self.lease_field, group=self.group
        )
        if head == "lost":
            raise SaveRejected(self.run_id)
        if head == "cancel":
            raise SaveRejected(self.run_id, cancelled=True)
        self.joined = self.joined or joined
        return existing

    def send_events(self, step_id: str, events: list[tuple[Event, str]]) -> list[str]:
        return self.rt.publish(events, parent_run_id=self.run_id)

    def register_wait(self, step_id: str, spec: dict[str, Any]) -> dict[str, Any] | None:
        from .._core.waits import wait_bucket, wait_matches

        trigger = self.rt.parse_json(self.fields.get("event", "{}"))
        bucket = wait_bucket(spec.get("match"), trigger)
        full = {**spec, "run": self.run_id, "step": step_id, "fk": self.fn.key,
                "trigger": trigger, "started": time.time(), "bucket": bucket}
        store, member = self.rt.store, f"{self.run_id}:{step_id}"
        store.register_wait(spec["event"], member, full, bucket)
        if spec.get("since", 0) < time.time() - 0.001:  # a lookback was asked for
            for ev in store.events_since(spec["event"], spec["since"]):
                if wait_matches(spec, trigger, ev):
                    store.drop_waits(spec["event"], [member], bucket)
                    return ev
        return None

    def drop_wait(self, step_id: str, event_name: str) -> None:
        from .._core.waits import wait_bucket

        raw = self.fields.get(f"s:{step_id}")
        match = (self.rt.parse_json(raw).get("x") or {}).get("match") if raw else None
        trigger = self.rt.parse_json(self.fields.get("event", "{}"))
        self.rt.store.drop_waits(event_name, [f"{self.run_id}:{step_id}"], wait_bucket(match, trigger))

    def start_invoke(self, step_id: str, fn_ref: Any, data: dict[str, Any], seq: int) -> str:
        child = self.rt.resolve_function(fn_ref, self.fn.app_id)
        eid = derived_event_id(self.run_id, step_id, 0)
        prepared = prepare_batch(
            Event(name=INVOKE_EVENT, data=data, id=eid), allow_reserved=True
        )
        invoker = {"run": self.run_id, "step": step_id, "seq": seq, "fk": self.fn.key}
        self.rt.publish(prepared, parent_run_id=self.run_id, target=child.key, invoker=invoker)
        return run_id_for(eid, child.key)
