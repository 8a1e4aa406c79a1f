"""Per-source ingest keys: created once, stored hashed, checked on every request.

A key may be limited (:class:`KeyLimits`) to event names matching patterns
(``app/*``, as in triggers) and to a rate (events per second or per minute, counted
in Redis across every endpoint process: ``fanout/_redis/ingest_rate.py``).

A key looks like ``fok_<id>_<secret>``: ``<id>`` (12 characters) finds its record,
``<secret>`` (64 hex digits, 256 random bits) is what proves it.  Redis, or the
configuration, holds only ``sha256:<hex>`` of the whole key.  An ingest key can send
events through the HTTP endpoint and nothing else: the CLI and the dashboard never
accept one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._core.ids import _b32
from .._core.triggers import validate_event_pattern
from .._errors import ConfigError
from .._redis.ingest_store import IngestStore

if TYPE_CHECKING:
    from .._client import Fanout

KEY_PREFIX = "fok_"
_KEY = re.compile(r"^fok_([0-9A-Z]{12})_([0-9a-f]{64})$")
_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")
_SOURCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_source(source: object) -> str:
    if not isinstance(source, str) or not _SOURCE.match(source):
        raise ConfigError(
            f"invalid source {source!r}: use 1 to 64 characters from letters, digits and "
            "'. _ -', starting with a letter or digit (for example 'billing')"
        )
    return source


def hash_key(key: str) -> str:
    """The stored form of an ingest key: ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh key and its id: ``(key_id, key)``."""
    key_id = _b32(int.from_bytes(os.urandom(8), "big"), 12)
    return key_id, f"{KEY_PREFIX}{key_id}_{os.urandom(32).hex()}"


_RATE = re.compile(r"^\s*(\d+)\s*/\s*(s|sec|second|m|min|minute)\s*$", re.IGNORECASE)


def name_matches(pattern: str, name: str) -> bool:
    """An event name against a trigger-style pattern: exact, or ``prefix*`` with at
    least one character after the prefix."""
    if pattern.endswith("*"):
        head = pattern[:-1]
        return name.startswith(head) and len(name) > len(head)
    return name == pattern


@dataclass(frozen=True)
class KeyLimits:
    """What a key may send: event names matching one of ``events`` (none: any name)
    and at most ``rate`` events (``"100/s"`` or ``"600/m"``; None: no limit)."""

    events: tuple[str, ...] = ()
    rate: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.events, str):
            object.__setattr__(self, "events", (self.events,))
        pats = tuple(self.events)
        for p in pats:
            try:
                validate_event_pattern(p)
            except ConfigError as exc:
                raise ConfigError(f"ingest key events: {exc}".replace("trigger event",
                                                                      "event pattern")) from None
        object.__setattr__(self, "events", pats)
        if self.rate is not None:
            self.per_window()

    def per_window(self) -> tuple[int, int]:
        """``(events, window seconds)`` of the rate."""
        m = _RATE.match(self.rate or "")
        if m is None or int(m.group(1)) < 1:
            raise ConfigError(f"invalid ingest key rate {self.rate!r}: write events per second "
                              "or per minute, like '100/s' or '600/m'")
        return int(m.group(1)), 1 if m.group(2).lower().startswith("s") else 60

    def allows(self, name: str) -> bool:
        return not self.events or any(name_matches(p, name) for p in self.events)

    def describe(self) -> str:
        parts = []
        if self.events:
            parts.append("events " + ", ".join(self.events))
        if self.rate:
            parts.append(f"rate {self.rate}")
        return "; ".join(parts) or "any event, no rate limit"

    def to_json(self) -> dict[str, Any]:
        return {"events": list(self.events), "rate": self.rate}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> KeyLimits:
        return cls(tuple(data.get("events") or ()), data.get("rate") or None)


NO_LIMITS = KeyLimits()


@dataclass(frozen=True)
class Grant:
    """What a valid key is: its source, its id, and its limits."""

    source: str
    key_id: str
    limits: KeyLimits = NO_LIMITS


@dataclass(frozen=True)
class KeyInfo:
    """A stored key, as listed: never the key itself."""

    key_id: str
    source: str
    label: str
    created: float
    limits: KeyLimits = NO_LIMITS

    def to_json(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "source": self.source, "label": self.label,
                "created": self.created, **self.limits.to_json()}


@dataclass(frozen=True)
class NewKey:
    """A key just created: ``key`` is shown this once and stored only as ``hash``."""

    key_id: str
    source: str
    key: str = field(repr=False)
    hash: str = ""


class IngestKeys:
    """Which source, if any, an ingest key belongs to.

    ``IngestKeys(client)`` keeps keys in the client's Redis (``create`` / ``list`` /
    ``revoke``, or ``fanout keys`` on the command line).  ``hashes`` gives keys in
    configuration instead, as ``{source: "sha256:<hex>"}`` or a list of hashes per
    source (``fanout keys create SOURCE --no-store`` prints a key and its hash).
    Both may be given; the configured hashes are checked first. ``limits`` gives
    the configured keys of a source their :class:`KeyLimits`; a key kept in Redis
    carries its own (``create(..., events=, rate=)``).
    """

    def __init__(
        self,
        client: Fanout | None = None,
        *,
        hashes: Mapping[str, str | Iterable[str]] | None = None,
        limits: Mapping[str, KeyLimits] | None = None,
    ) -> None:
        self._store = IngestStore(client.runtime.store) if client is not None else None
        self._hashes: dict[str, str] = {}
        for source, value in (hashes or {}).items():
            check_source(source)
            for h in [value] if isinstance(value, str) else list(value):
                if not isinstance(h, str) or not _HASH.match(h):
                    raise ConfigError(
                        f"source {source!r}: {h!r} is not a key hash; write 'sha256:' and 64 "
                        "hex digits, as printed by 'fanout keys create SOURCE --no-store'"
                    )
                self._hashes[h] = source
        if self._store is None and not self._hashes:
            raise ConfigError("IngestKeys needs a client (keys kept in Redis) or hashes=")
        self._limits: dict[str, KeyLimits] = {}
        for source, lim in (limits or {}).items():
            check_source(source)
            if not isinstance(lim, KeyLimits):
                raise ConfigError(f"limits[{source!r}] must be a fanout.http.KeyLimits")
            self._limits[source] = lim

    def verify(self, key: str) -> str | None:
        """The source of ``key``, or None for an unknown, malformed or revoked key.

        Raises the store's error when Redis cannot be reached.
        """
        grant = self.grant(key)
        return None if grant is None else grant.source

    def grant(self, key: str) -> Grant | None:
        """The source, id and limits of ``key``; None for an unknown, malformed or
        revoked key. Raises the store's error when Redis cannot be reached."""
        m = _KEY.match(key)
        if m is None:
            return None
        digest = hash_key(key)
        source = self._hashes.get(digest)
        if source is not None:
            return Grant(source, m.group(1), self._limits.get(source, NO_LIMITS))
        if self._store is None:
            return None
        raw = self._store.key_record(m.group(1))
        if raw is None:
            return None
        record = json.loads(raw)
        if not hmac.compare_digest(str(record.get("hash", "")), digest):
            return None
        return Grant(str(record["source"]), m.group(1), KeyLimits.from_json(record))

    def _need_store(self) -> IngestStore:
        if self._store is None:
            raise ConfigError("these keys are given as hashes in configuration; only keys "
                              "kept in Redis (IngestKeys(client)) can be created or revoked")
        return self._store

    def create(self, source: str, *, label: str = "", events: Iterable[str] | str = (),
               rate: str | None = None) -> NewKey:
        """Create and store a key for ``source``; the returned key is not kept anywhere.

        ``events``: the event-name patterns it may send (``["app/*"]``; none: any);
        ``rate``: at most this many events, ``"100/s"`` or ``"600/m"``."""
        store = self._need_store()
        check_source(source)
        if not isinstance(label, str) or len(label) > 200:
            raise ConfigError("label must be text of at most 200 characters")
        lim = KeyLimits(tuple([events] if isinstance(events, str) else events), rate)
        while True:
            key_id, key = new_key()
            record = json.dumps({"source": source, "hash": hash_key(key), "label": label,
                                 "created": round(time.time(), 3), **lim.to_json()})
            if store.add_key(key_id, record):
                return NewKey(key_id=key_id, source=source, key=key, hash=hash_key(key))

    def list(self) -> list[KeyInfo]:
        """The stored keys, oldest first (ids, sources and labels, never the keys)."""
        out = []
        for key_id, raw in self._need_store().key_records().items():
            rec = json.loads(raw)
            out.append(KeyInfo(key_id=key_id, source=str(rec.get("source", "")),
                               label=str(rec.get("label", "")),
                               created=float(rec.get("created", 0)),
                               limits=KeyLimits.from_json(rec)))
        return sorted(out, key=lambda k: (k.created, k.key_id))

    def revoke(self, key_id: str) -> bool:
        """Delete a stored key (by its id, or the key itself); False if there was none."""
        m = _KEY.match(key_id)
        return self._need_store().drop_key(m.group(1) if m else key_id)
