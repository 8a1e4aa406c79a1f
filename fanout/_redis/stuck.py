"""Finding runs that nothing will move: the watchdog's reads and marks.

A run is *stuck* when it is not final, no worker holds its lease, and either no
timer is armed for it and no branch of it can run, or one of its parallel
branches is queued with neither a branch lease nor a branch timer (the group
would never join).  A run is reported once it was seen stuck twice, at least
``min_age`` seconds apart, with no pass in between (its ``seq`` unchanged).

Each check reads the newest runs, the suspects (runs seen stuck once, kept in
``P:stuck:suspects``) and the next window of a walk over every run, oldest last,
whose position the workers share (``P:stuck:sweep``). So a run anywhere in a history
of millions is read within (runs ÷ window) checks of the fleet, and once seen stuck
it is read again at every check: a write lost in a failover in the middle of a large
fan-out cannot leave a run that no check reaches.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from .._core.run_record import (
    LEASE,
    LEASE_UNTIL,
    SEQ,
    ST,
    STUCK,
    branch_lease_field,
    branch_lease_until_field,
    is_step_field,
    step_id_of,
)
from .keyspace import Keyspace
from .merged_index import rev
from .replies import text, text_or_none, texts

if TYPE_CHECKING:
    from .store import Store

ACTIVE = ("queued", "running", "sleeping", "waiting")
NO_TIMER = "no task, lease or timer is scheduled to move it"


def _num(value: Any) -> float:
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


def _branches(fields: dict[str, str]) -> list[str]:
    """Parallel steps of the run that still have to execute."""
    out = []
    for key, raw in fields.items():
        if not is_step_field(key):
            continue
        try:
            rec = json.loads(raw)
        except ValueError:
            continue
        if rec.get("st") in ("queued", "retrying", "running") and "group" in (rec.get("x") or {}):
            out.append(step_id_of(key))
    return out


def stuck_reason(fields: dict[str, str], timers: dict[str, float | None], run_id: str,
                 now_ms: float) -> str | None:
    """Why the run is stuck, or None if something will move it."""
    if fields.get(ST) not in ACTIVE:
        return None
    if fields.get(LEASE) and _num(fields.get(LEASE_UNTIL)) > now_ms:
        return None
    lost = [sid for sid in _branches(fields)
            if timers.get(Keyspace.branch_timer(run_id, sid)) is None
            and not (fields.get(branch_lease_field(sid))
                     and _num(fields.get(branch_lease_until_field(sid))) > now_ms)]
    if lost:
        return (f"its parallel step(s) {sorted(lost)!r} are queued with no task, lease or "
                "timer to run them, so the group would never join")
    if timers.get(run_id) is None and not _branches(fields):
        return NO_TIMER
    return None


_HEAD = (ST, LEASE, LEASE_UNTIL, SEQ, STUCK)

#: Runs each check reads from the walk over every run (beside the newest ``limit``).
SWEEP_WINDOW = 2000
#: At most this many suspects are kept: past it, the runs first seen most recently are
#: dropped (the newest read and the walk find them again).
MAX_SUSPECTS = 10_000


def sweep_window(store: Store, size: int = SWEEP_WINDOW) -> list[str]:
    """The next ``size`` runs of the shared walk over every run, newest to oldest;
    the walk starts again from the newest once it has reached the oldest.

    The position is ``<score>|<k>``: the next window starts at that score, after the
    ``k`` runs of that score already read (runs created in one batch share a score,
    and a batch may hold more runs than a window)."""
    r = store.r
    raw = text_or_none(r.get(store.keys.stuck_sweep)) or "+inf|0"
    top, _, k = raw.partition("|")  # a position of an earlier version has no "|k"
    skip = int(k or 0)
    rows = rev(r, store.keys.runs_indexes(None), top, "-inf", skip, size)
    if len(rows) < size:
        r.delete(store.keys.stuck_sweep)
    else:
        last = rows[-1][1]
        same = sum(1 for _m, score in rows if score == last)
        if rows[0][1] == last and top == repr(last):
            same += skip  # the whole window was of the score it started at
        r.set(store.keys.stuck_sweep, f"{last!r}|{same}")
    return [m for m, _s in rows]


def find_stuck(store: Store, *, min_age: float,
               limit: int = 5000) -> list[tuple[str, str, str]]:
    """(run id, reason, status) of the runs read (the newest ``limit``, the suspects
    and the walk's next window) that are confirmed stuck; runs seen stuck for the
    first time are marked and become suspects, runs that moved lose their mark.

    Cheap for a large history: a few fields of each run, then the whole hash only of
    the runs in ``running`` that no pass holds (parallel branches in flight)."""
    ids = store.run_ids(limit=limit)
    seen = set(ids)
    suspects = texts(store.r.zrange(store.keys.stuck_suspects, 0, MAX_SUSPECTS - 1))
    for rid in [*suspects, *sweep_window(store)]:
        if rid not in seen:
            seen.add(rid)
            ids.append(rid)
    if not ids:
        return []
    was_suspect = set(suspects)
    now = time.time()
    pipe = store.r.pipeline(transaction=False)
    for rid in ids:
        pipe.hmget(store.keys.run(rid), list(_HEAD))
    heads = []
    for rid, values in zip(ids, pipe.execute(), strict=True):
        head = {k: text(v) for k, v in zip(_HEAD, values, strict=True) if v is not None}
        if head.get(ST) in ACTIVE and not (head.get(LEASE) and _num(head.get(LEASE_UNTIL)) > now * 1000):
            heads.append((rid, head))
    full = [rid for rid, head in heads if head[ST] == "running"]
    fields = dict(zip(full, store.many_run_fields(full), strict=True)) if full else {}
    cands = [(rid, fields.get(rid, head)) for rid, head in heads]
    members: list[str] = []
    for rid, f in cands:
        members.append(rid)
        members.extend(Keyspace.branch_timer(rid, sid) for sid in _branches(f))
    scores = store.timer_scores(members) if members else []
    timers = dict(zip(members, scores, strict=True))
    found: list[tuple[str, str, str]] = []
    unconfirmed: set[str] = set()
    pipe = store.r.pipeline(transaction=False)
    for rid, f in cands:
        reason = stuck_reason(f, timers, rid, now * 1000)
        seq = f.get(SEQ, "0")
        mark = f.get(STUCK, "")
        if reason is None:
            if mark:
                pipe.hdel(store.keys.run(rid), STUCK)
            continue
        seen_seq, _, seen_at = mark.partition(":")
        if mark and seen_seq == seq and now - _num(seen_at) >= min_age:
            found.append((rid, reason, f.get(ST, "")))
        else:
            if not mark or seen_seq != seq:
                pipe.hset(store.keys.run(rid), STUCK, f"{seq}:{now!r}")
            unconfirmed.add(rid)
    # A suspect stays until it moves, ends or is handled (found); a run seen stuck for
    # the first time joins, so its second sighting comes at the next check.
    gone = [rid for rid in was_suspect if rid not in unconfirmed]
    if gone:
        pipe.zrem(store.keys.stuck_suspects, *gone)
    new = {rid: now for rid in unconfirmed if rid not in was_suspect}
    if new:
        pipe.zadd(store.keys.stuck_suspects, new, nx=True)
        pipe.zremrangebyrank(store.keys.stuck_suspects, MAX_SUSPECTS, -1)
    pipe.execute()
    return found

