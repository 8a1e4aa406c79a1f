"""What the HTTP ingestion endpoint keeps in Redis: its source keys (hashed) and the
webhook signatures it has already accepted.

Key layout (``P`` is the store's prefix)::

    P:ingest:keys          hash   key id -> JSON {source, hash, label, created}
    P:ingest:seen:<token>  string a signature (or delivery id) already accepted,
                                  kept for the signature's tolerance window

Only the hash of a key is stored (``sha256:<hex>``); the key itself is shown once,
when it is created.
"""

from __future__ import annotations

from typing import Any

from .replies import field_map, text_or_none
from .store import Store


class IngestStore:
    """Key records and replay tokens of the ingestion endpoint, on one store."""

    def __init__(self, store: Store) -> None:
        self.r: Any = store.r
        self.keys = store.keys

    @property
    def keys_key(self) -> str:
        return self.keys.ingest_keys

    def add_key(self, key_id: str, record: str) -> bool:
        """Record a key; False when the id is already taken (nothing is changed)."""
        return bool(self.r.hsetnx(self.keys_key, key_id, record))

    def key_record(self, key_id: str) -> str | None:
        return text_or_none(self.r.hget(self.keys_key, key_id))

    def key_records(self) -> dict[str, str]:
        return field_map(self.r.hgetall(self.keys_key))

    def drop_key(self, key_id: str) -> bool:
        return bool(self.r.hdel(self.keys_key, key_id))

    def remember(self, token: str, ttl_s: int) -> bool:
        """Record a replay token for ``ttl_s`` seconds; False if it was already there."""
        return bool(self.r.set(self.keys.ingest_seen(token), "1", nx=True, ex=max(1, ttl_s)))

    def forget(self, token: str) -> None:
        self.r.delete(self.keys.ingest_seen(token))
