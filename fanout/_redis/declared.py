"""What the workers declare: the registry a sender checks before it routes its own
events (``Fanout(route_in_sender=True)``, ``fanout/_celery/routing.py``).

One hash per store, ``P:declared``: field ``<fn key> <digest>`` (the digest of
what routing reads of a function: triggers, cancel specs, flow control, version),
value the server's time (unix seconds, Redis ``TIME``) when a worker last wrote it.
Every worker writes all of its functions every :data:`REFRESH_S` seconds and, in the
same script, deletes the entries no worker wrote for :data:`STALE_S` seconds, by the
server's clock: no process's own clock decides what is live, so skewed clocks
cannot make a sender overlook a function a live worker declares.  A reader takes
every entry in the hash (an entry of a function no longer declared anywhere is gone
within :data:`STALE_S` + :data:`REFRESH_S` while any worker runs; until then a sender
that lacks it publishes to the router, which is the safe side).  One hash for the whole store, not one per app id: a worker's
router matches every function declared on its Celery app, whatever the app id, so a
sender must know all of them.

The sender reads the hash in the same round trip as it stores its events
(:meth:`fanout._redis.store.Store.store_events` with ``read_declared``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .replies import text

REFRESH_S = 10.0  # a worker writes its functions this often
STALE_S = 60.0  # an entry older than this is from no live worker


@dataclass(frozen=True)
class StoredEvents:
    """What storing a batch of events answered: per event, whether this call stored it
    (False: an event with that id was there already, and it stays), and the live
    declared entries and the open waits when they were asked for."""

    fresh: list[bool]
    declared: set[str] | None = None
    #: The waits the events may resolve, read after the events were written
    #: (``WaitStore.parse_read``), when asked for.
    waits: Any = None


def entry(fn_key: str, digest: str) -> str:
    return f"{fn_key} {digest}"


def live(raw: Mapping[Any, Any] | None) -> set[str]:
    """The entries (``<fn key> <digest>``) of the hash: the workers' refresh keeps only
    those some worker wrote within :data:`STALE_S` (server time)."""
    return {text(field) for field in (raw or {})}


class DeclaredStore:
    """The workers' side: write this process's functions, drop the stale entries."""

    def __init__(self, client: Any, key: str, scripts: Any) -> None:
        self.r = client
        self.key = key
        self.scripts = scripts

    def register(self, entries: Iterable[str]) -> int:
        """Write ``entries`` as refreshed now and delete, in the same script, the
        entries no worker refreshed within :data:`STALE_S` (both by the server's
        clock); returns how many were deleted.  One round trip."""
        return int(self.scripts.run("declare", [self.key], [repr(STALE_S), *entries]))

    def read(self) -> set[str]:
        """The live entries (a listing; a sender reads them with its events)."""
        return live(self.r.hgetall(self.key))
