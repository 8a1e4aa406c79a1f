"""Choosing what a bulk replay replays: the latest run of each event, once.

A bulk replay over filters (``fanout replay --fn F --status failed``) must not
replay an event twice, nor replay a replay: each replay is a new run of the same
event, and it would match the same filters next time. So, for each function and
event among the matching runs, only the newest run of that function for that event
is replayed, and only when nothing newer exists (a newer run means the event was
replayed already, whatever became of it). A run that is itself a replay or a rerun
is replayed only when asked (``include_replays``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .._redis.history import History, RunSummary


@dataclass
class ReplayPlan:
    """The runs to replay, and why the other matching runs are left alone."""

    chosen: list[RunSummary] = field(default_factory=list)
    replays: list[str] = field(default_factory=list)  # matched, but a replay or rerun
    superseded: list[str] = field(default_factory=list)  # the event has a newer run

    @property
    def skipped(self) -> int:
        return len(self.replays) + len(self.superseded)


def _newer(a: RunSummary, b: RunSummary) -> bool:
    return (a.created_at or 0.0, a.run_id) > (b.created_at or 0.0, b.run_id)


def plan_replays(history: History, matched: Sequence[RunSummary], *,
                 include_replays: bool = False) -> ReplayPlan:
    """Pick, among ``matched`` runs, the latest one of each (function, event) that is
    still the latest run of that function for that event."""
    plan = ReplayPlan()
    groups: dict[tuple[str, str], RunSummary] = {}
    for run in matched:
        if run.replay_of and not include_replays:
            plan.replays.append(run.run_id)
            continue
        key = (run.fn_key, run.event_ids[0] if run.event_ids else f"run:{run.run_id}")
        best = groups.get(key)
        if best is None or _newer(run, best):
            if best is not None:
                plan.superseded.append(best.run_id)
            groups[key] = run
        else:
            plan.superseded.append(run.run_id)
    for (fn_key, eid), run in groups.items():
        if not eid.startswith("run:"):
            later = [r for r in history.runs_of_event(eid)
                     if r.fn_key == fn_key and r.run_id != run.run_id and _newer(r, run)]
            if later:
                plan.superseded.append(run.run_id)
                continue
        plan.chosen.append(run)
    plan.chosen.sort(key=lambda r: (r.created_at or 0.0, r.run_id), reverse=True)
    return plan


__all__ = ["ReplayPlan", "plan_replays"]
