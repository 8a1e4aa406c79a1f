"""Choosing what a bulk replay replays: the latest run of each event, once.

A bulk replay over filters (``fanout replay --fn F --status failed``) must not
replay an event twice, nor replay a replay: each replay is a new run of the same
event, and it would match the same filters next time. So, for each function and
event among the matching runs, only the newest run of that function for that event
is replayed, and only when nothing newer exists (a newer run means the event was
replayed already, whatever became of it). A run that is itself a replay or a rerun
is replayed only when asked (``include_replays``).

Pure: the runs of an event are read through a callable, so a bulk job's batches
(``fanout/_celery/bulk_jobs.py``) and the CLI's dry run apply the same rule.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar


class RunLike(Protocol):
    @property
    def run_id(self) -> str: ...
    @property
    def fn_key(self) -> str: ...
    @property
    def created_at(self) -> float | None: ...
    @property
    def replay_of(self) -> str | None: ...
    @property
    def event_ids(self) -> Sequence[str]: ...


R = TypeVar("R", bound=RunLike)


@dataclass
class ReplayPlan(Generic[R]):
    """The runs to replay, and why the other matching runs are left alone."""

    chosen: list[R] = field(default_factory=list)
    replays: list[str] = field(default_factory=list)  # matched, but a replay or rerun
    superseded: list[str] = field(default_factory=list)  # the event has a newer run

    @property
    def skipped(self) -> int:
        return len(self.replays) + len(self.superseded)


def _newer(a: RunLike, b: RunLike) -> bool:
    return (a.created_at or 0.0, a.run_id) > (b.created_at or 0.0, b.run_id)


def plan_replays(runs_of_event: Callable[[str], Sequence[R]], matched: Sequence[R], *,
                 include_replays: bool = False, ignore: Collection[str] = ()) -> ReplayPlan[R]:
    """Pick, among ``matched`` runs, the latest one of each (function, event) that is
    still the latest run of that function for that event. Runs named in ``ignore``
    (the replays a bulk job started itself, when it redoes a batch) do not count as
    newer runs."""
    plan: ReplayPlan[R] = ReplayPlan()
    groups: dict[tuple[str, str], R] = {}
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
            later = [r for r in runs_of_event(eid)
                     if r.fn_key == fn_key and r.run_id != run.run_id
                     and r.run_id not in ignore and _newer(r, run)]
            if later:
                plan.superseded.append(run.run_id)
                continue
        plan.chosen.append(run)
    plan.chosen.sort(key=lambda r: (r.created_at or 0.0, r.run_id), reverse=True)
    return plan


__all__ = ["ReplayPlan", "RunLike", "plan_replays"]
