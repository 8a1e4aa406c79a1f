"""Events: the model users build, and the checks made before anything is sent."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .._errors import ConfigError, EventError

MAX_NAME_LENGTH = 256
#: The default limit on one event's serialized size: 2 MiB, so an event carrying a
#: 1 MiB payload fits; ``Fanout(max_event_bytes=...)`` changes it per client.
MAX_EVENT_BYTES = 2 * 1024 * 1024
#: The bounds ``max_event_bytes`` may take.
EVENT_BYTES_RANGE = (1024, 128 * 1024 * 1024)
MAX_EVENTS_PER_SEND = 5000
RESERVED_PREFIX = "fanout/"
INVOKE_EVENT = "fanout/function.invoked"  # the event an invoked run starts with

__all__ = [
    "Event",
    "MAX_EVENTS_PER_SEND",
    "MAX_EVENT_BYTES",
    "MAX_NAME_LENGTH",
    "RESERVED_PREFIX",
    "check_max_event_bytes",
    "dumps",
    "quoted",
    "prepare_batch",
]


def dumps(value: Any) -> str:
    """Strict JSON: no NaN/Infinity, no objects json cannot represent."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


MAX_DEPTH = 64
_INT_LIMIT = 2**64


def _json_problem(value: Any, path: str = "data", depth: int = 0) -> str | None:
    """Where ``value`` stops being JSON, or None when it is fine."""
    if depth > MAX_DEPTH:
        return f"{path} is nested deeper than {MAX_DEPTH} levels"
    if value is None or isinstance(value, (str, bool)):
        return None
    if isinstance(value, int):
        if -_INT_LIMIT < value < _INT_LIMIT:
            return None
        return (
            f"{path} is an integer beyond 64 bits, which JSON consumers cannot read "
            "exactly; send it as a string"
        )
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path} is {value!r}, which JSON cannot carry"
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                return f"{path} has a key {k!r} of type {type(k).__name__}; JSON keys are strings"
            problem = _json_problem(v, f"{path}.{k}", depth + 1)
            if problem:
                return problem
        return None
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            problem = _json_problem(v, f"{path}[{i}]", depth + 1)
            if problem:
                return problem
        return None
    return f"{path} holds a {type(value).__name__}, which is not JSON-serializable"


#: How much of a bad name an error message quotes.
QUOTE_LIMIT = 100

_CONTROL_NAMES = {"\n": "a newline", "\r": "a carriage return", "\t": "a tab", "\x00": "a NUL"}


