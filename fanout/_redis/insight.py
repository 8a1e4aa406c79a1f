"""Read-only queries behind the dashboard's overview and search: the timer backlog
and the triggering events of a page of runs.  Nothing here writes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .._core.run_record import EVENT
from .replies import text
from .store import Store


@dataclass(frozen=True)
class TimerBacklog:
    """The timer set at one instant: every entry (sleeps, wait timeouts, leases of
    running passes, retries, router watchdogs), how many are due, and the oldest due."""

    total: int
    overdue: int
    oldest_due_at: float | None  # epoch seconds of the oldest overdue entry

    def oldest_age(self, now: float) -> float:
        """Seconds the oldest overdue timer has waited past its time (0 when none)."""
        return 0.0 if self.oldest_due_at is None else max(0.0, now - self.oldest_due_at)


def timer_backlog(store: Store, now: float) -> TimerBacklog:
    """One pipeline: ZCARD, ZCOUNT up to ``now`` and the lowest score of each timer set."""
    pipe = store.r.pipeline(transaction=False)
    store.queue_timer_counts(pipe, int(now * 1000))
    return TimerBacklog(*store.timer_counts(pipe.execute()))


def run_events(store: Store, run_ids: Sequence[str]) -> list[dict[str, Any] | None]:
    """The triggering event of each run (one pipelined HGET per run); ``None`` for a
    run that is gone or whose event cannot be read."""
    if not run_ids:
        return []
    pipe = store.r.pipeline(transaction=False)
    for rid in run_ids:
        pipe.hget(store.keys.run(rid), EVENT)
    out: list[dict[str, Any] | None] = []
    for raw in pipe.execute():
        try:
            value = json.loads(text(raw)) if raw is not None else None
        except ValueError:
            value = None
        out.append(value if isinstance(value, dict) else None)
    return out
