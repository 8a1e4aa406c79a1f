"""The run record: one builder for a new run's fields, named fields for the hash."""

from __future__ import annotations

import json

from fanout._core import run_record as rr
from fanout._core.run_view import to_run_info


def test_a_new_run_is_queued_at_its_first_pass_with_its_trigger() -> None:
    event = {"name": "app/signup", "id": "E1", "data": {"n": 1}}
    fields = rr.new_run_fields("f", "a", "a:f", event, event_ids=["E1"], created="12.5")
    # The order is the order of the create_run script's arguments (the Redis trace).
    assert list(fields) == ["st", "fn", "app", "fk", "ev", "event", "c", "seq", "att"]
    assert fields[rr.ST] == "queued" and fields[rr.SEQ] == "0" and fields[rr.ATTEMPT] == "0"
    assert json.loads(fields[rr.EV]) == ["E1"] and json.loads(fields[rr.EVENT]) == event
    assert rr.PARENT not in fields and rr.INVOKER not in fields


def test_a_child_run_names_its_parent_and_invoker() -> None:
    fields = rr.new_run_fields("f", "a", "a:f", {"id": "E2"}, event_ids=["E2"], created="1",
                               parent_run_id="P1", invoker={"run": "P1", "step": "s"})
    assert list(fields)[-2:] == ["par", "inv"]
    assert fields[rr.PARENT] == "P1" and json.loads(fields[rr.INVOKER]) == {"run": "P1", "step": "s"}


def test_every_named_field_is_in_the_typed_record() -> None:
    names = {v for k, v in vars(rr).items() if k.isupper() and isinstance(v, str) and not k.endswith(("_PREFIX", "_SUFFIX"))}
    assert names == set(rr.RunRecord.__annotations__)
    assert rr.step_field("x") == "s:x" and rr.branch_lease_field("x") == "bl:x"


def test_a_run_hash_reads_back_as_run_info() -> None:
    fields = rr.new_run_fields("f", "a", "a:f", {"id": "E3"}, event_ids=["E3"], created="100.0")
    fields[rr.STEP_PREFIX + "one"] = json.dumps({"id": "one", "st": "completed", "seq": 0})
    info = to_run_info("R1", fields)
    assert (info.fn_id, info.app_id, info.status, info.event_ids) == ("f", "a", "queued", ["E3"])
    assert [s.step_id for s in info.steps] == ["one"] and info.ended_at is None
