"""Durations, read the way each setting means them (pure; no Redis, no Celery).

Two readings:

* :func:`parse_duration`, for every duration inngest-py also takes (``step.sleep``,
  ``wait_for_event(timeout=)``, ``invoke(timeout=)``, ``Debounce``, ``Batch``,
  ``RateLimit``, ``Throttle``, ``Cancel(timeout=)``, ``Timeouts``): an ``int`` is
  **milliseconds**, as there.  A ``float`` is refused: ``1.5`` could mean seconds
  (earlier fanout releases read numbers as seconds) or milliseconds, and a wrong
  guess is off by a factor of a thousand.
* :func:`parse_seconds`, for fanout's own settings (``TriggerCron(jitter=)``,
  ``recovery_timeout``, ``retention``, ``backoff``...): a number is seconds.

Both take a :class:`datetime.timedelta` or a duration string of amounts with
units, such as ``"500ms"``, ``"30s"``, ``"1h30m"`` (units ``ms s m h d w``).
"""

from __future__ import annotations

import datetime as _dt
import math
import re

from .._errors import ConfigError

__all__ = ["MAX_SECONDS", "Duration", "parse_duration", "parse_seconds", "show"]

#: The longest duration anything takes (a sleep, a wait, a timeout): one year.
MAX_SECONDS = 366 * 86400
#: What a duration parameter of a step tool takes: an int of milliseconds, a timedelta,
#: or a string such as ``"30s"``.
Duration = int | _dt.timedelta | str
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AMOUNT = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_FORMS_MS = "an int of milliseconds, a timedelta, or a string such as '30s' or '1h30m'"
_FORMS_S = "a number of seconds, a timedelta, or a string such as '30s' or '1h30m'"


def show(seconds: float) -> str:
    """A duration as the shortest string fanout reads back (``90`` -> ``"90s"``)."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and (seconds / size) == int(seconds / size):
            return f"{int(seconds // size)}{unit}"
    if seconds >= 1:
        return f"{seconds:g}s"
    return f"{round(seconds * 1000, 3):g}ms"


def _from_text(value: str, what: str, forms: str) -> float:
    text = value.strip().replace(" ", "")
    pos, seconds = 0, 0.0
    for m in _AMOUNT.finditer(text):
        if m.start() != pos:
            break
        seconds += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not text or pos != len(text):
        raise ConfigError(
            f"invalid {what} {value!r}: use {forms}; a string is amounts with units "
            "ms, s, m, h, d, w (for example '500ms', '30m' or '1h30m')"
        )
    return seconds


def _checked(seconds: float, value: object, what: str, limit: float) -> float:
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f"{what} must not be negative: {value!r}")
    if seconds > limit:
        raise ConfigError(f"{what} {value!r} is longer than the limit of {show(limit)}")
    return seconds


def parse_duration(value: object, what: str = "duration", *, limit: float = MAX_SECONDS) -> float:
    """Seconds from an int of **milliseconds**, a timedelta or a duration string.

    A float, a bool or anything else raises :class:`fanout.ConfigError` saying what to
    write instead.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{what} must be {_FORMS_MS}, not {value!r}")
    if isinstance(value, int):
        return _checked(value / 1000.0, value, what, limit)
    if isinstance(value, float):
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"{what} must not be negative: {value!r}")
        raise ConfigError(
            f"{what} {value!r} is a float, which is ambiguous: an int here is milliseconds "
            f"(as in inngest-py). For {value:g} seconds write timedelta(seconds={value:g}), "
            f"'{value:g}s' or {round(value * 1000)} (milliseconds)"
        )
    if isinstance(value, _dt.timedelta):
        return _checked(value.total_seconds(), value, what, limit)
    if isinstance(value, str):
        return _checked(_from_text(value, what, _FORMS_MS), value, what, limit)
    raise ConfigError(f"{what} must be {_FORMS_MS}, not {type(value).__name__}")


def parse_seconds(value: object, what: str = "duration", *, limit: float = MAX_SECONDS) -> float:
    """Seconds from a number of **seconds**, a timedelta or a duration string (fanout's
    own settings, which inngest-py does not have)."""
    if isinstance(value, bool):
        raise ConfigError(f"{what} must be {_FORMS_S}, not {value!r}")
    if isinstance(value, (int, float)):
        return _checked(float(value), value, what, limit)
    if isinstance(value, _dt.timedelta):
        return _checked(value.total_seconds(), value, what, limit)
    if isinstance(value, str):
        return _checked(_from_text(value, what, _FORMS_S), value, what, limit)
    raise ConfigError(f"{what} must be {_FORMS_S}, not {type(value).__name__}")
