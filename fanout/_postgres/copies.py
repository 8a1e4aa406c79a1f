"""A run's copy in the history store, read as Redis's hash of it: what ``get_run``,
``fanout run`` and the dashboard's run page show once Redis no longer holds the run
(past its retention). Read only. While the store cannot be read, a run Redis does not
hold reads as unknown (a warning in the log), as it did without the store: a client
polling for a run not created yet does not fail with the database."""

from __future__ import annotations

import logging
import threading

from .._redis.ended_feed import fields_of
from .store import PgHistory

log = logging.getLogger("fanout")
_lock = threading.Lock()
_stores: dict[str, PgHistory] = {}


def copied_fields(pg: PgHistory, run_id: str) -> dict[str, str]:
    """The run's fields as its copy holds them; ``{}`` when the store has no copy."""
    try:
        record = pg.record(run_id)
    except Exception as exc:  # noqa: BLE001 - the store away: the run reads as unknown
        log.warning("fanout: the history store could not be read for run %s: %s", run_id, exc)
        return {}
    return fields_of(record) if record else {}


def fields_from(url: str, run_id: str) -> dict[str, str]:
    """:func:`copied_fields` from the store at ``url`` (one connection per URL, kept)."""
    with _lock:
        pg = _stores.get(url)
        if pg is None:
            pg = _stores[url] = PgHistory(url)
        return copied_fields(pg, run_id)
