"""The run transitions on dicts: a :class:`~fanout._core.run_store.RunStore` in memory.

The test harness (``harness.py``) runs a function against it, through the same pass
code a worker runs (``lifecycle.py``).  Each method does what the Lua script of the
same name does (``fanout/_redis/lua/``) and answers the same: fields are strings as
Redis keeps them, records JSON text, numbers written as Redis writes them.
``tests/unit/test_run_store_contract.py`` runs the same transitions on this store
and on the Redis store and compares the replies and the run hashes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .event import dumps
from .records import TERMINAL, StepRecord
from .run_record import (
    CANCEL,
    ENDED,
    ERROR,
    LEASE,
    LEASE_UNTIL,
    LEASE_UNTIL_SUFFIX,
    QUEUED_AT,
    SEQ,
    ST,
    STARTED,
    TAKEOVERS,
    WAKE,
    WATCHDOG,
    branch_lease_field,
    step_field,
    watchdog_field,
)
from .run_store import Begun, BranchBegun, Created, Ended, Saved, branch_timer

_FINAL = ("completed", "failed")


def _value(v: Any) -> str:
    """A value as Redis stores it (what redis-py sends for it)."""
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _final(raw: str | None) -> bool:
    return raw is not None and json.loads(raw).get("st") in _FINAL


class MemoryRunStore:
    """Runs and timers in this process; ``clock`` is the time the transitions see."""

    def __init__(self, *, watchdog: float = 300.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.watchdog = float(watchdog)
        self.clock = clock
        self.runs: dict[str, dict[str, str]] = {}
        self.timers: dict[str, int] = {}

    # -- timers ------------------------------------------------------------------------

    def arm(self, member: str, due: float) -> None:
        self.timers[member] = int(due * 1000)

    def drop_timer(self, member: str) -> None:
        self.timers.pop(member, None)

    def retime(self, expected: int, members: Mapping[str, int | None]) -> None:
        for member, score in members.items():
            if self.timers.get(member) == expected:
                if score is None:
                    del self.timers[member]
                else:
                    self.timers[member] = score

    def _raise_timer(self, member: str, due_ms: int) -> None:
        """``ZADD GT``: set, or move later (never earlier)."""
        cur = self.timers.get(member)
        if cur is None or due_ms > cur:
            self.timers[member] = due_ms

    # -- the transitions -----------------------------------------------------------------

    def run_fields(self, run_id: str) -> dict[str, str]:
        return dict(self.runs.get(run_id, {}))

    def create_runs(self, runs: Sequence[tuple[str, str, Mapping[str, Any]]]) -> list[Created]:
        out: list[Created] = []
        watch = int(self.clock() * 1000 + self.watchdog * 1000)
        for run_id, _fn, fields in runs:
            f = self.runs.get(run_id)
            if f is not None and f.get(ST):
                again = f[ST] == "queued" and f.get(SEQ, "0") == "0" and not f.get(STARTED)
                if again:
                    self.timers.setdefault(run_id, watch)
                out.append(Created(run_id, False, again))
                continue
            self.runs.setdefault(run_id, {}).update({k: _value(v) for k, v in fields.items()})
            if fields.get(ST) == "queued":
                self.timers.setdefault(run_id, watch)
            out.append(Created(run_id, True, True))
        return out

    def begin_pass(self, run_id: str, token: str, lease_until_ms: int,
                   seq: int | None) -> Begun:
        now = self.clock()
        self.timers[run_id] = lease_until_ms
        f = self.runs.get(run_id)
        st = f.get(ST) if f else None
        if f is None or not st:
            self.timers.pop(run_id, None)
            return Begun("missing", {})
        if st in TERMINAL:
            self.timers.pop(run_id, None)
            return Begun("terminal", {})
        if seq is not None and int(seq) != int(float(f.get(SEQ) or "0")):
            return Begun("stale", {})
        lease, lu = f.get(LEASE), float(f.get(LEASE_UNTIL) or "0")
        if lease and lu > now:
            self._raise_timer(run_id, int(lu * 1000))
            return Begun("busy", {})
        if CANCEL in f:
            return Begun("cancel", {})
        wake = float(f.get(WAKE) or "0")
        if seq is None and wake > now + 0.05:
            self._raise_timer(run_id, int(wake * 1000))
            return Begun("early", {})
        f.update({LEASE: token, LEASE_UNTIL: repr(lease_until_ms / 1000), ST: "running",
                  WAKE: "0", WATCHDOG: "0"})
        if lease:
            f[TAKEOVERS] = str(int(float(f.get(TAKEOVERS) or "0")) + 1)
        if STARTED not in f:
            f[STARTED] = repr(now)
        return Begun("ok", dict(f))

    def _joined(self, f: Mapping[str, str], group: Sequence[str]) -> bool:
        return bool(group) and all(_final(f.get(step_field(sid))) for sid in group)

    def save_step(self, run_id: str, token: str, rec: StepRecord, *, lease_field: str = LEASE,
                  group: Sequence[str] = ()) -> Saved:
        f = self.runs.get(run_id, {})
        if f.get(lease_field) != token:
            return Saved("lost", None, False)
        field = step_field(rec.id)
        cur = f.get(field)
        if _final(cur):
            assert cur is not None
            return Saved("exists", StepRecord.from_json(json.loads(cur)),
                          self._joined(f, group))
        f[field] = dumps(rec.to_json())
        if CANCEL in f and lease_field == LEASE:
            return Saved("cancel", None, False)
        return Saved("ok", None, self._joined(f, group))

    def end_pass(self, run_id: str, token: str, status: str, *, wake: float | None = None,
                 awaiting: str | None = None, fields: Mapping[str, Any] | None = None) -> Ended:
        due = wake if wake is not None else self.clock() + self.watchdog
        try:
            f = self.runs.get(run_id, {})
            if f.get(LEASE) != token:
                return Ended(None, False)
            f.update({k: _value(v) for k, v in (fields or {}).items()})
            if CANCEL in f:
                return Ended(-1, False)
            new_status, new_wake, resolved = status, _value(wake or 0), False
            if awaiting and _final(f.get(step_field(awaiting))):
                new_status, new_wake, resolved = "queued", "0", True
            seq = int(float(f.get(SEQ) or "0")) + 1
            f.update({ST: new_status, LEASE: "", LEASE_UNTIL: "0", WAKE: new_wake,
                      SEQ: str(seq)})
            return Ended(seq, resolved)
        finally:
            self.timers[run_id] = int(due * 1000)  # sent with the script, whatever it says

    def go_on(self, run_id: str, token: str, lease_until_ms: int,
              fields: Mapping[str, Any]) -> Begun:
        now = self.clock()
        f = self.runs.get(run_id, {})
        if f.get(LEASE) != token:
            return Begun("lost", {})
        if lease_until_ms:  # 0: the lease and its timer are kept as they are
            self.timers[run_id] = lease_until_ms
        f.update({k: _value(v) for k, v in fields.items()})
        if CANCEL in f:
            return Begun("cancel", {})
        f.update({SEQ: str(int(float(f.get(SEQ) or "0")) + 1), ST: "running",
                  WAKE: "0", WATCHDOG: "0"})
        if lease_until_ms:
            f[LEASE_UNTIL] = repr(lease_until_ms / 1000)
        if STARTED not in f:
            f[STARTED] = repr(now)
        return Begun("ok", dict(f))

    def finish_run(self, run_id: str, token: str, status: str, fields: Mapping[str, Any]) -> int:
        try:
            f = self.runs.get(run_id)
            st = f.get(ST) if f else None
            if f is None or not st or st in TERMINAL:
                return 0
            if token != "" and f.get(LEASE) != token:
                return 0
            result = 1
            cx = f.get(CANCEL)
            if status == "completed" and cx is not None:
                status, result = "cancelled", 2
            f.update({ST: status, ENDED: repr(self.clock()), LEASE: "", LEASE_UNTIL: "0",
                      WAKE: "0", SEQ: str(int(float(f.get(SEQ) or "0")) + 1)})
            f.update({k: _value(v) for k, v in fields.items()})
            if result == 2:
                assert cx is not None
                f[ERROR] = cx
            return result
        finally:
            self.timers.pop(run_id, None)

    def resolve_step(self, run_id: str, rec: StepRecord) -> str:
        f = self.runs.get(run_id)
        st = f.get(ST) if f else None
        if f is None or not st or st in TERMINAL:
            return "ended"
        field = step_field(rec.id)
        text = dumps(rec.to_json())
        group: list[str] | None = None
        race = False
        cur = f.get(field)
        if cur is not None:
            old = json.loads(cur)
            if old.get("st") in _FINAL:
                return "done"
            x = old.get("x")
            if isinstance(x, dict) and x.get("group"):
                group, race = list(x["group"]), x.get("race") is True
            # The final record keeps what the waiting one knew (see resolve_step.lua).
            new = rec.to_json()
            add = "".join(f',"{k}":{json.dumps(old[k], separators=(",", ":"))}'
                          for k in ("t0", "q", "x") if k not in new and old.get(k) is not None)
            if add and text.endswith("}"):
                text = text[:-1] + add + "}"
        f[field] = text
        if st == "waiting":
            f.update({ST: "queued", WAKE: "0", QUEUED_AT: repr(self.clock())})
            return "enqueue"
        if group is not None and (race or all(_final(f.get(step_field(s))) for s in group)):
            return "enqueue"
        return "set"

    def begin_branch(self, run_id: str, step_id: str, token: str,
                     lease_until_ms: int) -> BranchBegun:
        now = self.clock()
        member = branch_timer(run_id, step_id)
        self.timers[member] = lease_until_ms
        f = self.runs.get(run_id)
        st = f.get(ST) if f else None
        raw = f.get(step_field(step_id)) if f else None
        if f is None or not st or st in TERMINAL or raw is None:
            self.timers.pop(member, None)
            return BranchBegun("terminal", {}, False)
        rec = json.loads(raw)
        if rec.get("st") in _FINAL:
            group = (rec.get("x") or {}).get("group") or []
            return BranchBegun("done", {}, all(_final(f.get(step_field(s))) for s in group))
        lease = branch_lease_field(step_id)
        holder = f.get(lease)
        lu = float(f.get(lease + LEASE_UNTIL_SUFFIX) or "0")
        if holder and lu > now:
            self._raise_timer(member, int(lu * 1000))
            return BranchBegun("busy", {}, False)
        f.update({lease: token, lease + LEASE_UNTIL_SUFFIX: repr(lease_until_ms / 1000)})
        f.pop(watchdog_field(step_id), None)
        return BranchBegun("ok", dict(f), False)

    def end_branch(self, run_id: str, step_id: str, token: str) -> None:
        f = self.runs.get(run_id, {})
        lease = branch_lease_field(step_id)
        if f.get(lease) == token:
            f.pop(lease, None)
            f.pop(lease + LEASE_UNTIL_SUFFIX, None)
