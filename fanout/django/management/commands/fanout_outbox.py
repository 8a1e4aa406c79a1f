"""``manage.py fanout_outbox``: show the outbox, or publish it now with ``--sweep``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db.models import Min
from django.utils import timezone

from ...conf import get_settings
from ...models import OutboxEvent
from ...sweeper import sweep


class Command(BaseCommand):
    help = (
        "Show events waiting in fanout's outbox; with --sweep, publish the due ones now "
        "(the workers do this every FANOUT['SWEEP_INTERVAL'] seconds)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--sweep", action="store_true", help="publish due rows now")
        parser.add_argument(
            "--all", action="store_true", help="with --sweep: also rows younger than SWEEP_GRACE"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        alias = get_settings().database
        if options["sweep"]:
            published = 0
            while True:
                result = sweep(due_only=not options["all"])
                published += result.published
                if result.failed or result.seen == 0:
                    break
            self.stdout.write(f"published {published} event(s)")
            if result.failed:
                self.stderr.write(f"{result.failed} event(s) could not be published; see the log")
        qs = OutboxEvent.objects.using(alias)
        now = timezone.now()
        stats = qs.aggregate(oldest=Min("created_at"))
        failing = qs.filter(attempts__gt=0).count()
        due = qs.filter(next_attempt_at__lte=now).count()
        total = qs.count()
        self.stdout.write(
            f"outbox ({alias}): {total} waiting, {due} due, {failing} with failed attempts"
            + (f", oldest from {stats['oldest']:%Y-%m-%d %H:%M:%S}" if stats["oldest"] else "")
        )
