"""Flow-control options (no Redis, no Celery).

The option classes users pass to ``client.create_function`` check themselves
when they are built (a bad value raises :class:`fanout.ConfigError` at
decoration time; CEL keys compile there too).  :func:`build_flow` checks the
combination and returns the :class:`FlowSpec` a :class:`FunctionDef` carries.

Their keys and arithmetic are in ``flow_math.py``.  The decisions against Redis are
made in the Celery adapter (``fanout/_celery/admission.py`` at the router,
``gates.py`` and ``slots.py`` at a pass, ``endings.py`` when a run ends), through
``fanout/_redis/flow_store.py`` and the scripts ``fanout/_redis/lua/fc_*.lua``.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._errors import ConfigError
from .durations import parse_duration, show

if TYPE_CHECKING:
    from .expr import Expression

__all__ = [
    "Batch",
    "Cancel",
    "Concurrency",
    "Debounce",
    "FlowSpec",
    "Priority",
    "RateLimit",
    "Singleton",
    "Throttle",
    "Timeouts",
    "build_flow",
]

#: A duration: an int of milliseconds (as in inngest-py), a timedelta, or "30s".
Duration = int | _dt.timedelta | str

MAX_CONCURRENCY = 100_000
MAX_CONCURRENCY_CONSTRAINTS = 2
MAX_THROTTLE = 10_000
MAX_RATE_LIMIT = 100_000
MAX_BATCH_SIZE = 1000
PRIORITY_LIMIT_S = 600.0
IDEMPOTENCY_S = 24 * 3600
WEEK_S = 7 * 86400.0
#: The key of an event whose key expression cannot be evaluated (a missing field...).
UNEVALUABLE_KEY = "\x00"

SYSTEM_FAILED = "fanout/function.failed"
SYSTEM_FINISHED = "fanout/function.finished"
SYSTEM_CANCELLED = "fanout/function.cancelled"
SYSTEM_EVENTS = (SYSTEM_FAILED, SYSTEM_FINISHED, SYSTEM_CANCELLED)


# --------------------------------------------------------------------------- checks


def _int(what: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{what} must be an integer from {low} to {high}, not {value!r}")
    return value


def _seconds(what: str, value: object, low: float, high: float) -> float:
    """Seconds from a duration as inngest-py takes it (an int is milliseconds)."""
    seconds = parse_duration(value, what)
    if not low <= seconds <= high:
        hint = ""
        if isinstance(value, int) and not isinstance(value, bool):
            hint = (
                f"; an int is milliseconds (as in inngest-py): for {value} seconds write "
                f"'{value}s' or timedelta(seconds={value})"
            )
        raise ConfigError(
            f"{what} must be from {_show(low)} to {_show(high)}, not {value!r} "
            f"({_show(seconds)}){hint}"
        )
    return seconds


_show = show


def _cel(what: str, source: object, variables: tuple[str, ...] = ("event",)) -> Expression:
    from .._errors import ExpressionError
    from .expr import compile_expression

    if not isinstance(source, str):
        raise ConfigError(f"{what} must be a CEL expression string, not {type(source).__name__}")
    try:
        return compile_expression(source, variables=variables, what=what)
    except ExpressionError as exc:
        raise ConfigError(str(exc)) from None


def _set(obj: object, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Concurrency:
    """At most ``limit`` steps of this function executing at once per ``key``.

    ``key`` is a CEL expression over ``event`` (``"event.data.user_id"``); without
    it the limit is for the whole function.  ``scope="app"`` shares the count with
    every function of the client that declares the same key.
    """

    limit: int
    key: str | None = None
    scope: str = "fn"
    _key: Expression | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        _int("Concurrency limit", self.limit, 1, MAX_CONCURRENCY)
        if self.scope in ("env", "account"):
            raise ConfigError(
                f"Concurrency scope {self.scope!r} is inngest-py's, shared through the "
                "Inngest server; fanout has scope='fn' (this function) and scope='app' "
                "(every function of the client that declares the same key)"
            )
        if self.scope not in ("fn", "app"):
            raise ConfigError(f"Concurrency scope must be 'fn' or 'app', not {self.scope!r}")
        if self.key is not None:
            _set(self, "_key", _cel("Concurrency key", self.key))


@dataclass(frozen=True)
class Singleton:
    """At most one active run per ``key``: a new run is ``skip``-ped, or it
    ``cancel``-s the active one and runs."""

    key: str | None = None
    mode: str = "skip"
    _key: Expression | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.mode not in ("skip", "cancel"):
            raise ConfigError(f"Singleton mode must be 'skip' or 'cancel', not {self.mode!r}")
        if self.key is not None:
            _set(self, "_key", _cel("Singleton key", self.key))


@dataclass(frozen=True)
class Throttle:
    """At most ``limit`` run starts per ``period`` per ``key``, spread evenly;
    ``burst`` starts may happen at once.  Extra runs wait (nothing is dropped)."""

    limit: int
    period: Duration
    key: str | None = None
    burst: int = 1
    _key: Expression | None = field(default=None, repr=False, compare=False)
    _period_s: float = field(default=0.0, repr=False, compare=False)

    def __post_init__(self) -> None:
        _int("Throttle limit", self.limit, 1, MAX_THROTTLE)
        _int("Throttle burst", self.burst, 1, MAX_THROTTLE)
        _set(self, "_period_s", _seconds("Throttle period", self.period, 1.0, WEEK_S))
        if self.key is not None:
            _set(self, "_key", _cel("Throttle key", self.key))

    @property
    def period_s(self) -> float:
        return self._period_s


@dataclass(frozen=True)
class RateLimit:
    """At most ``limit`` runs per sliding ``period`` per ``key``; extra runs are
    recorded as ``skipped`` and never run."""

    limit: int
    period: Duration
    key: str | None = None
    _key: Expression | None = field(default=None, repr=False, compare=False)
    _period_s: float = field(default=0.0, repr=False, compare=False)

    def __post_init__(self) -> None:
        _int("RateLimit limit", self.limit, 1, MAX_RATE_LIMIT)
        _set(self, "_period_s", _seconds("RateLimit period", self.period, 1.0, 86400.0))
        if self.key is not None:
            _set(self, "_key", _cel("RateLimit key", self.key))

    @property
    def period_s(self) -> float:
        return self._period_s


@dataclass(frozen=True)
class Debounce:
    """One run per ``key`` with the last event, ``period`` after the last event;
    ``timeout`` caps the delay since the first one."""

    period: Duration
    key: str | None = None
    timeout: Duration | None = None
    _key: Expression | None = field(default=None, repr=False, compare=False)
    _period_s: float = field(default=0.0, repr=False, compare=False)
    _timeout_s: float | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        _set(self, "_period_s", _seconds("Debounce period", self.period, 1.0, WEEK_S))
        if self.timeout is not None:
            t = _seconds("Debounce timeout", self.timeout, 1.0, WEEK_S)
            if t < self._period_s:
                raise ConfigError(
                    f"Debounce timeout ({_show(t)}) must not be shorter than its period "
                    f"({_show(self._period_s)})"
                )
            _set(self, "_timeout_s", t)
        if self.key is not None:
            _set(self, "_key", _cel("Debounce key", self.key))

    @property
    def period_s(self) -> float:
        return self._period_s

    @property
    def timeout_s(self) -> float | None:
        return self._timeout_s


@dataclass(frozen=True)
class Batch:
    """One run for up to ``max_size`` events (``ctx.events``), started when the
    batch is full or ``timeout`` after its first event. With ``if_exp`` (CEL over
    ``event``), only the events it is true for are batched; the others start a run
    of their own at once."""

    max_size: int
    timeout: Duration
    key: str | None = None
    if_exp: str | None = None
    _key: Expression | None = field(default=None, repr=False, compare=False)
    _if: Expression | None = field(default=None, repr=False, compare=False)
    _timeout_s: float = field(default=0.0, repr=False, compare=False)

    def __post_init__(self) -> None:
        _int("Batch max_size", self.max_size, 1, MAX_BATCH_SIZE)
        _set(self, "_timeout_s", _seconds("Batch timeout", self.timeout, 1.0, 3600.0))
        if self.key is not None:
            _set(self, "_key", _cel("Batch key", self.key))
        if self.if_exp is not None:
            _set(self, "_if", _cel("Batch if_exp", self.if_exp))

    def takes(self, event: Mapping[str, Any]) -> bool:
        """Whether ``event`` joins a batch (``if_exp`` true, or no ``if_exp``)."""
        return self._if is None or bool(self._if.matches({"event": dict(event)}))

    @property
    def timeout_s(self) -> float:
        return self._timeout_s


@dataclass(frozen=True)
class Priority:
    """``run``: CEL over ``event`` giving seconds (-600..600).  A run waiting for a
    concurrency slot is ordered as if it had started waiting that many seconds
    earlier (later, if negative).  Needs ``concurrency``."""

    run: str | None = None
    _run: Expression | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.run is None:
            raise ConfigError("Priority needs run=<CEL expression giving seconds>")
        _set(self, "_run", _cel("Priority run", self.run))


@dataclass(frozen=True)
class Cancel:
    """Cancel a running run when an ``event`` arrives that matches it.

    ``match`` is a field path equal in both events (``"data.order_id"``);
    ``if_exp`` is CEL over ``event`` (the run's trigger) and ``async`` (the
    incoming event); ``timeout`` stops listening that long after the run began.
    """

    event: str
    if_exp: str | None = None
    match: str | None = None
    timeout: Duration | None = None
    _if: Expression | None = field(default=None, repr=False, compare=False)
    _timeout_s: float | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        from .triggers import validate_event_pattern

        validate_event_pattern(self.event)
        if "*" in self.event:
            raise ConfigError(f"Cancel event must be an exact event name, not {self.event!r}")
        if self.if_exp is not None:
            _set(self, "_if", _cel("Cancel if_exp", self.if_exp, ("event", "async")))
        if self.match is not None and (
            not isinstance(self.match, str) or not self.match or " " in self.match
        ):
            raise ConfigError(
                f"Cancel match must be a field path such as 'data.user_id', not {self.match!r}"
            )
        if self.timeout is not None:
            _set(self, "_timeout_s", _seconds("Cancel timeout", self.timeout, 1.0, 366 * 86400.0))

    @property
    def timeout_s(self) -> float | None:
        return self._timeout_s


@dataclass(frozen=True)
class Timeouts:
    """``start``: longest a run may stay queued before its first step; ``finish``:
    longest from its first step to its end.  A run past either is cancelled."""

    start: Duration | None = None
    finish: Duration | None = None
    _start_s: float | None = field(default=None, repr=False, compare=False)
    _finish_s: float | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.start is None and self.finish is None:
            raise ConfigError("Timeouts needs start=, finish= or both")
        if self.start is not None:
            _set(self, "_start_s", _seconds("Timeouts start", self.start, 0.1, 366 * 86400.0))
        if self.finish is not None:
            _set(self, "_finish_s", _seconds("Timeouts finish", self.finish, 0.1, 366 * 86400.0))

    @property
    def start_s(self) -> float | None:
        return self._start_s

    @property
    def finish_s(self) -> float | None:
        return self._finish_s


# --------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class FlowSpec:
    """A function's flow control, checked as a whole."""

    concurrency: tuple[Concurrency, ...] = ()
    singleton: Singleton | None = None
    throttle: Throttle | None = None
    rate_limit: RateLimit | None = None
    debounce: Debounce | None = None
    batch: Batch | None = None
    priority: Priority | None = None
    idempotency: str | None = None
    cancel: tuple[Cancel, ...] = ()
    timeouts: Timeouts | None = None
    _idem: Expression | None = field(default=None, repr=False, compare=False)

    @property
    def at_start(self) -> bool:
        """Whether creating a run involves flow control (else the plain router path)."""
        return bool(
            self.singleton or self.throttle or self.rate_limit or self.debounce or self.batch
            or self.priority or self.idempotency or self.cancel or self.timeouts
        )

    @property
    def at_pass(self) -> bool:
        """Whether a pass involves flow control (slots, deadlines, batch/debounce close)."""
        return bool(self.concurrency or self.timeouts or self.batch or self.debounce)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.concurrency:
            out["concurrency"] = [
                {"limit": c.limit, "key": c.key, "scope": c.scope} for c in self.concurrency
            ]
        if self.singleton:
            out["singleton"] = {"key": self.singleton.key, "mode": self.singleton.mode}
        if self.throttle:
            t = self.throttle
            out["throttle"] = {"limit": t.limit, "period": t.period_s, "key": t.key, "burst": t.burst}
        if self.rate_limit:
            r = self.rate_limit
            out["rate_limit"] = {"limit": r.limit, "period": r.period_s, "key": r.key}
        if self.debounce:
            d = self.debounce
            out["debounce"] = {"period": d.period_s, "key": d.key, "timeout": d.timeout_s}
        if self.batch:
            b = self.batch
            out["batch_events"] = {"max_size": b.max_size, "timeout": b.timeout_s, "key": b.key}
        if self.priority:
            out["priority"] = {"run": self.priority.run}
        if self.idempotency:
            out["idempotency"] = self.idempotency
        if self.cancel:
            out["cancel"] = [
                {"event": c.event, "if_exp": c.if_exp, "match": c.match, "timeout": c.timeout_s}
                for c in self.cancel
            ]
        if self.timeouts:
            out["timeouts"] = {"start": self.timeouts.start_s, "finish": self.timeouts.finish_s}
        return out


