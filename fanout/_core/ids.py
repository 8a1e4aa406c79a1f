"""Identifiers.

Event ids are time-sortable (a ULID: 48 bits of milliseconds, 80 random bits,
Crockford base32).  Everything else is derived, so that creating a thing twice
is a set-if-absent on the same key:

* a run started by an event: ``run_id_for(event_id, fn_key)``;
* an event sent by a step without an id: ``derived_event_id(run_id, step_id, index)``,
  so a replayed ``send_event`` re-sends the same ids and starts nothing new.
"""

from __future__ import annotations

import hashlib
import os
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _b32(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        out.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(out))


def new_event_id(now_ms: int | None = None) -> str:
    """A new time-sortable event id (26 characters)."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    rand = int.from_bytes(os.urandom(10), "big")
    return _b32(ms & ((1 << 48) - 1), 10) + _b32(rand, 16)


def id_from_digest(digest: bytes) -> str:
    """The 26-character id (Crockford base32, upper case) of a 16-byte digest."""
    return _b32(int.from_bytes(digest, "big") >> 2, 26)


def _digest_id(*parts: str) -> str:
    return id_from_digest(hashlib.blake2b("\0".join(parts).encode(), digest_size=16).digest())


def run_id_for(event_id: str, fn_key: str) -> str:
    """The id of the run that ``event_id`` starts for the function ``fn_key``."""
    return _digest_id("run", event_id, fn_key)


def derived_event_id(run_id: str, step_id: str, index: int) -> str:
    """The id of the ``index``-th event a step sends when the caller gave none."""
    return _digest_id("event", run_id, step_id, str(index))


def new_token() -> str:
    """An opaque random token (leases, workers)."""
    return os.urandom(9).hex()


def key_part(text: str) -> str:
    """``text`` as a piece of a Redis key or a ``|``-separated name: the characters of
    the classic id alphabet stay as they are, any other is percent-encoded (so ``{``
    never forms a Redis Cluster hash tag and ``|`` never splits a name)."""
    from urllib.parse import quote

    return quote(text, safe=":/")


def from_key_part(text: str) -> str:
    from urllib.parse import unquote

    return unquote(text)
