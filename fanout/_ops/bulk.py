"""Choosing what a bulk replay replays: the latest run of each event, once (the rule
itself is in ``fanout/_core/replay_plan.py``, shared with the bulk jobs' batches)."""

from __future__ import annotations

from collections.abc import Sequence

from .._core.replay_plan import ReplayPlan
from .._core.replay_plan import plan_replays as _plan
from .._redis.history import History, RunSummary


def plan_replays(history: History, matched: Sequence[RunSummary], *,
                 include_replays: bool = False) -> ReplayPlan[RunSummary]:
    """Pick, among ``matched`` runs, the latest one of each (function, event) that is
    still the latest run of that function for that event."""
    return _plan(history.runs_of_event, matched, include_replays=include_replays)


__all__ = ["ReplayPlan", "plan_replays"]
