"""Per-source ingest keys: created once, stored hashed, checked on every request.

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


@dataclass(frozen=True)
class KeyInfo:
    """A stored key, as listed: never the key itself."""

    key_id: str
    source: str
    label: str
    created: float

    def to_json(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "source": self.source, "label": self.label,
                "created": self.created}


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
    Both may be given; the configured hashes are checked first.
    """

    def __init__(
        self,
        client: Fanout | None = None,
        *,
        hashes: Mapping[str, str | Iterable[str]] | None = None,
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

    def verify(self, key: str) -> str | None:
        """The source of ``key``, or None for an unknown, malformed or revoked key.

        Raises the store's error when Redis cannot be reached.
        """
        m = _KEY.match(key)
        if m is None:
            return None
        digest = hash_key(key)
        source = self._hashes.get(digest)
        if source is not None:
            return source
        if self._store is None:
            return None
        raw = self._store.key_record(m.group(1))
        if raw is None:
            return None
        record = json.loads(raw)
        if not hmac.compare_digest(str(record.get("hash", "")), digest):
            return None
        return str(record["source"])

    def _need_store(self) -> IngestStore:
        if self._store is None:
            raise ConfigError("these keys are given as hashes in configuration; only keys "
                              "kept in Redis (IngestKeys(client)) can be created or revoked")
        return self._store

    def create(self, source: str, *, label: str = "") -> NewKey:
        """Create and store a key for ``source``; the returned key is not kept anywhere."""
        store = self._need_store()
        check_source(source)
        if not isinstance(label, str) or len(label) > 200:
            raise ConfigError("label must be text of at most 200 characters")
        while True:
            key_id, key = new_key()
            record = json.dumps({"source": source, "hash": hash_key(key), "label": label,
                                 "created": round(time.time(), 3)})
            if store.add_key(key_id, record):
                return NewKey(key_id=key_id, source=source, key=key, hash=hash_key(key))

    def list(self) -> list[KeyInfo]:
        """The stored keys, oldest first (ids, sources and labels, never the keys)."""
        out = []
        for key_id, raw in self._need_store().key_records().items():
            rec = json.loads(raw)
            out.append(KeyInfo(key_id=key_id, source=str(rec.get("source", "")),
                               label=str(rec.get("label", "")),
                               created=float(rec.get("created", 0))))
        return sorted(out, key=lambda k: (k.created, k.key_id))

    def revoke(self, key_id: str) -> bool:
        """Delete a stored key (by its id, or the key itself); False if there was none."""
        m = _KEY.match(key_id)
        return self._need_store().drop_key(m.group(1) if m else key_id)
