"""The run transitions, as a protocol: what a pass asks of the store holding its run.

A run moves through a few atomic transitions; every other layer names them only
through :class:`RunStore`.  The Redis store (``fanout/_redis/store.py``) runs each
as one Lua script; :class:`~fanout._core.memory_store.MemoryRunStore` runs the same
transitions on dicts for the test harness, and a contract test holds the two to
the same replies.  The keys a transition touches are the store's business: a
caller names runs, steps and timers by id.

``P:timers:{t<k>}`` (the recovery timers, in shards) belongs to the same protocol: a pass arms its
run's timer when it takes the lease and when it ends, and what a worker's timer
thread does with them is outside a pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from .records import StepRecord
from .run_record import LEASE


def branch_timer(run_id: str, step_id: str) -> str:
    """The timer member of one parallel branch (a run's own timer is its id)."""
    return f"branch:{run_id}:{step_id}"


class Created(NamedTuple):
    """A run offered to :meth:`RunStore.create_runs`."""

    run_id: str
    created: bool
    #: True when the run must be enqueued: just created, or created earlier and
    #: never started (its first message may have been lost).
    needs_enqueue: bool


class Begun(NamedTuple):
    """What :meth:`RunStore.begin_pass` says: ``ok`` with every field of the run, or
    why not: ``cancel`` (a cancel is pending and no lease is held), ``terminal``,
    ``missing``, ``stale`` (a message for another pass), ``early`` (not due yet),
    ``busy`` (another pass holds the lease)."""

    head: str
    fields: dict[str, str]


class Saved(NamedTuple):
    """What :meth:`RunStore.save_step` says: ``ok``; ``exists`` with the final record
    saved first; ``lost`` (the lease is no longer ours); ``cancel`` (saved, and a
    cancel is pending). ``joined``: every step of the branch's group is final."""

    head: str
    existing: StepRecord | None
    joined: bool


class Ended(NamedTuple):
    """What :meth:`RunStore.end_pass` says: the run's new pass sequence (None: the
    lease was lost; -1: a cancel is pending, the caller finishes the run), and
    whether the step it now waits on was already resolved (the run is queued)."""

    seq: int | None
    resolved: bool


class BranchBegun(NamedTuple):
    """What :meth:`RunStore.begin_branch` says: ``ok`` with the run's fields, ``done``
    (the step is final; ``joined``: so is its whole group), ``busy`` or ``terminal``."""

    head: str
    fields: dict[str, str]
    joined: bool


class RunStore(Protocol):
    """The transitions of a run (each one atomic) and its recovery timers."""

    #: Seconds after which a run handed to the broker is offered again.
    watchdog: float

    def create_runs(self, runs: Sequence[tuple[str, str, Mapping[str, Any]]]) -> list[Created]:
        """Create ``(run id, function key, fields)`` runs, each set-if-absent."""
        ...

    def begin_pass(self, run_id: str, token: str, lease_until_ms: int,
                   seq: int | None) -> Begun:
        """Take the run's lease for one pass (``seq``: the pass a message is for, None
        for a wake-up) and arm its timer at the lease's end."""
        ...

    def save_step(self, run_id: str, token: str, rec: StepRecord, *, lease_field: str = LEASE,
                  group: Sequence[str] = ()) -> Saved:
        """Save a step record under the lease named ``lease_field``; the first final
        record of a step wins."""
        ...

    def end_pass(self, run_id: str, token: str, status: str, *, wake: float | None = None,
                 awaiting: str | None = None, fields: Mapping[str, Any] | None = None) -> Ended:
        """Give the lease back with ``status``, writing ``fields`` (the deferred step
        records among them) first; the timer is armed at ``wake`` or the watchdog."""
        ...

    def go_on(self, run_id: str, token: str, lease_until_ms: int,
              fields: Mapping[str, Any]) -> Begun:
        """End a pass whose run goes on at once and begin the next pass under the same
        lease, renewed to ``lease_until_ms`` (0: kept as it is, with its timer), in one
        atomic step: ``end_pass`` (writing ``fields``, the pass sequence moved on) then
        ``begin_pass``. ``ok`` with the
        run's fields; ``lost`` (the lease is no longer ours: nothing written);
        ``cancel`` (a cancel is pending: ``fields`` written, the lease kept, the caller
        finishes the run as cancelled)."""
        ...

    def finish_run(self, run_id: str, token: str, status: str, fields: Mapping[str, Any]) -> int:
        """End the run (``token`` '' when no lease is held): 1, 0 when the lease was
        lost or the run had ended, 2 when it completed with a cancel pending (it
        ends ``cancelled``)."""
        ...

    def resolve_step(self, run_id: str, rec: StepRecord) -> str:
        """Finish a waiting step from outside its run: ``enqueue`` (the run needs a
        pass now), ``set``, ``done`` (it was final already) or ``ended``."""
        ...

    def begin_branch(self, run_id: str, step_id: str, token: str,
                     lease_until_ms: int) -> BranchBegun:
        """Take the lease of one parallel branch and arm the branch's timer."""
        ...

    def end_branch(self, run_id: str, step_id: str, token: str) -> None:
        """Give a branch's lease back (if still ours)."""
        ...

    def run_fields(self, run_id: str) -> dict[str, str]:
        """Every field of the run ({} when it is gone)."""
        ...

    def arm(self, member: str, due: float) -> None:
        """Set a timer (a run id, or a branch's member) to fire at ``due``."""
        ...

    def retime(self, expected: int, members: Mapping[str, int | None]) -> None:
        """Set (None: remove) the timers whose score (ms) is still ``expected``."""
        ...

    def drop_timer(self, member: str) -> None:
        ...
