"""The run transitions on the in-memory store (the test harness's) and on the Redis
store (a worker's, on a real Redis and on the embedded store) answer the same.

Each story is a list of transitions; it runs on every store, and the replies, the
run's hash (times replaced by their names) and the timers (the members armed) must
be the same everywhere.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from fanout._core.memory_store import MemoryRunStore
from fanout._core.records import StepRecord
from fanout._core.run_record import new_run_fields
from fanout._core.run_store import RunStore, branch_timer
from fanout._redis.memory import memory_redis
from fanout._redis.store import Store
from tests.support import redis_for

RUN = "R1"
LEASE_MS = 4_102_444_800_000  # 2100: a lease that does not expire during a test
LATER = 4_102_444_800.0
TIMES = {"t0", "t1", "qa", "c"}  # written from the store's own clock


def fields() -> dict[str, Any]:
    return new_run_fields("f", "a", "a:f", {"id": "E1", "name": "e"}, event_ids=["E1"],
                          created="12.5")


def step(sid: str, st: str, **kw: Any) -> StepRecord:
    return StepRecord(id=sid, kind=kw.pop("kind", "run"), status=st, attempts=1, **kw)


Story = list[Callable[[RunStore], Any]]

STORIES: dict[str, Story] = {
    "a run from its creation to its end": [
        lambda s: s.create_runs([(RUN, "a:f", fields())]),
        lambda s: s.create_runs([(RUN, "a:f", fields())]),  # a redelivered router message
        lambda s: s.begin_pass(RUN, "t1", LEASE_MS, 0),
        lambda s: s.begin_pass(RUN, "t2", LEASE_MS, None),  # busy
        lambda s: s.save_step(RUN, "t1", step("a", "completed", output=1)),
        lambda s: s.save_step(RUN, "t1", step("a", "failed")),  # the first final wins
        lambda s: s.save_step(RUN, "x", step("b", "completed")),  # not our lease
        lambda s: s.end_pass(RUN, "t1", "queued", fields={
            "takeovers": 0, "s:b": json.dumps(step("b", "completed").to_json())}),
        lambda s: s.begin_pass(RUN, "t3", LEASE_MS, 0),  # stale
        lambda s: s.begin_pass(RUN, "t3", LEASE_MS, 1),
        lambda s: s.end_pass(RUN, "t3", "sleeping", wake=LATER),
        lambda s: s.begin_pass(RUN, "t4", LEASE_MS, None),  # early
        lambda s: s.begin_pass(RUN, "t4", LEASE_MS, 2),
        lambda s: s.finish_run(RUN, "t4", "completed", {"out": "3", "err": ""}),
        lambda s: s.finish_run(RUN, "", "failed", {}),  # ended already
        lambda s: s.begin_pass(RUN, "t5", LEASE_MS, None),  # terminal
        lambda s: s.begin_pass("R0", "t5", LEASE_MS, None),  # missing
    ],
    "a wait resolved from outside": [
        lambda s: s.create_runs([(RUN, "a:f", fields())]),
        lambda s: s.begin_pass(RUN, "t1", LEASE_MS, 0),
        lambda s: s.save_step(RUN, "t1", step("w", "waiting", kind="wait", started_at=3.0,
                                              extra={"event": "e", "until": LATER})),
        lambda s: s.end_pass(RUN, "t1", "waiting", wake=LATER, awaiting="w"),
        lambda s: s.resolve_step(RUN, step("w", "completed", kind="wait", output={"id": "E2"})),
        lambda s: s.resolve_step(RUN, step("w", "completed", kind="wait")),  # done
        lambda s: s.begin_pass(RUN, "t2", LEASE_MS, None),
        lambda s: s.finish_run(RUN, "t2", "completed", {}),
        lambda s: s.resolve_step(RUN, step("w", "completed")),  # ended
    ],
    "resolved before the pass ends": [
        lambda s: s.create_runs([(RUN, "a:f", fields())]),
        lambda s: s.begin_pass(RUN, "t1", LEASE_MS, 0),
        lambda s: s.save_step(RUN, "t1", step("i", "waiting", kind="invoke")),
        lambda s: s.resolve_step(RUN, step("i", "completed", kind="invoke", output=5)),  # set
        lambda s: s.end_pass(RUN, "t1", "waiting", wake=LATER, awaiting="i"),
    ],
    "a cancel requested during a pass": [
        lambda s: s.create_runs([(RUN, "a:f", {**fields(), "cx": '{"type":"Cancelled"}'})]),
        lambda s: s.begin_pass(RUN, "t1", LEASE_MS, 0),  # cancel
        lambda s: s.finish_run(RUN, "", "cancelled", {"err": '{"type":"Cancelled"}'}),
    ],
    "a completion with a cancel pending": [
        lambda s: s.create_runs([(RUN, "a:f", fields())]),
        lambda s: s.begin_pass(RUN, "t1", LEASE_MS, 0),
        lambda s: s.end_pass(RUN, "t1", "queued", fields={"cx": '{"m":1}'}),  # -1
        lambda s: s.save_step(RUN, "t1", step("a", "completed")),  # cancel
        lambda s: s.finish_run(RUN, "t1", "completed", {"out": "1"}),  # 2
    ],
    "parallel branches join": [
        lambda s: s.create_runs([(RUN, "a:f", fields())]),
        lambda s: s.begin_pass(RUN, "t1", LEASE_MS, 0),
        lambda s: s.save_step(RUN, "t1", step("a", "queued", extra={"group": ["a", "b"]})),
        lambda s: s.save_step(RUN, "t1", step("b", "queued", extra={"group": ["a", "b"]})),
        lambda s: s.arm(branch_timer(RUN, "a"), LATER),
        lambda s: s.end_pass(RUN, "t1", "running"),
        lambda s: s.begin_branch(RUN, "a", "ta", LEASE_MS),
        lambda s: s.begin_branch(RUN, "a", "tx", LEASE_MS),  # busy
        lambda s: s.save_step(RUN, "ta", step("a", "completed", extra={"group": ["a", "b"]}),
                              lease_field="bl:a", group=["a", "b"]),
        lambda s: s.end_branch(RUN, "a", "ta"),
        lambda s: s.begin_branch(RUN, "a", "ty", LEASE_MS),  # done, not joined
        lambda s: s.begin_branch(RUN, "b", "tb", LEASE_MS),
        lambda s: s.save_step(RUN, "tb", step("b", "completed", extra={"group": ["a", "b"]}),
                              lease_field="bl:b", group=["a", "b"]),  # joined
        lambda s: s.end_branch(RUN, "b", "tx"),  # not ours: kept
        lambda s: s.end_branch(RUN, "b", "tb"),
        lambda s: s.begin_branch(RUN, "b", "tz", LEASE_MS),  # done, joined
        lambda s: s.retime(int(LATER * 1000), {branch_timer(RUN, "a"): None}),
        lambda s: s.begin_pass(RUN, "t2", LEASE_MS, None),
    ],
    "an invoke inside a race brings the run back": [
        lambda s: s.create_runs([(RUN, "a:f", fields())]),
        lambda s: s.begin_pass(RUN, "t1", LEASE_MS, 0),
        lambda s: s.save_step(RUN, "t1", step("i", "waiting", kind="invoke", extra={
            "group": ["i", "j"], "race": True})),
        lambda s: s.end_pass(RUN, "t1", "running"),
        lambda s: s.resolve_step(RUN, step("i", "completed", kind="invoke", output=1)),
    ],
    "a takeover after a worker died": [
        lambda s: s.create_runs([(RUN, "a:f", fields())]),
        lambda s: s.begin_pass(RUN, "t1", 1_000, 0),  # a lease that has expired
        lambda s: s.begin_pass(RUN, "t2", LEASE_MS, None),
        lambda s: s.end_pass(RUN, "t1", "queued"),  # the dead worker's token: lost
        lambda s: s.end_pass(RUN, "t2", "queued", fields={"takeovers": 0}),
    ],
    "a pass goes on to the next step in its task": [
        lambda s: s.create_runs([(RUN, "a:f", fields())]),
        lambda s: s.begin_pass(RUN, "t1", LEASE_MS, 0),
        lambda s: s.go_on(RUN, "t1", LEASE_MS - 1, {  # the records written, seq 1
            "takeovers": 0, "s:a": json.dumps(step("a", "completed", output=1).to_json())}),
        lambda s: s.go_on(RUN, "x", LEASE_MS, {"s:b": "{}"}),  # not our lease: lost
        lambda s: s.save_step(RUN, "t1", step("b", "completed")),  # still our lease
        lambda s: s.go_on(RUN, "t1", 0, {"vs": '["v1"]'}),  # seq 2, the lease kept
        lambda s: s.begin_pass(RUN, "t2", LEASE_MS, 2),  # busy: the lease is held
        lambda s: s.finish_run(RUN, "t1", "completed", {"out": "2"}),
        lambda s: s.go_on(RUN, "t1", LEASE_MS, {}),  # ended: lost
    ],
    "a cancel requested while a pass goes on": [
        lambda s: s.create_runs([(RUN, "a:f", fields())]),
        lambda s: s.begin_pass(RUN, "t1", LEASE_MS, 0),
        lambda s: s.go_on(RUN, "t1", LEASE_MS, {"cx": '{"m":1}', "s:a": json.dumps(
            step("a", "completed").to_json())}),  # cancel: written, the lease kept
        lambda s: s.finish_run(RUN, "t1", "cancelled", {"err": '{"m":1}'}),
    ],
}


def _normal(value: Any) -> Any:
    """A reply with the store's own times named, records parsed."""
    if isinstance(value, StepRecord):
        return value.to_json()
    if isinstance(value, dict):
        return {k: ("<t>" if k in TIMES else _parsed(v)) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_normal(v) for v in value]
    return value


