"""How long the timer thread sleeps between scans (no Redis: the computation only)."""

from __future__ import annotations

import time
from typing import Any

from fanout._celery.timers import MIN_WAIT, TimerThread


def thread_with_next(next_due: float | None) -> TimerThread:
    t = TimerThread(lambda: None, None, 30.0)  # type: ignore[arg-type, return-value]
    t._next_due = next_due
    return t


def test_no_timer_waits_one_poll_interval() -> None:
    t = thread_with_next(None)
    assert t.next_wait() == t.poll_interval


def test_a_distant_timer_still_polls_for_timers_added_elsewhere() -> None:
    t = thread_with_next(time.time() + 3600)
    assert t.next_wait() == t.poll_interval


def test_a_timer_due_soon_is_waited_for_exactly() -> None:
    t = thread_with_next(time.time() + 0.1)
    assert MIN_WAIT < t.next_wait() <= 0.1


def test_an_overdue_timer_never_makes_a_busy_loop() -> None:
    t = thread_with_next(time.time() - 5)
    assert t.next_wait() == MIN_WAIT


def test_claim_due_returns_the_next_due_time(monkeypatch: Any) -> None:
    """``scan_once`` keeps what ``claim_due`` says of the earliest remaining timer."""

    class Store:
        def claim_due(self, *, rearm_s: float) -> tuple[list[str], int, float | None]:
            return [], 0, 123.5

    t = TimerThread(lambda: Store(), None, 30.0)  # type: ignore[arg-type, return-value]
    assert t.scan_once() == 0
    assert t._next_due == 123.5
