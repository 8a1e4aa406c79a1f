import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies: list[tuple[str, str]] = []  # type: ignore[misc]

    operations = [
        migrations.CreateModel(
            name="OutboxEvent",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("event_id", models.CharField(max_length=256, unique=True)),
                ("name", models.CharField(max_length=256)),
                (
                    "payload",
                    models.TextField(
                        help_text="The event as JSON, exactly as it will be published."
                    ),
                ),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("attempts", models.PositiveIntegerField(default=0)),
                ("last_error", models.TextField(blank=True, default="")),
                (
                    "next_attempt_at",
                    models.DateTimeField(
                        help_text="The sweeper publishes the row from this time on."
                    ),
                ),
            ],
            options={
                "verbose_name": "outbox event",
                "db_table": "fanout_outbox",
                "indexes": [models.Index(fields=["next_attempt_at"], name="fanout_outbox_due")],
            },
        ),
    ]
