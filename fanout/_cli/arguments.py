"""The types of the ``fanout`` command's arguments.

A value that cannot be right whatever the store holds (bad JSON, a bad time, an
unknown status, a malformed URL or cursor) is refused while the command line is
parsed: one line on stderr and exit 2, before the app is imported.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from .._core.event import quoted
from .._errors import FanoutError
from .._redis.history import parse_time, statuses

_PAUSED = "paused"


def json_arg(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(
            f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, not {type(value).__name__}")
    return value


def time_arg(text: str) -> float:
    try:
        return parse_time(text)
    except FanoutError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def seconds_arg(text: str) -> float:
    try:
        secs = float(text)
    except ValueError:
        secs = float("nan")
    if not 0 < secs < 86_400 * 365:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, like 30 (not "
                                         f"{quoted(text)})")
    return secs


def _int_in(low: int, high: int) -> Any:
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid number {quoted(text)}") from None
        if not low <= n <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}")
        return n

    return parse


limit_arg = _int_in(1, 100_000)
port_arg = _int_in(0, 65_535)
positive_arg = _int_in(1, 2**31 - 1)


def status_arg(text: str) -> str:
    """A status, a comma-separated list, ``active`` or ``paused`` (kept as given)."""
    names = [s.strip() for s in text.split(",")]
    try:
        statuses(["queued" if s == _PAUSED else s for s in names])
    except FanoutError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace(" or 'active'", ", 'active' or "
                                                          "'paused'")) from None
    return text


def wanted_statuses(text: str | None) -> set[str] | None:
    """The statuses ``--status`` names, with ``active`` expanded (``paused`` kept)."""
    if not text:
        return None
    names = [s.strip() for s in text.split(",") if s.strip()]
    found = set(statuses([s for s in names if s != _PAUSED]) or ())
    return found | ({_PAUSED} if _PAUSED in names else set())


# "<score>:<skip>", or "^<score>:<skip>" to page back to newer runs.
_CURSOR = re.compile(r"^\^?(-?\d+(\.\d+)?(e[+-]?\d+)?|[+-]inf):\d+$", re.IGNORECASE)


def cursor_arg(text: str) -> str:
    if not _CURSOR.match(text):
        raise argparse.ArgumentTypeError(f"invalid cursor {quoted(text)}: pass the value a "
                                         "previous listing printed after --cursor")
    return text


def redis_url_arg(text: str) -> str:
    schemes = ("redis://", "rediss://", "unix://", "memory://", "redis+cluster://",
               "rediss+cluster://")
    if not text.startswith(schemes):
        raise argparse.ArgumentTypeError(
            f"invalid Redis URL {quoted(text)}: expected redis://, rediss://, unix://, "
            "redis+cluster:// or memory://")
    return text


def broker_url_arg(text: str) -> str:
    """A URL whose scheme is a kombu transport (``redis://``, ``amqp://``, ...)."""
    from kombu.transport import TRANSPORT_ALIASES

    scheme = text.partition("://")[0] if "://" in text else ""
    known = set(TRANSPORT_ALIASES) | {"rediss", "amqps", "sentinel"}
    if scheme.split("+", 1)[0] not in known:
        shown = ", ".join(f"{s}://" for s in ("amqp", "redis", "rediss", "sqs", "memory"))
        raise argparse.ArgumentTypeError(f"invalid broker URL {quoted(text)}: expected a Celery "
                                         f"broker URL such as {shown}")
    return text


def key_arg(text: str) -> str:
    """An encryption key (``fanout run --key``); the error never shows the key."""
    from ..encryption import Keyring

    try:
        Keyring(text)
    except FanoutError as exc:
        message = str(exc).replace(text, "<the key given>") if text else str(exc)
        raise argparse.ArgumentTypeError(message) from None
    return text


#: Options whose value is free text (a key, an id, a reason) and may start with "-",
#: as a Fernet key does one time in 64: ``--key -AbC...`` reads as ``--key=-AbC...``.
FREE_TEXT_OPTIONS = ("--key", "--id", "--reason", "--label", "--from-step", "--name",
                     "--cursor")


def join_dash_values(argv: Sequence[str], known: Iterable[str]) -> list[str]:
    """``--key -x`` -> ``--key=-x`` for the free-text options, unless ``-x`` is itself
    an option of the command line (``--key --json`` stays an error)."""
    options = set(known)
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if (arg in FREE_TEXT_OPTIONS and nxt is not None and nxt.startswith("-")
                and nxt != "--" and nxt.split("=", 1)[0] not in options):
            out.append(f"{arg}={nxt}")
            i += 2
            continue
        out.append(arg)
        i += 1
    return out
