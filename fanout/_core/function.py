"""Function declarations: options are checked when the decorator runs."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._errors import ConfigError
from .engine import is_async_handler
from .event import MAX_EVENT_BYTES, quoted
from .flow import NO_FLOW, FlowSpec, build_flow
from .outcomes import INNGEST_BACKOFF, RetryPolicy
from .run_record import SEARCH
from .search import check_search
from .triggers import Trigger, TriggerCron, TriggerEvent
from .versions import check_patches, check_version, creation_fields

MAX_TRIGGERS = 10
MAX_RETRIES = 20
#: How long one ``fanout.step`` task may go on running a run's next steps (seconds)
#: before it hands the run back to the broker; 0 is one task per step.
DEFAULT_PASS_BUDGET = 0.05
MAX_PASS_BUDGET = 300.0
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$")


def check_id(kind: str, value: object) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise ConfigError(
            f"invalid {kind} {quoted(value)}: use 1 to 128 characters from letters, digits and "
            "'_ . : / -', starting with a letter or digit (Inngest accepts any app id; "
            "fanout puts it in Redis Cluster hash tags)"
        )
    return value


def check_fn_id(value: object) -> str:
    """A function id: 1 to 128 printable characters (as in Inngest), not only spaces.
    Where a Redis key or a name needs it, fanout encodes it (``ids.key_part``)."""
    if (not isinstance(value, str) or not value or len(value) > 128
            or not value.isprintable() or not value.strip()):
        raise ConfigError(
            f"invalid fn_id {quoted(value)}: use 1 to 128 printable characters (no newlines or "
            "control characters), not only spaces"
        )
    return value


def check_pass_budget(value: object, where: str = "") -> float:
    """A pass budget: a number of seconds from 0 to :data:`MAX_PASS_BUDGET` (not a bool)."""
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or not 0 <= value <= MAX_PASS_BUDGET):
        raise ConfigError(
            f"{where}pass_budget must be a number of seconds from 0 to {MAX_PASS_BUDGET:g} "
            f"(0: one fanout.step task per step), not {value!r}"
        )
    return float(value)


def check_backoff(value: object) -> tuple[float, ...]:
    if value is None:
        return INNGEST_BACKOFF
    try:
        table = tuple(float(v) for v in value)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise ConfigError(f"backoff must be a sequence of seconds, not {value!r}") from None
    if not table or any(v < 0 or v != v for v in table):
        raise ConfigError(f"backoff must be a non-empty sequence of seconds >= 0, not {value!r}")
    return table


@dataclass
class FunctionDef:
    """A declared function. ``key`` (``app_id:fn_id``) names it across clients."""

    app_id: str
    fn_id: str
    name: str
    handler: Callable[..., Any]
    triggers: list[Trigger]
    retries: int
    policy: RetryPolicy
    checkpoint: bool = False
    is_async: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    flow: FlowSpec = NO_FLOW
    #: For an ``on_failure`` handler: the key of the function whose failures it handles.
    failure_of: str | None = None
    #: The code's version (``version=``, else a fingerprint of the handler's source).
    version: str = ""
    #: Patch markers this code declares (``ctx.patched``).
    patches: tuple[str, ...] = ()
    #: Strict mode: a change in the order of steps fails a run in flight.
    strict_order: bool = False
    #: Search attributes: ``data.`` / ``output.`` paths its runs are indexed by
    #: (:mod:`fanout._core.search`).
    search: tuple[str, ...] = ()
    #: Seconds one ``fanout.step`` task may keep running the run's next steps before
    #: it hands the run back to the broker (0: one task per step).
    pass_budget: float = DEFAULT_PASS_BUDGET

    def creation_fields(self) -> dict[str, str]:
        """What a new run of this function records about the code it was created on
        (and the search attributes the run scripts index it by)."""
        out = creation_fields(self.version, self.patches)
        if self.search:
            out[SEARCH] = json.dumps(list(self.search), separators=(",", ":"))
        return out
    #: The declaring client's logger for ``ctx.logger`` (``Fanout.set_logger``), read at
    #: each pass; None means the ``fanout.run`` logger.
    logger_of: Callable[[], Any] | None = field(default=None, repr=False, compare=False)
    #: Middleware classes, the client's first (see :mod:`fanout._core.middleware`),
    #: and the client they are built with.
    middleware: tuple[Any, ...] = ()
    client: Any = field(default=None, repr=False, compare=False)
    #: The client's limit on one event's serialized size (``ctx.step.send_event``).
    max_event_bytes: int = MAX_EVENT_BYTES

    @property
    def id(self) -> str:
        """The fully-qualified id, as inngest-py forms it: ``<app_id>-<fn_id>``."""
        return f"{self.app_id}-{self.fn_id}"

    @property
    def key(self) -> str:
        return f"{self.app_id}:{self.fn_id}"

    @property
    def event_triggers(self) -> list[TriggerEvent]:
        return [t for t in self.triggers if isinstance(t, TriggerEvent)]

    @property
    def cron_triggers(self) -> list[TriggerCron]:
        return [t for t in self.triggers if isinstance(t, TriggerCron)]

    def describe(self) -> dict[str, Any]:
        """A JSON summary (CLI, dashboard)."""
        trig: list[dict[str, Any]] = []
        for t in self.triggers:
            if isinstance(t, TriggerEvent):
                trig.append({"event": t.event, "expression": t.expression})
            else:
                trig.append({"cron": t.cron, "jitter": t.jitter_seconds})
        return {
            "app_id": self.app_id,
            "fn_id": self.fn_id,
            "name": self.name,
            "triggers": trig,
            "retries": self.retries,
            "checkpoint": self.checkpoint,
            "async": self.is_async,
            "version": self.version,
            **({"patches": list(self.patches)} if self.patches else {}),
            **({"strict_order": True} if self.strict_order else {}),
            **({"pass_budget": self.pass_budget}
               if self.pass_budget != DEFAULT_PASS_BUDGET else {}),
            **self.flow.describe(),
            **({"on_failure_of": self.failure_of} if self.failure_of else {}),
        }


def build_function(
    *,
    app_id: str,
    fn_id: object,
    trigger: object,
    name: object,
    retries: object,
    backoff: object,
    checkpoint: object,
    handler: Callable[..., Any],
    flow: dict[str, Any] | None = None,
    version: object = None,
    patches: object = None,
    strict_order: object = False,
    search: object = None,
    pass_budget: object = DEFAULT_PASS_BUDGET,
) -> FunctionDef:
    """Check a declaration; ``flow`` holds the flow-control keyword arguments."""
    fid = check_fn_id(fn_id)
    triggers: Sequence[object]
    if isinstance(trigger, (TriggerEvent, TriggerCron)):
        triggers = [trigger]
    elif isinstance(trigger, (list, tuple)):
        triggers = list(trigger)
    else:
        raise ConfigError(
            f"function {fid!r}: trigger must be a TriggerEvent, a TriggerCron or a list of "
            f"them, not {type(trigger).__name__}"
        )
    if not triggers:
        raise ConfigError(f"function {fid!r}: at least one trigger is needed")
    if len(triggers) > MAX_TRIGGERS:
        raise ConfigError(
            f"function {fid!r}: {len(triggers)} triggers; the limit is {MAX_TRIGGERS}"
        )
    for i, t in enumerate(triggers):
        if not isinstance(t, (TriggerEvent, TriggerCron)):
            raise ConfigError(
                f"function {fid!r}: trigger[{i}] is a {type(t).__name__}, "
                "not a TriggerEvent or TriggerCron"
            )
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= MAX_RETRIES:
        raise ConfigError(
            f"function {fid!r}: retries must be an integer from 0 to {MAX_RETRIES}, "
            f"not {retries!r}"
        )
    if name is not None and not isinstance(name, str):
        raise ConfigError(f"function {fid!r}: name must be a string")
    if not callable(handler):
        raise ConfigError(f"function {fid!r}: the decorated object is not callable")
    spec = build_flow(fid, **(flow or {}))
    if spec.batch is not None and any(isinstance(t, TriggerCron) for t in triggers):
        raise ConfigError(f"function {fid!r}: batch_events needs event triggers, not cron")
    return FunctionDef(
        app_id=app_id,
        fn_id=fid,
        name=name or fid,
        handler=handler,
        triggers=list(triggers),  # type: ignore[arg-type]
        retries=retries,
        policy=RetryPolicy(retries=retries, backoff=check_backoff(backoff)),
        checkpoint=bool(checkpoint),
        is_async=is_async_handler(handler),
        flow=spec,
        version=check_version(fid, version, handler),
        patches=check_patches(fid, patches),
        strict_order=bool(strict_order),
        search=check_search(fid, search),
        pass_budget=check_pass_budget(pass_budget, f"function {fid!r}: "),
    )


def routing_digest(fn: FunctionDef) -> str:
    """A digest of what routing an event reads of ``fn``: its triggers, cancel specs
    and flow control, its version and patches, what a new run records (search
    attributes) and whose failures it handles.  A sender routes its own events only
    when every worker's functions have the digests of its own (``declared.py``)."""
    what = {**fn.describe(), "search": list(fn.search)}
    what.pop("name", None)  # shown, never read by routing
    text = json.dumps(what, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
