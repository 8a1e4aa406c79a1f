"""Every Lua script, called directly, on a real Redis and on the embedded store.

A table of cases: the state a script meets (``given``), its keys and arguments, the
reply it must give and what it must leave (``then``).  Each case runs on the test's
own redis-server and on fakeredis (the ``memory://`` store), with the script text the
store loads (includes inlined, comments dropped).  A script without a case fails
the completeness test, so a new script comes with its contract.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

from fanout._redis.memory import memory_redis
from fanout._redis.scripts import Scripts, script_names
from tests.support import redis_for

RUN = "t:run:{r1}"
MET = "t:metrics"
TIMERS = "t:timers"
TSHARD = "t:timers:{t3}"
KEY = "t:fc:x:{b}"
S1, W1, S2, W2 = "t:fc:cc:{a}:1", "t:fc:ccw:{a}:1", "t:fc:cc:{a}:2", "t:fc:ccw:{a}:2"
FLAG, PARKED = "t:pause:{a:f}", "t:parked:{a:f}"
CRON = "t:cron:a:f"

NOW = 1_700_000_000.0
LATER = repr(NOW + 60)


def rec(step: str, st: str, **more: Any) -> str:
    return json.dumps({"id": step, "k": "run", "st": st, "n": 1, "seq": 0, **more},
                      separators=(",", ":"))


def running(**more: str) -> Callable[[redis.Redis], Any]:
    """A run inside a pass, holding lease 'tok' until LATER."""
    return lambda r: r.hset(RUN, mapping={"st": "running", "seq": "2", "lease": "tok",
                                          "lu": LATER, "app": "a", "fn": "f",
                                          "c": repr(NOW - 5), **more})


def between(st: str = "queued", **more: str) -> Callable[[redis.Redis], Any]:
    """A run between passes."""
    return lambda r: r.hset(RUN, mapping={"st": st, "seq": "2", "lease": "", "lu": "0",
                                          "app": "a", "fn": "f", "c": repr(NOW - 5), **more})


def nothing(_r: redis.Redis) -> None:
    return None


def dec(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [dec(v) for v in value]
    return value


def fields(r: redis.Redis, key: str = RUN) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in r.hgetall(key).items()}


@dataclass
class Case:
    script: str
    title: str
    given: Callable[[redis.Redis], Any]
    keys: list[str]
    args: list[Any]
    reply: Any
    then: Callable[[redis.Redis], bool] = field(default=lambda r: True)

    @property
    def id(self) -> str:
        return f"{self.script}:{self.title}"


CASES = [
    # -- runs ------------------------------------------------------------------------------
    Case("create_run", "a new run is created and counted", nothing,
         [RUN, MET], ["st", "queued", "app", "a", "fn", "f", "seq", "0"], None,
         lambda r: fields(r)["st"] == "queued" and r.hget(MET, "c|runs_started|a|f") == b"1"),
    Case("create_run", "an existing run is left as it is", between(t0="1"),
         [RUN], ["st", "queued", "seq", "0"], ["queued", "2", "1", repr(NOW - 5)],
         lambda r: fields(r)["seq"] == "2"),
    Case("create_run", "a run created ended counts as ended", nothing,
         [RUN, MET], ["st", "skipped", "app", "a", "fn", "f"], None,
         lambda r: r.hget(MET, "c|runs_ended|a|f|skipped") == b"1"),
    Case("begin_pass", "the lease is taken and the run returned", between(),
         [RUN], ["tok", repr(NOW), LATER, "2"], "ok",
         lambda r: fields(r)["lease"] == "tok" and fields(r)["st"] == "running"
         and fields(r)["t0"] == repr(NOW)),
    Case("begin_pass", "a missing run", nothing, [RUN], ["tok", repr(NOW), LATER, ""],
         ["missing"]),
    Case("begin_pass", "an ended run", between("completed"), [RUN],
         ["tok", repr(NOW), LATER, ""], ["terminal", "completed"]),
    Case("begin_pass", "a message for another pass", between(), [RUN],
         ["tok", repr(NOW), LATER, "1"], ["stale"]),
    Case("begin_pass", "a lease still held", running(), [RUN],
         ["tok2", repr(NOW), LATER, ""], ["busy", "1700000060"]),
    Case("begin_pass", "a cancel pending", between(cx="{}"), [RUN],
         ["tok", repr(NOW), LATER, ""], ["cancel"]),
    Case("begin_pass", "a wake-up before its time", between("sleeping", wake=repr(NOW + 9)),
         [RUN], ["tok", repr(NOW), LATER, ""], ["early", "1700000009"]),
    Case("begin_pass", "a takeover of an expired lease counts", running(lu=repr(NOW - 1)),
         [RUN], ["tok2", repr(NOW), LATER, ""], "ok",
         lambda r: fields(r)["takeovers"] == "1" and fields(r)["lease"] == "tok2"),
    Case("save_step", "saved under the lease", running(), [RUN],
         ["tok", "s:a", rec("a", "completed"), "lease"], ["ok", 0],
         lambda r: json.loads(fields(r)["s:a"])["st"] == "completed"),
    Case("save_step", "the first final record wins", running(**{"s:a": rec("a", "failed")}),
         [RUN], ["tok", "s:a", rec("a", "completed"), "lease"],
         ["exists", rec("a", "failed"), 0]),
    Case("save_step", "not under another's lease", running(), [RUN],
         ["other", "s:a", rec("a", "completed"), "lease"], ["lost"],
         lambda r: "s:a" not in fields(r)),
    Case("save_step", "saved, and a cancel is pending", running(cx='{"m":1}'), [RUN],
         ["tok", "s:a", rec("a", "completed"), "lease"], ["cancel", '{"m":1}']),
    Case("save_step", "a branch joins its group", running(**{
        "bl:b": "tb", "s:a": rec("a", "completed")}), [RUN],
         ["tb", "s:b", rec("b", "completed"), "bl:b", "s:a", "s:b"], ["ok", 1]),
    Case("save_step", "an attempt is counted with its duration", running(), [RUN, MET],
         ["tok", "s:a", rec("a", "failed", t0=1.0, t1=1.5), "lease"],
         ["ok", 0, "a", "f", "0.5"], lambda r: r.hget(MET, "c|step_failures|a|f") == b"1"),
    Case("end_pass", "the lease is released, the records written", running(), [RUN],
         ["tok", "sleeping", repr(NOW + 5), "", "s:a", rec("a", "completed")], [3, 0],
         lambda r: fields(r)["st"] == "sleeping" and fields(r)["lease"] == ""
         and fields(r)["wake"] == repr(NOW + 5) and "s:a" in fields(r)),
    Case("end_pass", "not under another's lease", running(), [RUN],
         ["other", "queued", "0", ""], None, lambda r: fields(r)["lease"] == "tok"),
    Case("end_pass", "a cancel pending", running(cx="{}"), [RUN],
         ["tok", "queued", "0", "", "s:a", rec("a", "completed")], [-1, 0],
         lambda r: "s:a" in fields(r) and fields(r)["lease"] == "tok"),
    Case("end_pass", "the awaited step was resolved already",
         running(**{"s:w": rec("w", "completed")}), [RUN],
         ["tok", "waiting", repr(NOW + 99), "s:w"], [3, 1],
         lambda r: fields(r)["st"] == "queued" and fields(r)["wake"] == "0"),
    Case("finish_run", "the run ends, the records written", running(), [RUN],
         ["tok", "completed", repr(NOW), "600", "out", "1", "s:a", rec("a", "completed")],
         [1], lambda r: fields(r)["st"] == "completed" and fields(r)["t1"] == repr(NOW)
         and r.ttl(RUN) > 0),
    Case("finish_run", "an ended run is left alone", between("failed"), [RUN],
         ["", "completed", repr(NOW), "600"], [0], lambda r: fields(r)["st"] == "failed"),
    Case("finish_run", "a completion with a cancel pending ends cancelled",
         running(cx='{"type":"Cancelled"}'), [RUN], ["tok", "completed", repr(NOW), "600"],
         [2], lambda r: fields(r)["st"] == "cancelled"
         and fields(r)["err"] == '{"type":"Cancelled"}'),
    Case("finish_run", "the end is counted with the run's duration", running(), [RUN, MET],
         ["tok", "completed", repr(NOW), "600"], [1, "a", "f", "5"],
         lambda r: r.hget(MET, "c|runs_ended|a|f|completed") == b"1"),
    # -- the run's timer, kept by the run scripts on one Redis (KEYS[4]) -----------------------
    Case("begin_pass", "the lease's recovery timer is armed with the lease", between(),
         [RUN, "", "", TSHARD], ["tok", repr(NOW), LATER, "", 60_000], "ok",
         lambda r: fields(r)["lease"] == "tok" and r.zscore(TSHARD, "r1") == 60_000),
    Case("begin_pass", "an ended run loses its timer", lambda r: (
        between("completed")(r), r.zadd(TSHARD, {"r1": 5})), [RUN, "", "", TSHARD],
         ["tok", repr(NOW), LATER, "", 60_000], ["terminal", "completed"],
         lambda r: r.zscore(TSHARD, "r1") is None),
    Case("begin_pass", "a stale message leaves the run's timer alone", lambda r: (
        between("sleeping")(r), r.zadd(TSHARD, {"r1": 5})), [RUN, "", "", TSHARD],
         ["tok", repr(NOW), LATER, "1", 60_000], ["stale"],
         lambda r: r.zscore(TSHARD, "r1") == 5),
    Case("begin_pass", "a lease held: the timer stays at least until it expires",
         lambda r: (running()(r), r.zadd(TSHARD, {"r1": 5})), [RUN, "", "", TSHARD],
         ["t2", repr(NOW), LATER, "", 60_000], ["busy", "1700000060"],
         lambda r: r.zscore(TSHARD, "r1") == int(float(LATER) * 1000)),
    Case("begin_pass", "early: the timer is the wake-up", between(
        "sleeping", wake=repr(NOW + 9)), [RUN, "", "", TSHARD],
         ["tok", repr(NOW), LATER, "", 60_000], ["early", "1700000009"],
         lambda r: r.zscore(TSHARD, "r1") == int((NOW + 9) * 1000)),
    Case("end_pass", "the timer is re-armed, the last argument is no pair", running(),
         [RUN, "", "", TSHARD], ["tok", "queued", "0", "", "s:a", rec("a", "completed"), 777],
         [3, 0], lambda r: r.zscore(TSHARD, "r1") == 777 and set(fields(r)) == {
             "st", "seq", "lease", "lu", "app", "fn", "c", "s:a", "wake"}),
    Case("end_pass", "counting, with the timer", running(), [RUN, MET, "", TSHARD],
         ["tok", "queued", "0", "", "s:a", rec("a", "failed", t0=1.0, t1=1.5), 777],
         [3, 0, "a", "f", "0.5"], lambda r: r.zscore(TSHARD, "r1") == 777),
    Case("end_pass", "a lost lease leaves the timer to its new holder",
         lambda r: (running()(r), r.zadd(TSHARD, {"r1": 5})), [RUN, "", "", TSHARD],
         ["other", "queued", "0", "", 777], None, lambda r: r.zscore(TSHARD, "r1") == 5),
    Case("finish_run", "the run's timer goes with its end", lambda r: (
        running()(r), r.zadd(TSHARD, {"r1": 5})), [RUN, "", "", TSHARD],
         ["tok", "completed", repr(NOW), "600"], [1],
         lambda r: r.zscore(TSHARD, "r1") is None),
    Case("finish_run", "not while another pass holds the lease", lambda r: (
        running()(r), r.zadd(TSHARD, {"r1": 5})), [RUN, "", "", TSHARD],
         ["other", "completed", repr(NOW), "600"], [0],
         lambda r: r.zscore(TSHARD, "r1") == 5),
    Case("go_on", "the pass ends and the next begins under the same lease", running(),
         [RUN], ["tok", repr(NOW), repr(NOW + 90), "90000", "s:a", rec("a", "completed"),
                 "takeovers", "0"], ("ok", ["a", "f"]),
         lambda r: fields(r)["seq"] == "3" and fields(r)["lease"] == "tok"
         and fields(r)["lu"] == repr(NOW + 90) and fields(r)["st"] == "running"
         and "s:a" in fields(r) and fields(r)["t0"] == repr(NOW)),
    Case("go_on", "not under another's lease: nothing written", running(), [RUN],
         ["other", repr(NOW), repr(NOW + 90), "90000", "s:a", rec("a", "completed")], None,
         lambda r: "s:a" not in fields(r) and fields(r)["seq"] == "2"),
    Case("go_on", "a cancel pending: the records written, the lease kept",
         running(cx="{}"), [RUN],
         ["tok", repr(NOW), repr(NOW + 90), "90000", "s:a", rec("a", "completed")],
         ["cancel", "a", "f", 0],
         lambda r: "s:a" in fields(r) and fields(r)["lease"] == "tok"
         and fields(r)["seq"] == "2"),
    Case("go_on", "counting and the timer moved to the new lease expiry",
         lambda r: (running()(r), r.zadd(TSHARD, {"r1": 5})), [RUN, MET, "", TSHARD],
         ["tok", repr(NOW), repr(NOW + 90), "90000", "s:a",
          rec("a", "failed", t0=1.0, t1=1.5)], ("ok", ["a", "f", "0.5"]),
         lambda r: r.zscore(TSHARD, "r1") == 90_000
         and r.hget(MET, "c|step_failures|a|f") == b"1"),
    Case("go_on", "the lease kept as it is ('0'): no lease write, the timer not moved",
         lambda r: (running()(r), r.zadd(TSHARD, {"r1": 5})), [RUN, "", "", TSHARD],
         ["tok", repr(NOW), "0", "0", "s:a", rec("a", "completed")], ("ok", ["a", "f"]),
         lambda r: r.zscore(TSHARD, "r1") == 5 and fields(r)["seq"] == "3"
         and fields(r)["lu"] == LATER and fields(r)["lease"] == "tok" and "s:a" in fields(r)),
    Case("go_on", "a lost lease leaves the timer to its new holder",
         lambda r: (running()(r), r.zadd(TSHARD, {"r1": 5})), [RUN, "", "", TSHARD],
         ["other", repr(NOW), repr(NOW + 90), "90000"], None,
         lambda r: r.zscore(TSHARD, "r1") == 5),
    Case("renew_lease", "by its holder", running(), [RUN], ["tok", repr(NOW + 90), "lease"],
         1, lambda r: fields(r)["lu"] == repr(NOW + 90)),
    Case("renew_lease", "not by another", running(), [RUN], ["x", repr(NOW + 90), "lease"], 0),
    Case("renew_lease", "a branch's lease", running(**{"bl:b": "tb"}), [RUN],
         ["tb", repr(NOW + 90), "bl:b"], 1, lambda r: fields(r)["bl:b:u"] == repr(NOW + 90)),
    Case("cancel_run", "between passes: cancelled now", between("sleeping"), [RUN],
         [repr(NOW), "600", '{"type":"Cancelled"}'], "cancelled",
         lambda r: fields(r)["st"] == "cancelled" and fields(r)["seq"] == "3"),
    Case("cancel_run", "inside a pass: flagged", running(), [RUN],
         [repr(NOW), "600", '{"type":"Cancelled"}'], "flagged",
         lambda r: fields(r)["cx"] == '{"type":"Cancelled"}' and fields(r)["st"] == "running"),
    Case("cancel_run", "an ended run", between("completed"), [RUN], [repr(NOW), "600", "{}"],
         "ended"),
    Case("cancel_run", "a missing run", nothing, [RUN], [repr(NOW), "600", "{}"], "missing"),
    Case("cancel_run", "counted when cancelled", between(), [RUN, MET],
         [repr(NOW), "600", "{}"], ["cancelled", "a", "f", "5"],
         lambda r: r.hget(MET, "c|runs_ended|a|f|cancelled") == b"1"),
    Case("resolve_step", "a waiting run is queued",
         between("waiting", **{"s:w": rec("w", "waiting", t0=3.0, x={"event": "e"})}),
         [RUN], ["s:w", rec("w", "completed"), repr(NOW)], "enqueue",
         lambda r: fields(r)["st"] == "queued" and fields(r)["qa"] == repr(NOW)
         and json.loads(fields(r)["s:w"])["x"] == {"event": "e"}
         and json.loads(fields(r)["s:w"])["t0"] == 3.0),
    Case("resolve_step", "a run inside a pass sees it", running(**{"s:w": rec("w", "waiting")}),
         [RUN], ["s:w", rec("w", "completed"), repr(NOW)], "set"),
    Case("resolve_step", "a step resolved once", between(
        "waiting", **{"s:w": rec("w", "completed")}), [RUN],
         ["s:w", rec("w", "failed"), repr(NOW)], "done"),
    Case("resolve_step", "an ended run", between("failed"), [RUN],
         ["s:w", rec("w", "completed"), repr(NOW)], "ended"),
    Case("resolve_step", "the last branch of a group brings the run back", running(**{
        "s:a": rec("a", "completed"), "s:b": rec("b", "waiting", x={"group": ["a", "b"]})}),
         [RUN], ["s:b", rec("b", "completed"), repr(NOW)], "enqueue"),
    Case("begin_branch", "the branch's lease is taken", running(**{
        "s:b": rec("b", "queued"), "wd:b": "2"}), [RUN],
         ["tb", repr(NOW), LATER, "s:b", "bl:b"], "ok",
         lambda r: fields(r)["bl:b"] == "tb" and "wd:b" not in fields(r)),
    Case("begin_branch", "a final step is done, its group joined", running(**{
        "s:a": rec("a", "completed", x={"group": ["a", "b"]}), "s:b": rec("b", "failed")}),
         [RUN], ["tb", repr(NOW), LATER, "s:a", "bl:a"], ["done", 1]),
    Case("begin_branch", "another holds it", running(**{
        "s:b": rec("b", "queued"), "bl:b": "x", "bl:b:u": LATER}), [RUN],
         ["tb", repr(NOW), LATER, "s:b", "bl:b"], ["busy", "1700000060"]),
    Case("begin_branch", "an ended run", between("cancelled"), [RUN],
         ["tb", repr(NOW), LATER, "s:b", "bl:b"], ["terminal"]),
    Case("end_branch", "by its holder", running(**{"bl:b": "tb", "bl:b:u": LATER}), [RUN],
         ["tb", "bl:b"], 1, lambda r: "bl:b" not in fields(r) and "bl:b:u" not in fields(r)),
    Case("end_branch", "not by another", running(**{"bl:b": "tb"}), [RUN], ["x", "bl:b"], 0),
    # -- timers ----------------------------------------------------------------------------
    Case("claim_due", "due timers are pushed back and returned",
         lambda r: r.zadd(TIMERS, {"a": 5, "b": 7, "c": 50}), [TIMERS], [10, 30, 100],
         ["a", "b", "30"], lambda r: r.zscore(TIMERS, "a") == 30 and r.zscore(TIMERS, "c") == 50),
    Case("claim_due", "nothing due, nothing left", nothing, [TIMERS], [10, 30, 100], [""]),
    Case("drop_claimed", "only timers nobody re-armed",
         lambda r: r.zadd(TIMERS, {"a": 30, "b": 44, "c": 30}), [TIMERS],
         [30, "a", "", "b", "", "c", 99], 2,
         lambda r: r.zscore(TIMERS, "a") is None and r.zscore(TIMERS, "b") == 44
         and r.zscore(TIMERS, "c") == 99),
    # -- the workers' declared functions (routing in the sender) ------------------------
    Case("declare", "entries written at the server's time, an entry no worker refreshed "
         "within the stale time dropped",
         lambda r: r.hset(KEY, mapping={"a:old d1": "10", "a:kept d2": str(r.time()[0] - 5),
                                        "a:junk d4": "x"}), [KEY],
         ["60", "a:f d3", "a:kept d2"], 2,
         lambda r: set(fields(r, KEY)) == {"a:f d3", "a:kept d2"}
         and all(abs(float(v) - r.time()[0]) < 5 for v in fields(r, KEY).values())),
    # -- cron, pause ----------------------------------------------------------------------
    Case("admit_event_name", "room under the cap: the name gets its series", nothing, [KEY],
         ["a/b", 2], 1, lambda r: r.smembers(KEY) == {b"a/b"}),
    Case("admit_event_name", "a name already admitted stays so at the cap",
         lambda r: r.sadd(KEY, "a/b", "a/c"), [KEY], ["a/b", 2], 1, lambda r: r.scard(KEY) == 2),
    Case("admit_event_name", "a new name past the cap counts as other",
         lambda r: r.sadd(KEY, "a/b", "a/c"), [KEY], ["a/d", 2], 0, lambda r: r.scard(KEY) == 2),
    Case("cron_cursor", "forward only", lambda r: r.hset(CRON, "at", 100), [CRON],
         [50, 2, "40"], 0, lambda r: fields(r, CRON) == {"at": "100", "skipped": "2", "run": "40"}),
    Case("cron_cursor", "moves forward", lambda r: r.hset(CRON, "at", 100), [CRON],
         [150, 0, ""], 1, lambda r: fields(r, CRON) == {"at": "150"}),
    Case("park_run", "a pass of a paused function parks", lambda r: r.set(FLAG, "{}"),
         [FLAG, PARKED], ['["r1",2]', 5], 1, lambda r: r.zscore(PARKED, '["r1",2]') == 5),
    Case("park_run", "not paused: the pass runs", nothing, [FLAG, PARKED], ['["r1",2]', 5], 0,
         lambda r: not r.exists(PARKED)),
    Case("resume_fn", "the flag goes, the parked passes come back oldest first",
         lambda r: (r.set(FLAG, "{}"), r.zadd(PARKED, {'["r2",1]': 9, '["r1",0]': 3})),
         [FLAG, PARKED], [], ['["r1",0]', '["r2",1]'],
         lambda r: not r.exists(FLAG) and not r.exists(PARKED)),
    # -- flow control ------------------------------------------------------------------------
    Case("fc_claim", "the first run owns the key", nothing, [KEY], ["r1", 60], "r1",
         lambda r: 0 < r.ttl(KEY) <= 60),
    Case("fc_claim", "a later run finds the owner", lambda r: r.set(KEY, "r0"), [KEY],
         ["r1", 60], "r0"),
    Case("fc_rate", "room left: admitted", lambda r: r.zadd(KEY, {"r0": 900}), [KEY],
         ["r1", 1000, 1000, 2], 1),
    Case("fc_rate", "the window is full", lambda r: r.zadd(KEY, {"r0": 900, "r9": 950}), [KEY],
         ["r1", 1000, 1000, 2], 0),
    Case("fc_rate", "a retried router is admitted again",
         lambda r: r.zadd(KEY, {"r0": 900, "r1": 950}), [KEY], ["r1", 1000, 1000, 2], 1),
    Case("fc_throttle", "a burst starts at once, the next is spaced", lambda r: r.zadd(
        KEY, {"": 1500}), [KEY], ["r1", 1000, 1000, 2, 1], "1500.000",
         lambda r: r.zscore(KEY, "") == 2000),
    Case("fc_throttle", "a retried router gets the same start",
         lambda r: r.zadd(KEY, {"r1": 1234}), [KEY], ["r1", 1000, 1000, 2, 1], "1234"),
    Case("fc_singleton", "a free key", nothing, [KEY], ["r1", "skip", ""], ["ok", ""]),
    Case("fc_singleton", "held: skip", lambda r: r.hset(KEY, "run", "r0"), [KEY],
         ["r1", "skip", ""], ["held", "r0"]),
    Case("fc_singleton", "held: cancel replaces", lambda r: r.hset(KEY, "run", "r0"), [KEY],
         ["r1", "cancel", ""], ["replaced", "r0"], lambda r: r.hget(KEY, "run") == b"r1"),
    Case("fc_singleton", "a holder that ended is replaced", lambda r: r.hset(KEY, "run", "r0"),
         [KEY], ["r1", "skip", "r0"], ["ok", "r0"]),
    Case("fc_release", "by its owner", lambda r: r.hset(KEY, "run", "r1"), [KEY], ["r1"], 1,
         lambda r: not r.exists(KEY)),
    Case("fc_release", "not by another", lambda r: r.hset(KEY, "run", "r0"), [KEY], ["r1"], 0),
    Case("fc_debounce", "the first event opens it", nothing, [KEY],
         ["r1", 1000, 500, 2000, ""], ["r1", "1500.000", "new"]),
    Case("fc_debounce", "a later event pushes it back, within the timeout",
         lambda r: r.hset(KEY, mapping={"run": "r1", "first": 1000, "due": "1500.000"}), [KEY],
         ["r2", 2800, 500, 2000, ""], ["r1", "3000.000", "pending"]),
    Case("fc_debounce", "a started run opens the next", lambda r: r.hset(
        KEY, mapping={"run": "r1", "first": 1000, "due": "1500.000"}), [KEY],
         ["r2", 1200, 500, 0, "r1"], ["r2", "1700.000", "new"]),
    Case("fc_debounce_run", "a pending run takes the later event", between(
        dts="5", nb="0"), [RUN], ['{"id":"e2"}', '["e2"]', 9, "77.500"], "77.500",
         lambda r: fields(r)["event"] == '{"id":"e2"}' and fields(r)["wake"] == "77.500"),
    Case("fc_debounce_run", "a run that started", between(t0="1"), [RUN],
         ['{"id":"e2"}', '["e2"]', 9, "77.500"], None),
    Case("fc_batch", "the first event opens a batch", nothing, [KEY],
         ["r1", 1000, 3, 500, ""], ["r1", "1500.000", 1, 1, 0]),
    Case("fc_batch", "the last event fills and closes it", lambda r: r.hset(
        KEY, mapping={"run": "r1", "n": 2, "due": "1500.000"}), [KEY],
         ["r3", 1100, 3, 500, ""], ["r1", "1500.000", 3, 0, 1], lambda r: not r.exists(KEY)),
    Case("fc_batch_run", "an event joins a batch run not started", between(), [RUN],
         ["be:e1", '{"n":1}', "0"], [1, ""], lambda r: fields(r)["be:e1"] == '{"n":1}'),
    Case("fc_batch_run", "a full batch may start at its throttle time", between(nb="12.5"),
         [RUN], ["be:e1", '{"n":1}', "1"], [1, "12.500"]),
    Case("fc_batch_run", "a batch run that started", running(), [RUN],
         ["be:e1", '{"n":1}', "0"], [0, ""]),
    Case("fc_slots_acquire", "a free slot is taken", nothing, [S1, W1],
         ["r1:t", "p|f|r1", 1000, 5000, 1000, 2000, 1], ["ok"],
         lambda r: r.zscore(S1, "r1:t") == 5000),
    Case("fc_slots_acquire", "full: the run waits", lambda r: r.zadd(S1, {"r0:t": 5000}),
         [S1, W1], ["r1:t", "p|f|r1", 1000, 5000, 990, 2000, 1], ["wait"],
         lambda r: r.zscore(W1, "p|f|r1") == 990),
    Case("fc_slots_acquire", "two constraints at once or not at all",
         lambda r: r.zadd(S2, {"r0:t": 5000}), [S1, W1, S2, W2],
         ["r1:t", "p|f|r1", 1000, 5000, 990, 2000, 1, 1], ["wait"],
         lambda r: r.zscore(S1, "r1:t") is None and r.zscore(W2, "p|f|r1") == 990),
    Case("fc_slots_release", "the room goes to the first waiter",
         lambda r: (r.zadd(S1, {"r0:t": 5000}), r.zadd(W1, {"p|f|r2": 20, "p|f|r1": 10})),
         [S1, W1], ["r0:t", "", 1000, 2000, 1], ["p|f|r1"],
         lambda r: r.zscore(S1, "p|f|r1") == 2000 and r.zscore(W1, "p|f|r2") == 20),
]


@pytest.fixture(scope="module", params=["redis", "fakeredis"])
def client(request: pytest.FixtureRequest, clean_db: redis.Redis) -> Iterator[redis.Redis]:
    if request.param == "redis":
        r = redis_for(__name__)
    else:
        r = memory_redis(f"memory://lua-contract-{uuid.uuid4().hex}")
    yield r


def test_every_script_has_a_case() -> None:
    assert {c.script for c in CASES} == set(script_names())


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_script(client: redis.Redis, case: Case) -> None:
    client.flushdb()
    case.given(client)
    reply = dec(Scripts(client).run(case.script, case.keys, case.args))
    if isinstance(case.reply, tuple):  # go_on: 'ok', app, fn, k, k durations, the run
        head, tail = case.reply
        assert reply[0] == head and reply[1:3] == tail[:2]
        k = int(reply[3])
        assert reply[4:4 + k] == tail[2:]
        rest = reply[4 + k:]
        assert dict(zip(rest[::2], rest[1::2], strict=True)) == fields(client)
    elif isinstance(case.reply, str) and isinstance(reply, list) and case.reply == "ok":
        assert reply[0] == "ok"  # then the run's fields
        got = dict(zip(reply[1::2], reply[2::2], strict=True))
        assert got == fields(client), "begin_* returns the whole run"
    else:
        assert reply == case.reply
    assert case.then(client)
