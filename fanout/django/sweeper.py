"""The outbox sweeper: republishes rows that a failed publish or a crash left behind.

It runs in each worker's main process, in fanout's timer thread (registered
with ``runtime.timers.add_periodic`` by the app config), every ``SWEEP_INTERVAL``
seconds.  One pass:

* selects up to ``SWEEP_BATCH`` rows whose ``next_attempt_at`` has passed (new
  rows get ``created_at + SWEEP_GRACE``, so the on-commit publisher has that
  long to do its job first), oldest first, locked ``FOR UPDATE SKIP LOCKED``
  where the database can (PostgreSQL, MySQL 8, Oracle): several workers sweep
  disjoint rows.  SQLite has no row locks; two workers may then publish a row
  twice, which is harmless;
* publishes them in one batch and deletes them in the same transaction;
* on failure keeps them, counts the attempt, stores the error and pushes
  ``next_attempt_at`` back exponentially (capped at ``SWEEP_MAX_BACKOFF``).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError, connections, transaction
from django.db.models import QuerySet
from django.utils import timezone

from .._core.event import Event
from .._core.outage import Outage
from ._project import client
from .conf import FanoutSettings, get_settings
from .models import OutboxEvent
from .outbox import describe

log = logging.getLogger("fanout.django")

PERIODIC_NAME = "fanout.django.outbox-sweeper"
#: Batches one timer tick may publish before yielding to fanout's own timers.
MAX_BATCHES_PER_TICK = 10


@dataclass(frozen=True)
class SweepResult:
    published: int = 0
    failed: int = 0

    @property
    def seen(self) -> int:
        return self.published + self.failed


def _locked(qs: QuerySet[OutboxEvent], alias: str) -> QuerySet[OutboxEvent]:
    features = connections[alias].features
    if features.has_select_for_update_skip_locked:
        return qs.select_for_update(skip_locked=True)
    if features.has_select_for_update:
        return qs.select_for_update()
    return qs


def _prepare(row: OutboxEvent) -> tuple[Event, str]:
    """The (event, JSON) pair the runtime publishes, rebuilt from a row."""
    wire = json.loads(row.payload)
    if not isinstance(wire, dict) or wire.get("id") != row.event_id or not wire.get("name"):
        raise ValueError("the payload is not this row's event")
    return Event.from_wire(wire), row.payload


def _reschedule(
    alias: str, rows: list[OutboxEvent], error: str, now: _dt.datetime, conf: FanoutSettings
) -> None:
    for row in rows:
        row.attempts += 1
        row.last_error = error
        row.next_attempt_at = now + _dt.timedelta(seconds=conf.backoff(row.attempts))
    OutboxEvent.objects.using(alias).bulk_update(
        rows, ["attempts", "last_error", "next_attempt_at"]
    )


_outage = Outage("the outbox sweeper publishing events (rows kept, retried with back-off)")


def sweep(*, due_only: bool = True, limit: int | None = None) -> SweepResult:
    """One pass over the outbox (see the module docstring); safe to call anywhere."""
    conf = get_settings()
    alias = conf.database
    runtime = client().runtime
    now = timezone.now()
    with transaction.atomic(using=alias):
        qs = OutboxEvent.objects.using(alias).order_by("next_attempt_at", "id")
        if due_only:
            qs = qs.filter(next_attempt_at__lte=now)
        rows = list(_locked(qs, alias)[: limit or conf.sweep_batch])
        if not rows:
            return SweepResult()
        good: list[OutboxEvent] = []
        prepared: list[tuple[Event, str]] = []
        broken: list[OutboxEvent] = []
        for row in rows:
            try:
                prepared.append(_prepare(row))
                good.append(row)
            except ValueError as exc:  # json.JSONDecodeError is a ValueError
                log.error("fanout: outbox row %s has an unreadable payload: %s", row.pk, exc)
                row.last_error = f"unreadable payload: {exc}"
                broken.append(row)
        if broken:
            _reschedule(alias, broken, broken[0].last_error, now, conf)
        if not good:
            return SweepResult(failed=len(broken))
        try:
            runtime.publisher.publish(prepared)
        except Exception as exc:  # noqa: BLE001 - any failure: keep the rows, retry with backoff
            # The rows back off on their own (SWEEP_MAX_BACKOFF); the outage is logged
            # once when it starts, at most once a minute, and once when it ends.
            _outage.failed(exc)
            _reschedule(alias, good, describe(exc), now, conf)
            return SweepResult(failed=len(rows))
        OutboxEvent.objects.using(alias).filter(pk__in=[r.pk for r in good]).delete()
    _outage.ok()
    log.info("fanout: the outbox sweeper published %d event(s)", len(good))
    return SweepResult(published=len(good), failed=len(broken))


class PeriodicSweep:
    """The job the timer thread runs: drain due rows, then drop this thread's connection.

    Closing the connection after each tick keeps the timer thread from holding
    a database connection while idle (and from sharing one with forked pool
    processes).  Database errors are logged at most once a minute.
    """

    def __init__(self, sweep_fn: Callable[[], SweepResult] | None = None) -> None:
        self._sweep = sweep_fn or sweep
        self._last_warning = 0.0

    def __call__(self) -> int:
        alias = get_settings().database
        total = 0
        try:
            for _ in range(MAX_BATCHES_PER_TICK):
                result = self._sweep()
                total += result.published
                if result.failed or result.seen < get_settings().sweep_batch:
                    break
        except DatabaseError as exc:
            now = time.monotonic()
            if now - self._last_warning >= 60:
                self._last_warning = now
                log.warning("fanout: the outbox sweeper cannot read the outbox: %s", exc)
        finally:
            connections[alias].close()
        return total


def install(runtime: Any, conf: FanoutSettings) -> None:
    """Register the sweeper on ``runtime``; it runs only where the timer thread runs."""
    runtime.timers.add_periodic(PERIODIC_NAME, PeriodicSweep(), conf.sweep_interval)
