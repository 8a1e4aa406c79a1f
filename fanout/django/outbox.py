"""``emit``/``send`` through the transactional outbox.

The path of one event:

1. :func:`send` validates the events and gives each its id and timestamp
   (``fanout.EventError`` is raised here, before anything is written).
2. One ``OutboxEvent`` row per event is inserted on ``FANOUT['DATABASE']``.
   Inside ``transaction.atomic()`` that insert is part of the caller's
   transaction: a rollback removes it and nothing is ever published.
3. ``transaction.on_commit`` publishes the events (Redis, then one broker
   message) and deletes the rows.  Outside a transaction the insert commits at
   once and the publish follows immediately.
4. If the publish fails, or the process dies between commit and publish, the
   rows stay; the sweeper in the workers publishes them after ``SWEEP_GRACE``.

Publishing a row twice is harmless: events are stored set-if-absent under their
id, and run ids derive from (event id, function id), so one event starts each
function once.
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.db import DatabaseError, models, transaction
from django.utils import timezone

from .._core.event import Event, prepare_batch
from ._project import client
from .conf import get_settings
from .models import OutboxEvent

log = logging.getLogger("fanout.django")

#: Rows per ``event_id IN (...)`` statement (SQLite caps bound parameters).
ID_CHUNK = 500
MAX_ERROR_CHARS = 2000

Prepared = Sequence[tuple[Event, str]]


def emit(
    name: str,
    data: Mapping[str, Any] | None = None,
    *,
    id: str | None = None,
    user: Mapping[str, Any] | None = None,
) -> str:
    """Send one event through the outbox and return its id."""
    event = Event(
        name=name,
        data=data if data is not None else {},
        id=id,
        user=dict(user) if isinstance(user, Mapping) else user,
    )
    return send(event)[0]


def send(events: Event | Mapping[str, Any] | Iterable[Event | Mapping[str, Any]]) -> list[str]:
    """Write one outbox row per event and publish them after commit; returns the ids."""
    conf = get_settings()
    # A misconfigured project fails here, before a row nobody could publish.
    prepared = prepare_batch(events, max_bytes=client().max_event_bytes)
    alias = conf.database
    now = timezone.now()
    due = now + _dt.timedelta(seconds=conf.sweep_grace)
    rows = [
        OutboxEvent(
            event_id=ev.id,
            name=ev.name,
            payload=text,
            created_at=now,
            next_attempt_at=due,
        )
        for ev, text in prepared
    ]
    with transaction.atomic(using=alias, savepoint=False):
        # A repeated id (the caller passed its own) keeps the first row: the
        # event is deduplicated by id downstream anyway.
        OutboxEvent.objects.using(alias).bulk_create(rows, ignore_conflicts=True)
        transaction.on_commit(lambda: deliver(prepared, alias), using=alias, robust=True)
    return [ev.id or "" for ev, _ in prepared]


def deliver(prepared: Prepared, alias: str) -> bool:
    """Publish committed events and delete their rows; on failure keep them for the sweeper."""
    ids = [ev.id or "" for ev, _ in prepared]
    try:
        client().runtime.publisher.publish(prepared)
    except Exception as exc:  # the rows are safe: any failure is the sweeper's to retry
        log.warning(
            "fanout: could not publish %d event(s) after commit (%s); they stay in the "
            "outbox and the sweeper will publish them",
            len(ids),
            exc,
            exc_info=log.isEnabledFor(logging.DEBUG),
        )
        note_failure(alias, ids, exc)
        return False
    forget(alias, ids)
    return True


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]


def note_failure(alias: str, ids: Sequence[str], exc: BaseException) -> None:
    """Count a failed publish on the rows (best effort; the rows are kept either way)."""
    try:
        for i in range(0, len(ids), ID_CHUNK):
            OutboxEvent.objects.using(alias).filter(event_id__in=ids[i : i + ID_CHUNK]).update(
                attempts=models.F("attempts") + 1, last_error=describe(exc)
            )
    except DatabaseError:
        log.warning("fanout: could not record the failed publish in the outbox", exc_info=True)


def forget(alias: str, ids: Sequence[str]) -> None:
    """Delete the rows of published events."""
    try:
        for i in range(0, len(ids), ID_CHUNK):
            OutboxEvent.objects.using(alias).filter(event_id__in=ids[i : i + ID_CHUNK]).delete()
    except DatabaseError:
        log.warning(
            "fanout: %d event(s) were published but their outbox rows could not be deleted; "
            "the sweeper will publish them again (deduplicated by event id)",
            len(ids),
            exc_info=True,
        )
