"""The transactional outbox: one row per event written by ``emit``/``send``."""

from __future__ import annotations

import datetime as _dt

from django.db import models
from django.utils import timezone


class OutboxEvent(models.Model):
    """An event accepted by ``fanout.django.emit`` but not yet known to be published.

    The row is written in the caller's transaction and deleted once Redis and the
    broker have the event.  A row that outlives ``SWEEP_GRACE`` is republished by
    the sweeper in the workers; ``attempts`` and ``last_error`` say why it is late.
    """

    id: models.BigAutoField[int, int] = models.BigAutoField(primary_key=True)
    event_id: models.CharField[str, str] = models.CharField(max_length=256, unique=True)
    name: models.CharField[str, str] = models.CharField(max_length=256)
    payload: models.TextField[str, str] = models.TextField(
        help_text="The event as JSON, exactly as it will be published."
    )
    created_at: models.DateTimeField[_dt.datetime, _dt.datetime] = models.DateTimeField(
        default=timezone.now
    )
    attempts: models.PositiveIntegerField[int, int] = models.PositiveIntegerField(default=0)
    last_error: models.TextField[str, str] = models.TextField(blank=True, default="")
    next_attempt_at: models.DateTimeField[_dt.datetime, _dt.datetime] = models.DateTimeField(
        help_text="The sweeper publishes the row from this time on."
    )

    class Meta:
        db_table = "fanout_outbox"
        verbose_name = "outbox event"
        indexes = [models.Index(fields=["next_attempt_at"], name="fanout_outbox_due")]

    def __str__(self) -> str:
        return f"{self.name} ({self.event_id})"
