"""A read-only admin page for the outbox: rows here are events not yet published."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.http import HttpRequest

from .models import OutboxEvent

if TYPE_CHECKING:
    _Base = admin.ModelAdmin[OutboxEvent]
else:
    _Base = admin.ModelAdmin


@admin.register(OutboxEvent)
class OutboxEventAdmin(_Base):
    list_display = ("event_id", "name", "created_at", "attempts", "next_attempt_at", "last_error")
    list_filter = ("name",)
    search_fields = ("event_id", "name")
    ordering = ("next_attempt_at",)
    readonly_fields = (
        "event_id",
        "name",
        "payload",
        "created_at",
        "attempts",
        "last_error",
        "next_attempt_at",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