def _parsed(v: Any) -> Any:
    if isinstance(v, str) and v.startswith("{") and '"st"' in v:
        return json.loads(v)
    return v


def _timers(store: RunStore) -> list[str]:
    if isinstance(store, MemoryRunStore):
        return sorted(store.timers)
    assert isinstance(store, Store)
    return sorted(m.decode() for key in store.keys.timer_keys for m in store.r.zrange(key, 0, -1))


def _play(store: RunStore, story: Story) -> list[Any]:
    out = []
    for i, move in enumerate(story):
        out.append((i, _normal(move(store)), _normal(store.run_fields(RUN)), _timers(store)))
    return out


@pytest.fixture(scope="module")
def redis_client(clean_db: redis.Redis) -> redis.Redis:
    return redis_for(__name__)


def _stores(real: redis.Redis) -> Iterator[tuple[str, RunStore]]:
    real.flushdb()
    yield "redis", Store(real, prefix=f"c{uuid.uuid4().hex[:6]}")
    yield "fakeredis", Store(memory_redis(f"memory://run-contract-{uuid.uuid4().hex}"))


@pytest.mark.parametrize("name", list(STORIES))
def test_the_stores_answer_alike(redis_client: redis.Redis, name: str) -> None:
    expected = _play(MemoryRunStore(), STORIES[name])
    for label, store in _stores(redis_client):
        got = _play(store, STORIES[name])
        for want, have in zip(expected, got, strict=True):
            assert have == want, f"{label}, move {want[0]} of {name!r}"


def test_the_comparison_sees_a_difference(redis_client: redis.Redis) -> None:
    class Off(MemoryRunStore):
        def end_pass(self, *a: Any, **kw: Any) -> Any:
            seq, resolved = super().end_pass(*a, **kw)
            return seq, not resolved

    story = STORIES["a run from its creation to its end"]
    assert _play(Off(), story) != _play(MemoryRunStore(), story)
