"""``fanout send``: send an event, say what it starts, resumes or cancels, and with
``--wait`` wait for those runs to end (exit 0 only when every one completed)."""

from __future__ import annotations

import argparse
import time

from .._core.event import EVENT_BYTES_RANGE, Event, prepare_batch, quoted
from .._errors import EventError
from .._ops.event_effects import Waiting, cancelling_functions, received, waiting_runs
from .._ops.locate import Target
from .._ops.render import runs_table
from .._redis.history import RunSummary, iso
from .common import EXIT_USAGE, CliError, find_target, note, out


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _checked_event(args: argparse.Namespace, max_bytes: int) -> Event:
    """The event the command line describes; a bad one is a usage error (exit 2)."""
    try:
        ev = Event(name=args.name, data=args.data, id=args.id, user=args.user)
        prepare_batch(ev, max_bytes=max_bytes)
    except EventError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    return ev


def cmd_send(args: argparse.Namespace) -> int:
    _checked_event(args, EVENT_BYTES_RANGE[1])      # before the app is imported
    target = find_target(args)
    ev = _checked_event(args, target.client().max_event_bytes)
    history = target.history
    earlier = history.event(args.id) if args.id else None
    # The waits this event satisfies are read before it is sent: the router drops them.
    waiting = [] if earlier is not None else waiting_runs(
        target.runtime, {**ev.to_wire(), "ts": int(time.time() * 1000)})
    eid = target.send(args.name, args.data, id=args.id, user=args.user)
    notes: list[str] = []
    if earlier is not None:
        notes.append(f"event id {quoted(eid)} was already stored: the data given was ignored; "
                     f"the earlier event stands ({earlier.name}, sent {iso(earlier.ts)})")
    name = earlier.name if earlier is not None else args.name
    named, accepted = target.triggered_by(eid)
    cancels = cancelling_functions(target.runtime, name)
    nothing = ""
    if not named and not waiting and not cancels:
        declared = ", ".join(target.event_triggers()) or "none"
        nothing = (f"no function is triggered by event {quoted(name)} and no run waits for it; "
                   f"declared triggers: {declared}")
    elif named and not accepted and not waiting and not cancels:
        conditions = ", ".join(f"{fn.key} if {t.expression}" for fn in named
                               for t in fn.event_triggers if t.expression)
        nothing = f"no trigger's condition accepts this event: {conditions}"
    if waiting and not args.wait:
        notes.append(f"resumes {_plural(len(waiting), 'waiting run')}: "
                     + ", ".join(f"{w.run_id} ({w.fn_key}, step {w.step_id!r})" for w in waiting))
    if cancels and not accepted and not waiting:
        notes.append(f"no run starts or resumes; the event cancels the matching runs of "
                     f"{', '.join(cancels)}")
    if nothing and not args.wait:
        notes.append(nothing)
    for text in notes:
        note(f"note: {text}")
    if not args.wait:
        out(args, {"event_id": eid, "notes": notes,
                   "resumes": [w.to_json() for w in waiting]}, eid)
        return 0
    if nothing:
        raise CliError(f"event {eid} was stored, but {nothing}")
    return _wait_for_send(target, args, eid, bool(accepted), waiting, notes)


def _wait_for_send(target: Target, args: argparse.Namespace, eid: str, starts: bool,
                   waiting: list[Waiting], notes: list[str]) -> int:
    """``send --wait``: wait for the runs the event starts and the runs it resumes to end.
    Exit 0 when all of them completed; 1 when one failed, was cancelled or skipped, or is
    still going at the deadline, or when no worker picked the event up."""
    history = target.history
    deadline = time.monotonic() + args.wait
    runs: list[RunSummary] = []
    got: dict[str, bool | None] = {w.run_id: None for w in waiting}
    resumed: list[RunSummary] = []
    while True:
        runs = history.runs_of_event(eid) if starts else []
        for w in waiting:
            if got[w.run_id] is None:
                got[w.run_id] = received(target.runtime, w, eid)
        mine = [w.run_id for w in waiting if got[w.run_id]]
        # Also the runs the router says it resumed (a wait opened after the event was sent).
        resumed = history.summaries(mine) + [
            r for r in history.runs_resumed_by(eid) if r.run_id not in mine]
        # A run that exists proves no worker: the sender may have created it (routing in
        # the sender); one whose first pass began, or that ended, does.
        begun = [r for r in runs if r.started_at is not None or r.ended_at is not None]
        picked_up = bool(begun) or any(got.values()) or not starts and not waiting
        pending = any(v is None for v in got.values())
        if picked_up and not pending and all(r.ended_at is not None for r in runs + resumed):
            break
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    missed = [w.run_id for w in waiting if got[w.run_id] is False]
    begun = [r for r in runs if r.started_at is not None or r.ended_at is not None]
    if not begun and not resumed:
        if starts or any(v is None for v in got.values()):
            raise CliError(f"no worker picked up event {eid} within {args.wait:g} s: is a "
                           f"worker running on broker {target.broker_url}? (celery -A "
                           f"{target.spec} worker; --broker URL names another broker)")
        if missed:
            raise CliError(f"event {eid} was stored, but the runs that waited for it stopped "
                           f"waiting before it reached them: {', '.join(missed)}")
    printed = len(notes)   # cmd_send printed these already
    if resumed:
        notes.append(f"resumed {_plural(len(resumed), 'waiting run')}")
    if missed:
        notes.append(f"{_plural(len(missed), 'run')} stopped waiting before the event reached "
                     f"it (timed out, cancelled, or another event came first): {', '.join(missed)}")
    everything = runs + resumed
    text = f"event {eid}\n" + (runs_table(runs) if runs else "no runs started")
    if resumed:
        text += "\n\nresumed\n" + runs_table(resumed)
    out(args, {"event_id": eid, "runs": [r.to_json() for r in runs],
               "resumed": [r.to_json() for r in resumed], "notes": notes}, text)
    for line in notes[printed:]:
        note(f"note: {line}")
    running = [r.run_id for r in everything if r.ended_at is None]
    bad = [r for r in everything if r.ended_at is not None and r.status != "completed"]
    if bad:
        raise CliError(f"{_plural(len(bad), 'run')} did not complete: "
                       + ", ".join(f"{r.run_id} {r.status}" for r in bad)
                       + (f"; {len(running)} still going" if running else ""))
    if running:
        raise CliError(f"{_plural(len(running), 'run')} still going after {args.wait:g} s: "
                       f"fanout run {running[0]}")
    return 0
