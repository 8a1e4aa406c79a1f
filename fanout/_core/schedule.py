"""Cron schedule math for ``fanout.TriggerCron`` (pure: no Celery, no Redis).

Public functions take timezone-aware datetimes (any zone) and return aware UTC ones.

Syntax
    Five fields, ``minute hour day-of-month month day-of-week``, as understood
    by ``croniter`` (lists, ranges, steps, month/day names, ``L``, ``W``, ``#``,
    ``?``; ranges may wrap, e.g. ``fri-mon``). Also the aliases ``@hourly``,
    ``@daily``, ``@midnight``, ``@weekly``, ``@monthly``, ``@yearly`` and
    ``@annually``. Rejected with :class:`ValueError`: any other field count
    (no seconds or year field), ``@reboot`` and other aliases, ``H``/``R``
    (hashed/random) fields, out-of-range values and expressions that never
    fire (``0 0 31 2 *``). An optional zone prefix selects an IANA zone, e.g.
    ``TZ=Europe/Paris 0 12 * * 5`` (``CRON_TZ=`` works too); the default is UTC.

Time zones and DST
    The expression is matched against the *wall clock* of the zone, one
    matching wall time at a time, and each wall time is turned into a UTC
    instant by this module (croniter only ever sees naive wall times):

    * a wall time that occurs once fires at that instant;
    * a wall time that occurs twice (fall back) fires once, at its first
      occurrence (``fold=0``); the repeated stretch fires nothing new, so
      ``0 * * * *`` fires once for the repeated hour;
    * a wall time that does not exist (spring forward) fires once, at the
      first instant after the gap (02:30 on the spring-forward day in
      Europe/Paris fires at 03:00 local, 01:00 UTC). Several wall times in
      the same gap, and a real tick at the gap's end, coalesce into a single
      tick.

    Ticks are therefore strictly increasing UTC instants with no duplicates,
    and every matching wall time is accounted for by exactly one tick.

Catch-up
    :func:`plan_catch_up` lists at most :data:`MAX_SKIPPED` (1000) skipped ticks,
    the newest; ``CatchUp.truncated`` says when older ones were left out.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from itertools import takewhile
from zoneinfo import ZoneInfo, available_timezones

from croniter import CroniterBadDateError, croniter  # type: ignore[import-untyped,unused-ignore]

from .ids import id_from_digest

_UTC = timezone.utc

MAX_SKIPPED = 1000
"""Upper bound on ``len(CatchUp.skipped)``."""

JITTER_MIN_SECONDS = 1.0
JITTER_MAX_SECONDS = 300.0

_MINUTE = timedelta(minutes=1)
_MICROSECOND = timedelta(microseconds=1)
_LOOKBACK = timedelta(days=366)
_ALIASES = ("@annually", "@daily", "@hourly", "@midnight", "@monthly", "@weekly", "@yearly")
_FIELD_NAMES = ("minute", "hour", "day-of-month", "month", "day-of-week")
_FIELD_CHARS = re.compile(r"[0-9a-z*/,?#-]+", re.ASCII)
_WORD = re.compile(r"[a-z]+", re.ASCII)
_WHITESPACE = re.compile(r"[ \t\r\n\f\v]+", re.ASCII)
_ZONE_PREFIXES = ("tz=", "cron_tz=")
_HOST_ZONES = frozenset({"localtime", "posixrules", "Factory"})
# Errors croniter (or zoneinfo) may raise on malformed input.
_INPUT_ERRORS = (ValueError, KeyError, IndexError, TypeError, OverflowError)
_ITER_ERRORS = (CroniterBadDateError, OverflowError, ValueError)


def _bad(cron: object, problem: str) -> ValueError:
    return ValueError(f"invalid cron expression {cron!r}: {problem}")


@lru_cache(maxsize=1)
def _known_zones() -> frozenset[str]:
    # IANA names only: "localtime" & co. depend on the host, so two beats could disagree.
    return (frozenset(available_timezones()) | {"UTC"}) - _HOST_ZONES


@lru_cache(maxsize=256)
def _load_zone(name: str) -> ZoneInfo:
    if name not in _known_zones():
        raise ValueError(f"unknown time zone {name!r}")
    try:
        return ZoneInfo(name)
    except Exception as exc:  # ZoneInfoNotFoundError, OSError, ...
        raise ValueError(f"unknown time zone {name!r}") from exc


@lru_cache(maxsize=1024)
def _expr_problem(expr: str) -> str | None:
    """What is wrong with a normalised expression, or None when it is valid."""
    if expr.startswith("@"):
        if expr not in _ALIASES:
            return f"unsupported alias {expr!r} (supported: {' '.join(_ALIASES)})"
    else:
        fields = expr.split(" ")
        if len(fields) != 5:
            return (
                f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}"
            )
        for index, field in enumerate(fields):
            name = _FIELD_NAMES[index]
            low = field.lower()
            if _FIELD_CHARS.fullmatch(low) is None:
                return f"unexpected character in {name} field {field!r}"
            if {"h", "r"} & set(_WORD.findall(low)):
                return f"hashed/random ('H'/'R') values unsupported: {field!r}"
            alone = " ".join(field if i == index else "*" for i in range(5))
            try:  # check each field on its own first, to name the culprit
                croniter(alone, datetime(2000, 1, 1))
            except _INPUT_ERRORS:
                return f"invalid {name} field {field!r}"
    try:
        croniter(expr, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterBadDateError:
        return "the schedule never fires"
    except _INPUT_ERRORS as exc:
        return f"invalid field combination ({exc})"
    return None


def _as_utc(name: str, value: datetime) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value.isoformat()}")
    return value.astimezone(_UTC)


def _wall(instant: datetime, zone: ZoneInfo) -> datetime:
    """Naive wall-clock time of a UTC instant in ``zone``."""
    return instant.astimezone(zone).replace(tzinfo=None, fold=0)


def _minus(instant: datetime, *deltas: timedelta) -> datetime:
    try:
        return instant - sum(deltas, timedelta(0))
    except OverflowError:
        return datetime.min.replace(tzinfo=_UTC)


def _offset_at(ts: int, zone: ZoneInfo) -> timedelta | None:
    return datetime.fromtimestamp(ts, _UTC).astimezone(zone).utcoffset()


@lru_cache(maxsize=512)
def _gap_end(wall: datetime, zone: ZoneInfo) -> datetime:
    """First instant after the DST gap that swallows the wall time ``wall``."""
    a = wall.replace(tzinfo=zone, fold=0).astimezone(_UTC)
    b = wall.replace(tzinfo=zone, fold=1).astimezone(_UTC)
    lo_ts, hi_ts = math.floor(min(a, b).timestamp()), math.ceil(max(a, b).timestamp())
    before = _offset_at(lo_ts, zone)
    while hi_ts - lo_ts > 1:  # offsets change on whole seconds
        mid = (lo_ts + hi_ts) // 2
        if _offset_at(mid, zone) == before:
            lo_ts = mid
        else:
            hi_ts = mid
    end = datetime.fromtimestamp(hi_ts, _UTC)
    return end if _wall(end, zone) > wall else max(a, b)


def _to_utc(wall: datetime, zone: ZoneInfo) -> datetime:
    """UTC instant at which the wall time ``wall`` fires (see module docstring)."""
    instant = wall.replace(tzinfo=zone, fold=0).astimezone(_UTC)
    if _wall(instant, zone) == wall:
        return instant  # exists; fold=0 is the first occurrence when repeated
    return _gap_end(wall, zone)


@dataclass(frozen=True)
class CronSchedule:
    """A validated cron schedule evaluated in the wall clock of ``zone``."""

    expr: str
    zone: str = "UTC"

    def __post_init__(self) -> None:
        if not isinstance(self.expr, str) or not isinstance(self.zone, str):
            msg = f"invalid cron schedule: expr={self.expr!r} zone={self.zone!r}"
            raise ValueError(msg)  # by contract, not TypeError
        problem = _expr_problem(self.expr)
        if problem is not None:
            raise _bad(self.expr, problem)
        _load_zone(self.zone)

    @classmethod
    def parse(cls, cron: str) -> CronSchedule:
        """Parse ``"[TZ=Zone/Name] m h dom mon dow"`` or an alias; raise ValueError."""
        if not isinstance(cron, str):
            msg = f"cron expression must be a str, got {type(cron).__name__}: {cron!r}"
            raise ValueError(msg)  # by contract, not TypeError
        parts = [p for p in _WHITESPACE.split(cron) if p]
        if not parts:
            raise _bad(cron, "empty expression")
        zone = "UTC"
        head = parts[0]
        prefix = next((p for p in _ZONE_PREFIXES if head.lower().startswith(p)), None)
        if prefix is not None:
            zone = head[len(prefix) :]
            parts = parts[1:]
            if not zone:
                raise _bad(cron, f"empty time zone after {head!r}")
            try:
                _load_zone(zone)
            except ValueError as exc:
                raise _bad(cron, str(exc)) from None
            if not parts:
                raise _bad(cron, f"no schedule after {head!r}")
        if parts[0].startswith("@"):
            if len(parts) != 1:
                raise _bad(cron, f"alias {parts[0]!r} takes no further fields")
            expr = parts[0].lower()
        else:
            expr = " ".join(parts)
        problem = _expr_problem(expr)
        if problem is not None:
            raise _bad(cron, problem)
        return cls(expr=expr, zone=zone)

    def __str__(self) -> str:
        return self.expr if self.zone == "UTC" else f"TZ={self.zone} {self.expr}"

    @property
    def tzinfo(self) -> ZoneInfo:
        return _load_zone(self.zone)

    def _forward(self, after: datetime) -> Iterator[datetime]:
        """Ticks strictly after the UTC instant ``after``, ascending, deduplicated."""
        zone = self.tzinfo
        last = after
        try:
            it = croniter(self.expr, _wall(after, zone))
            while True:
                tick = _to_utc(it.get_next(datetime), zone)
                if tick > last:  # skips repeated (fold) and coalesced (gap) wall times
                    last = tick
                    yield tick
        except _ITER_ERRORS:
            return

    def _backward(self, tick: datetime) -> Iterator[datetime]:
        """Ticks strictly before ``tick`` (which must itself be a tick), descending."""
        zone = self.tzinfo
        last = tick
        try:
            it = croniter(self.expr, _wall(tick, zone))
            while True:
                earlier = _to_utc(it.get_prev(datetime), zone)
                if earlier < last:
                    last = earlier
                    yield earlier
        except _ITER_ERRORS:
            return

    def _latest(self, now: datetime, floor: datetime) -> datetime | None:
        """Latest tick ``t`` with ``floor < t <= now`` (UTC), or None."""
        zone = self.tzinfo
        found: datetime | None = None
        wall_now = _wall(now, zone).replace(second=0, microsecond=0)
        try:
            it = croniter(self.expr, wall_now + _MINUTE)
            while True:  # wall times <= wall(now), newest first
                tick = _to_utc(it.get_prev(datetime), zone)
                if tick <= floor:
                    break
                if tick <= now:
                    found = tick
                    break
        except _ITER_ERRORS:
            pass
        # After a fall-back, later wall times may map to earlier instants: walk forward.
        for tick in self._forward(floor if found is None else found):
            if tick > now:
                break
            found = tick
        return found

    def next_after(self, after: datetime) -> datetime:
        """First tick strictly after ``after``."""
        start = _as_utc("after", after)
        for tick in self._forward(start):
            return tick
        raise ValueError(f"{self} has no tick after {start.isoformat()} (date out of range)")

    def ticks_between(self, start: datetime, end: datetime) -> Iterator[datetime]:
        """Ticks ``t`` with ``start < t <= end``, ascending."""
        lo, hi = _as_utc("start", start), _as_utc("end", end)

        return takewhile(lambda tick: tick <= hi, self._forward(lo))

    def latest_at_or_before(
        self, now: datetime, *, lookback: timedelta = _LOOKBACK
    ) -> datetime | None:
        """Most recent tick ``<= now`` within ``lookback`` (default 366 days), else None."""
        current = _as_utc("now", now)
        return self._latest(current, _minus(current, lookback))


# -- jitter ----------------------------------------------------------------------------


def parse_jitter(jitter: float | timedelta | str | None) -> float | None:
    """Validate a jitter setting; return seconds (1 to 300 inclusive) or None.

    ``jitter`` is fanout's own (inngest-py's ``TriggerCron`` has none), so a number
    is seconds; a timedelta or a duration string such as ``"30s"`` also works.
    """
    if jitter is None:
        return None
    if isinstance(jitter, str):
        from .durations import parse_seconds

        seconds = parse_seconds(jitter, "jitter")
    elif isinstance(jitter, timedelta):
        seconds = jitter.total_seconds()
    elif isinstance(jitter, (int, float)) and not isinstance(jitter, bool):
        seconds = float(jitter)
    else:
        msg = (
            "jitter must be None, a number of seconds, a timedelta or a string such as "
            f"'30s', got {type(jitter).__name__}: {jitter!r}"
        )
        raise ValueError(msg)  # by contract, not TypeError
    if not (JITTER_MIN_SECONDS <= seconds <= JITTER_MAX_SECONDS):  # also rejects NaN
        raise ValueError(f"jitter must be between 1 second and 5 minutes, got {jitter!r}")
    return seconds


def jitter_for(run_key: str, jitter_seconds: float | None) -> float:
    """Deterministic delay in ``[1, jitter_seconds]`` derived from ``run_key``; 0.0 if None."""
    if not isinstance(run_key, str):
        raise TypeError(f"run_key must be a str, got {type(run_key).__name__}")
    limit = parse_jitter(jitter_seconds)
    if limit is None:
        return 0.0
    digest = hashlib.blake2b(
        run_key.encode("utf-8", "surrogatepass"), digest_size=8, person=b"fanout-jitter"
    ).digest()
    fraction = int.from_bytes(digest, "big") / float(2**64 - 1)
    value = JITTER_MIN_SECONDS + fraction * (limit - JITTER_MIN_SECONDS)
    return min(limit, max(JITTER_MIN_SECONDS, value))


# -- run ids and catch-up -----------------------------------------------------------


def _tick_digest(fn_key: str, tick: datetime) -> bytes:
    if not isinstance(fn_key, str):
        raise TypeError(f"fn_key must be a str, got {type(fn_key).__name__}")
    instant = _as_utc("tick", tick).replace(microsecond=0)
    payload = f"cron\0{fn_key}\0{instant.isoformat()}".encode("utf-8", "surrogatepass")
    return hashlib.blake2b(payload, digest_size=16).digest()


def tick_id(fn_key: str, tick: datetime) -> str:
    """The run id (and, with an ``event:`` prefix on the key, the event id) of
    ``fn_key``'s run for one tick: deterministic, 26 characters, the same alphabet
    as every other fanout id."""
    return id_from_digest(_tick_digest(fn_key, tick))


def tick_key(fn_key: str, tick: datetime) -> str:
    """The tick's id in its earlier spelling (lower-case RFC 4648 base32).

    It seeds the tick's jitter, so the delay of a tick does not move across the
    upgrade, and beat checks it before creating a tick's run, so a tick whose run an
    older beat created just before a deploy does not run twice."""
    return base64.b32encode(_tick_digest(fn_key, tick)).decode("ascii").rstrip("=").lower()[:26]


@dataclass(frozen=True)
class CatchUp:
    """What to do with a cron schedule at ``now`` (see :func:`plan_catch_up`)."""

    run: datetime | None
    skipped: tuple[datetime, ...]
    next_check: datetime
    # True when missed ticks older than ``skipped[0]`` were left out (MAX_SKIPPED).
    truncated: bool = False


def plan_catch_up(
    schedule: CronSchedule,
    last_tick: datetime | None,
    now: datetime,
    deadline: timedelta,
) -> CatchUp:
    """Decide which missed ticks to run or skip.

    Missed ticks are those in ``(last_tick, now]``. The newest runs if
    ``now - tick <= deadline``; every other missed tick is skipped (oldest
    first, at most :data:`MAX_SKIPPED`, newest kept). With ``last_tick=None``
    (never ran) nothing is skipped and only a tick at most ``deadline`` old
    runs. ``next_check`` is the first tick after ``max(now, last_tick)``.
    """
    current = _as_utc("now", now)
    if not isinstance(deadline, timedelta) or deadline < timedelta(0):
        raise ValueError(f"deadline must be a non-negative timedelta, got {deadline!r}")
    handled = None if last_tick is None else _as_utc("last_tick", last_tick)
    next_check = schedule.next_after(current if handled is None else max(current, handled))
    if handled is None:
        run = schedule._latest(current, _minus(current, deadline, _MICROSECOND))
        return CatchUp(run=run, skipped=(), next_check=next_check)
    latest = None if handled >= current else schedule._latest(current, handled)
    if latest is None:
        return CatchUp(run=None, skipped=(), next_check=next_check)
    run = latest if current - latest <= deadline else None
    newest_first = [] if run is not None else [latest]
    truncated = False
    for tick in schedule._backward(latest):
        if tick <= handled:
            break
        if len(newest_first) >= MAX_SKIPPED:
            truncated = True
            break
        newest_first.append(tick)
    return CatchUp(
        run=run,
        skipped=tuple(reversed(newest_first)),
        next_check=next_check,
        truncated=truncated,
    )
