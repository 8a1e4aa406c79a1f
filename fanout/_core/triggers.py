"""Triggers, and the pure matcher the router uses to find a function's subscribers."""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._errors import ConfigError

if TYPE_CHECKING:
    from .expr import Expression
    from .schedule import CronSchedule

__all__ = ["SubscriberIndex", "TriggerCron", "TriggerEvent", "validate_event_pattern"]

_NAME_CHARS = re.compile(r"^[^\s*]+$")


def validate_event_pattern(pattern: object) -> str:
    """Check an event name or wildcard pattern and return it.

    Exact names and trailing wildcards are allowed; a wildcard must be the last
    character and follow ``/`` or ``.`` (``app/*``, ``app/user.*``).
    """
    if not isinstance(pattern, str):
        raise ConfigError(f"trigger event must be a string, not {type(pattern).__name__}")
    if not pattern.strip():
        raise ConfigError("trigger event is empty")
    if len(pattern) > 256:
        raise ConfigError(f"trigger event {pattern[:40]!r}... is longer than 256 characters")
    if "*" in pattern:
        star = pattern.index("*")
        if star != len(pattern) - 1 or star == 0 or pattern[star - 1] not in "/.":
            raise ConfigError(
                f"invalid trigger event {pattern!r}: a wildcard '*' may only come last, "
                "right after '/' or '.' (for example 'app/*' or 'app/user.*')"
            )
        head = pattern[:-1]
    else:
        head = pattern
    if not _NAME_CHARS.match(head):
        raise ConfigError(f"invalid trigger event {pattern!r}: names may not contain spaces")
    return pattern


@dataclass(frozen=True)
class TriggerEvent:
    """Start a run for each event named ``event`` (exact, or ``prefix/*``).

    ``expression`` is an optional CEL filter over ``event``, compiled here:
    ``TriggerEvent(event="app/order.created", expression="event.data.total > 100")``.
    """

    event: str
    expression: str | None = None
    _compiled: Expression | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        validate_event_pattern(self.event)
        if self.expression is not None:
            from .expr import compile_expression

            compiled = compile_expression(
                self.expression, variables=("event",), what=f"trigger {self.event!r}"
            )
            object.__setattr__(self, "_compiled", compiled)

    @property
    def is_wildcard(self) -> bool:
        return self.event.endswith("*")

    def accepts(self, event: Mapping[str, Any]) -> bool:
        """True when ``event`` (wire form) passes this trigger's expression."""
        if self._compiled is None:
            return True
        return self._compiled.matches({"event": dict(event)})


@dataclass(frozen=True)
class TriggerCron:
    """Start a run on a cron schedule: ``TriggerCron(cron="TZ=Europe/Paris 0 12 * * 5")``.

    ``jitter`` delays each tick by a random 1 s to 5 min: a string such as ``"30s"``,
    a timedelta, or a number of seconds (jitter is fanout's own setting, so a number
    is seconds, not milliseconds).
    """

    cron: str
    jitter: float | int | _dt.timedelta | str | None = None
    _schedule: CronSchedule | None = field(default=None, repr=False, compare=False)
    _jitter_s: float | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        from .schedule import CronSchedule, parse_jitter

        try:
            sched = CronSchedule.parse(self.cron)
            jit = parse_jitter(self.jitter)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        object.__setattr__(self, "_schedule", sched)
        object.__setattr__(self, "_jitter_s", jit)

    @property
    def schedule(self) -> CronSchedule:
        assert self._schedule is not None
        return self._schedule

    @property
    def jitter_seconds(self) -> float | None:
        return self._jitter_s


Trigger = TriggerEvent | TriggerCron


class SubscriberIndex:
    """Maps event names to (subscriber, trigger) pairs.

    Exact names are one dict lookup; wildcards are looked up by each prefix of the
    name that ends in ``/`` or ``.``, so matching costs O(segments), not O(functions).
    """

    def __init__(self) -> None:
        self._exact: dict[str, list[tuple[Any, TriggerEvent]]] = {}
        self._prefix: dict[str, list[tuple[Any, TriggerEvent]]] = {}

    def add(self, subscriber: Any, trigger: TriggerEvent) -> None:
        if trigger.is_wildcard:
            self._prefix.setdefault(trigger.event[:-1], []).append((subscriber, trigger))
        else:
            self._exact.setdefault(trigger.event, []).append((subscriber, trigger))

    def candidates(self, name: str) -> Iterable[tuple[Any, TriggerEvent]]:
        yield from self._exact.get(name, ())
        if self._prefix:
            for i, ch in enumerate(name):
                if ch in "/." and i + 1 < len(name):
                    yield from self._prefix.get(name[: i + 1], ())

    def match(self, event: Mapping[str, Any]) -> list[Any]:
        """The distinct subscribers whose triggers accept ``event``, in registration order."""
        seen: dict[int, Any] = {}
        for sub, trig in self.candidates(str(event.get("name", ""))):
            if id(sub) not in seen and trig.accepts(event):
                seen[id(sub)] = sub
        return list(seen.values())