NO_FLOW = FlowSpec()


def _one(fid: str, name: str, value: object, cls: type) -> Any:
    if value is not None and not isinstance(value, cls):
        raise ConfigError(
            f"function {fid!r}: {name} must be a fanout.{cls.__name__}, not {type(value).__name__}"
        )
    return value


def _many(fid: str, name: str, value: object, cls: type) -> tuple[Any, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, cls) else value
    if not isinstance(items, (list, tuple)):
        raise ConfigError(
            f"function {fid!r}: {name} must be a fanout.{cls.__name__} or a list of them, "
            f"not {type(value).__name__}"
        )
    for i, item in enumerate(items):
        if not isinstance(item, cls):
            raise ConfigError(
                f"function {fid!r}: {name}[{i}] must be a fanout.{cls.__name__}, "
                f"not {type(item).__name__}"
            )
    return tuple(items)


def build_flow(
    fid: str,
    *,
    concurrency: object = None,
    singleton: object = None,
    throttle: object = None,
    rate_limit: object = None,
    debounce: object = None,
    batch_events: object = None,
    priority: object = None,
    idempotency: object = None,
    cancel: object = None,
    timeouts: object = None,
) -> FlowSpec:
    """Check each option's type and the combination; return the spec."""
    conc = _many(fid, "concurrency", concurrency, Concurrency)
    if len(conc) > MAX_CONCURRENCY_CONSTRAINTS:
        raise ConfigError(
            f"function {fid!r}: at most {MAX_CONCURRENCY_CONSTRAINTS} concurrency limits, "
            f"not {len(conc)}"
        )
    if len({(c.scope, c.key) for c in conc}) < len(conc):
        raise ConfigError(
            f"function {fid!r}: two concurrency limits with the same scope and key"
        )
    spec = FlowSpec(
        concurrency=conc,
        singleton=_one(fid, "singleton", singleton, Singleton),
        throttle=_one(fid, "throttle", throttle, Throttle),
        rate_limit=_one(fid, "rate_limit", rate_limit, RateLimit),
        debounce=_one(fid, "debounce", debounce, Debounce),
        batch=_one(fid, "batch_events", batch_events, Batch),
        priority=_one(fid, "priority", priority, Priority),
        idempotency=None,
        cancel=_many(fid, "cancel", cancel, Cancel),
        timeouts=_one(fid, "timeouts", timeouts, Timeouts),
    )
    if idempotency is not None:
        expr = _cel(f"idempotency of function {fid!r}", idempotency)
        spec = FlowSpec(**{**_fields(spec), "idempotency": idempotency, "_idem": expr})
    if spec.batch is not None:
        clash = [
            name
            for name, present in (
                ("debounce", spec.debounce),
                ("cancel", spec.cancel),
                ("idempotency", spec.idempotency),
                ("rate_limit", spec.rate_limit),
                ("priority", spec.priority),
                ("singleton", spec.singleton),
            )
            if present
        ]
        if clash:
            raise ConfigError(
                f"function {fid!r}: batch_events cannot be combined with {', '.join(clash)} "
                "(one run serves many events, so these per-event controls have no meaning)"
            )
    if spec.priority is not None and not spec.concurrency:
        raise ConfigError(
            f"function {fid!r}: priority=Priority(run=...) without concurrency: Inngest "
            "(inngest.Priority) orders every run of the function, but fanout's priority "
            "orders runs waiting for a concurrency slot, so write priority=fanout.Priority("
            "run=...) together with concurrency=[fanout.Concurrency(limit=...)] (without a "
            "limit nothing waits in fanout: steps go straight to the Celery queue)"
        )
    return spec


def _fields(spec: FlowSpec) -> dict[str, Any]:
    return {name: getattr(spec, name) for name in FlowSpec.__dataclass_fields__}


def as_timestamp(value: object, what: str) -> float | None:
    """Epoch seconds from None, a number or an aware datetime."""
    if value is None:
        return None
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            raise ConfigError(f"{what} needs an aware datetime (with tzinfo), not {value!r}")
        return value.timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise ConfigError(f"{what} must be an aware datetime or epoch seconds, not {value!r}")


def is_system_event(name: object) -> bool:
    return isinstance(name, str) and name in SYSTEM_EVENTS


def check_on_failure(fid: str, handler: object) -> None:
    if handler is not None and not callable(handler):
        raise ConfigError(f"function {fid!r}: on_failure must be a callable handler")

