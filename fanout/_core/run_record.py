"""The run record: the fields of a run's hash (``P:run:{RID}``), by name.

Every field is a string in Redis (numbers are written with ``repr``, structures as
JSON).  This module is the one place Python names them; the Lua scripts in
``fanout/_redis/lua`` read and write the same names, and ``docs/internals.md`` lists
which script touches which.  Fields per step, branch or batched event carry the id
after a prefix (:func:`step_field`, ...).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

from .event import dumps
from .records import StepRecord

# -- identity and trigger ---------------------------------------------------------------
ST = "st"            # status: queued running sleeping waiting completed failed cancelled skipped
FN = "fn"            # the function's id
APP = "app"          # the app's id
FK = "fk"            # the function key, "<app>:<fn>"
EV = "ev"            # JSON list of the ids of the events that started the run
EVENT = "event"      # the triggering event (JSON); a batch's first event
EVENTS = "events"    # a batch run's events (JSON list)
CREATED = "c"        # created at (epoch seconds)
PARENT = "par"       # the run that invoked or replayed this one
INVOKER = "inv"      # JSON {run, step, fk} of the step that invoked this run
REPLAY_OF = "replay_of"
FROM_STEP = "from_step"
VERSION = "v"        # the function version the run was created on
MARKERS = "mk"       # JSON list of the patch markers declared when the run was created
VERSIONS = "vs"      # JSON list of the versions its passes ran on (the creation one first)
VERSION_WARNINGS = "vw"  # JSON list of the versioning warnings recorded on the run
SEARCH = "sa"        # JSON list of the function's search attribute paths (indexed by the scripts)
DIVERGENCE = "vdv"   # JSON {n, gone}: passes in a row that met new steps while saved ones went unreached
MAX_ATTEMPTS = "atm"  # the attempts the current step may take
# -- passes -----------------------------------------------------------------------------
SEQ = "seq"          # the number of passes ended so far
ATTEMPT = "att"      # the attempt number of the run's current step
RETRY_PASS = "rtp"   # the pass (its seq) that retries the code after a failure outside steps
LEASE = "lease"      # the token of the pass that holds the run ('' between passes)
LEASE_UNTIL = "lu"   # when that lease expires (epoch seconds)
STARTED = "t0"       # the first pass began
ENDED = "t1"         # the run ended
OUTPUT = "out"       # the function's return value (JSON)
ERROR = "err"        # the error that ended the run (JSON)
WAKE = "wake"        # when the run wakes (sleep, retry, wait timeout, throttle); 0 = now
QUEUED_AT = "qa"     # when the next pass was queued (the step's queue time)
TAKEOVERS = "takeovers"  # passes taken over from a worker that died, in a row
CANCEL = "cx"        # set while a cancel request waits for the running pass (JSON reason)
WATCHDOG = "wd"      # watchdog re-offers since the last pass began
STUCK = "stk"        # "<seq>:<time>": the watchdog saw the run stuck at that pass
# -- flow control -----------------------------------------------------------------------
FIRST_PASS = "tf0"   # the first pass began (the finish timeout counts from it)
WAITING_SINCE = "ccw"  # waiting for a concurrency slot since (epoch seconds)
PRIORITY = "prio"    # the priority factor
START_DEADLINE = "dls"  # the start timeout's deadline
CANCEL_KEYS = "cxk"  # JSON [[index, key]] of the cancel-on-event listeners
SINGLETON_KEY = "sgk"
NOT_BEFORE = "nb"    # the throttle's start time
DEBOUNCE_KEY = "deb"
DEBOUNCE_TS = "dts"  # the ts of the debounced event
BATCH_KEY = "bat"

STEP_PREFIX = "s:"           # s:<step id>     the step's record (JSON)
BRANCH_LEASE_PREFIX = "bl:"  # bl:<step id>    a parallel branch's lease token
LEASE_UNTIL_SUFFIX = ":u"    # bl:<step id>:u  when that lease expires (epoch seconds)
BATCH_EVENT_PREFIX = "be:"   # be:<event id>   JSON {n, e}: an event folded into a batch
WATCHDOG_PREFIX = "wd:"      # wd:<step id>    a branch's watchdog count


def step_field(step_id: str) -> str:
    return f"{STEP_PREFIX}{step_id}"


def is_step_field(field: str) -> bool:
    return field.startswith(STEP_PREFIX)


def step_id_of(field: str) -> str:
    """The step id in a :func:`step_field`."""
    return field[len(STEP_PREFIX):]


def branch_lease_field(step_id: str) -> str:
    return f"{BRANCH_LEASE_PREFIX}{step_id}"


def branch_lease_until_field(step_id: str) -> str:
    return f"{BRANCH_LEASE_PREFIX}{step_id}{LEASE_UNTIL_SUFFIX}"


def lease_step(lease_field: str) -> str | None:
    """The step whose branch holds ``lease_field`` (None for the run's own ``lease``)."""
    return lease_field[len(BRANCH_LEASE_PREFIX):] if lease_field != LEASE else None


def batch_event_field(event_id: str) -> str:
    return f"{BATCH_EVENT_PREFIX}{event_id}"


def is_batch_event_field(field: str) -> bool:
    return field.startswith(BATCH_EVENT_PREFIX)


def watchdog_field(step_id: str | None) -> str:
    """The watchdog count of the run (``None``) or of one of its branches."""
    return WATCHDOG if step_id is None else f"{WATCHDOG_PREFIX}{step_id}"


def step_records(fields: Mapping[str, str]) -> dict[str, StepRecord]:
    """The step records in a run's hash, by step id (the memo a pass replays)."""
    return {step_id_of(k): StepRecord.from_json(json.loads(v))
            for k, v in fields.items() if is_step_field(k)}


def step_record_fields(records: Sequence[StepRecord]) -> dict[str, str]:
    """Step records as the run-hash fields that hold them."""
    return {step_field(rec.id): dumps(rec.to_json()) for rec in records}


class RunRecord(TypedDict, total=False):
    st: str
    fn: str
    app: str
    fk: str
    ev: str
    event: str
    events: str
    c: str
    par: str
    inv: str
    replay_of: str
    from_step: str
    v: str
    mk: str
    vs: str
    vw: str
    vdv: str
    rtp: str
    atm: str
    sa: str
    seq: str
    att: str
    lease: str
    lu: str
    t0: str
    t1: str
    out: str
    err: str
    wake: str
    qa: str
    takeovers: str
    cx: str
    wd: str
    stk: str
    tf0: str
    ccw: str
    prio: str
    dls: str
    cxk: str
    sgk: str
    nb: str
    deb: str
    dts: str
    bat: str
"""The fixed fields of a run's hash as read back (all strings); the per-step,
per-branch and per-event fields are outside it (see the prefixes)."""


def new_run_fields(
    fn_id: str,
    app_id: str,
    fn_key: str,
    event: Mapping[str, Any],
    *,
    event_ids: Sequence[Any],
    created: str,
    parent_run_id: str | None = None,
    invoker: Mapping[str, Any] | None = None,
    creation: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The fields a new run is created with: queued, at its first pass and attempt;
    ``creation`` is what the run records about its code (``FunctionDef.creation_fields``)."""
    fields: dict[str, Any] = {
        ST: "queued",
        FN: fn_id,
        APP: app_id,
        FK: fn_key,
        EV: dumps(list(event_ids)),
        EVENT: dumps(event),
        CREATED: created,
        SEQ: "0",
        ATTEMPT: "0",
        **(creation or {}),
    }
    if parent_run_id:
        fields[PARENT] = parent_run_id
    if invoker:
        fields[INVOKER] = dumps(invoker)
    return fields