def quoted(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` for an error message, cut after ``limit`` characters of a long
    string (with its full length), so a bad megabyte-long name never floods a log."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value)} characters)"
    return repr(value)


def _control_problem(value: str, what: str) -> str | None:
    for i, ch in enumerate(value):
        if ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 or ch in "\u2028\u2029":
            label = _CONTROL_NAMES.get(ch, "a control character")
            return (f"{what} contains {label} (U+{ord(ch):04X}) at position {i}; names are "
                    "one line of printable text")
    return None


def _text_problem(value: str, what: str) -> str | None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return f"{what} contains a lone surrogate, which is not valid Unicode text"
    return None


class Event(BaseModel):
    """An event: a name, a JSON payload and, optionally, an id for deduplication.

    ``id`` is generated when absent. ``ts`` is milliseconds since the epoch, the time
    of sending when absent.  As in inngest-py, ``id=""`` and ``ts=0`` mean "not
    given".  Building an invalid event raises :class:`fanout.EventError`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    data: dict[str, Any] = Field(default_factory=dict)
    id: str | None = None
    ts: int | None = None
    user: dict[str, Any] | None = None
    v: str | None = None

    def __init__(self, /, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise EventError(_describe(exc, values.get("name"))) from None

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        if not name or not name.strip():
            raise ValueError("event name is empty")
        if len(name) > MAX_NAME_LENGTH:
            raise ValueError(
                f"event name is {len(name)} characters long; the limit is {MAX_NAME_LENGTH}"
            )
        problem = _text_problem(name, "event name") or _control_problem(name, "event name")
        if problem:
            raise ValueError(problem)
        return name

    @field_validator("data", "user", mode="before")
    @classmethod
    def _check_json(cls, value: Any) -> Any:
        if value is None:
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"must be a JSON object (a dict), not {type(value).__name__}")
        problem = _json_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str | None) -> str | None:
        if value == "":
            return None  # inngest-py's default: not given
        if value is not None:
            if not value or len(value) > 256:
                raise ValueError("event id must be 1 to 256 characters")
            problem = _text_problem(value, "event id")
            if problem:
                raise ValueError(problem)
        return value

    @field_validator("ts")
    @classmethod
    def _check_ts(cls, value: int | None) -> int | None:
        if value == 0:
            return None  # inngest-py's default: not given
        if value is not None and not 0 <= value < 2**53:
            raise ValueError("ts must be milliseconds since the epoch (0 to 2**53)")
        return value

    def to_wire(self) -> dict[str, Any]:
        """The JSON form stored in Redis and given to handlers."""
        out: dict[str, Any] = {"name": self.name, "data": self.data, "id": self.id, "ts": self.ts}
        if self.user is not None:
            out["user"] = self.user
        if self.v is not None:
            out["v"] = self.v
        return out

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> Event:
        return cls.model_construct(
            name=raw["name"],
            data=raw.get("data") or {},
            id=raw.get("id"),
            ts=raw.get("ts"),
            user=raw.get("user"),
            v=raw.get("v"),
        )


def show_bytes(n: int) -> str:
    """``2097152`` -> ``"2 MiB"``."""
    for unit, size in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n} bytes"


def check_max_event_bytes(value: object) -> int:
    """Check the ``max_event_bytes`` client option."""
    low, high = EVENT_BYTES_RANGE
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(
            f"max_event_bytes must be an int of bytes from {low} to {high} "
            f"({show_bytes(high)}), not {value!r}"
        )
    return value


def _describe(exc: ValidationError, name: Any) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "event"
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    label = f"event {quoted(name)}" if isinstance(name, str) and name else "event"
    return f"invalid {label}: " + "; ".join(parts)


def prepare_batch(
    events: Event | Mapping[str, Any] | Iterable[Event | Mapping[str, Any]],
    *,
    allow_reserved: bool = False,
    id_for: Any = None,
    max_bytes: int = MAX_EVENT_BYTES,
) -> list[tuple[Event, str]]:
    """Validate a send and give each event its id, timestamp and JSON text.

    Raises :class:`EventError` naming the first problem; nothing is sent then.
    ``id_for(index)`` supplies ids for events that have none (derived ids in steps).
    """
    if isinstance(events, (Event, Mapping)):
        items: Sequence[Any] = [events]
    elif isinstance(events, (str, bytes)):
        raise EventError("send expects an Event or a list of events, not a string")
    else:
        items = list(events)
    if not items:
        raise EventError("no events to send: the list is empty")
    if len(items) > MAX_EVENTS_PER_SEND:
        raise EventError(
            f"{len(items)} events in one send; the limit is {MAX_EVENTS_PER_SEND}. "
            "Split them into several sends."
        )
    now_ms = int(time.time() * 1000)
    out: list[tuple[Event, str]] = []
    from .ids import new_event_id

    for i, item in enumerate(items):
        if isinstance(item, Mapping):
            ev = Event(**item)
        elif isinstance(item, Event):
            ev = item
        else:
            raise EventError(f"events[{i}] is a {type(item).__name__}, not a fanout.Event")
        if not allow_reserved and ev.name.startswith(RESERVED_PREFIX):
            raise EventError(
                f"events[{i}]: the name {quoted(ev.name)} uses the prefix {RESERVED_PREFIX!r}, "
                "which is reserved for fanout's own events"
            )
        eid = ev.id or (id_for(i) if id_for is not None else new_event_id(now_ms))
        ev = ev.model_copy(update={"id": eid, "ts": ev.ts if ev.ts is not None else now_ms})
        try:
            text = dumps(ev.to_wire())
            size = len(text.encode())
        except UnicodeEncodeError:
            raise EventError(
                f"events[{i}] ({quoted(ev.name)}): its data contains a lone surrogate, which is not "
                "valid Unicode text"
            ) from None
        except (ValueError, RecursionError) as exc:
            raise EventError(f"events[{i}] ({quoted(ev.name)}) cannot be serialized: {exc}") from None
        if size > max_bytes:
            raise EventError(
                f"events[{i}] ({quoted(ev.name)}) is {size} bytes serialized; the limit is "
                f"{max_bytes} bytes ({show_bytes(max_bytes)}), set by "
                "Fanout(max_event_bytes=...)"
            )
        out.append((ev, text))
    return out
