"""The watchdog's rule for never-started runs (fanout._celery.backlog), on a broker
whose queue depths the test sets: defer while the queue may still hold the message,
offer again once it was seen empty after the run was created plus a grace period, or
once the run has waited MAX_DEFER."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fanout._celery.backlog import MAX_DEFER, Backlog


class Probe(Backlog):
    def __init__(self) -> None:
        super().__init__(None)  # type: ignore[arg-type]
        self.depth: int | None = 0

    def step_queue(self, fn_key: str, run_id: str, seq: int) -> str:
        return "celery"

    def depths(self, queues: Sequence[str]) -> dict[str, Any]:
        return {q: self.depth for q in queues}


def test_a_run_waits_while_its_queue_holds_messages_and_is_offered_after_it_drains() -> None:
    b, runs = Probe(), {"r1": ("a:f", 0, 100.0)}
    b.depth = 500
    assert b.sort(runs, watchdog=20, grace=4, now=120) == ([], {"r1": 140_000})
    b.depth = 0  # drained at 140: the message left the queue; wait the grace period
    assert b.sort(runs, watchdog=20, grace=4, now=140) == ([], {"r1": 144_000})
    b.depth = 30  # new messages arrived since; the empty queue at 140 still proves it
    assert b.sort(runs, watchdog=20, grace=4, now=144) == (["r1"], {})


def test_an_empty_queue_seen_before_the_run_was_created_proves_nothing() -> None:
    b = Probe()
    b.depth = 0
    assert b.sort({"old": ("a:f", 0, 10.0)}, watchdog=20, grace=4, now=50) == ([], {"old": 54_000})
    b.depth = 7
    # "new" was created after the only empty sighting (50): its message may be queued.
    assert b.sort({"new": ("a:f", 0, 51.0)}, watchdog=20, grace=4, now=71) == ([], {"new": 91_000})


def test_a_broker_that_cannot_say_and_a_run_queued_too_long_are_offered() -> None:
    b = Probe()
    b.depth = None
    assert b.sort({"r": ("a:f", 0, 100.0)}, watchdog=20, grace=4, now=120) == (["r"], {})
    b.depth = 10**6
    late = 100.0 + MAX_DEFER
    assert b.sort({"r": ("a:f", 0, 100.0)}, watchdog=20, grace=4, now=late) == (["r"], {})
