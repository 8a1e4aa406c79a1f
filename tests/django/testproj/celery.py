"""The project's Celery app, exactly as Celery's Django guide writes it."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django.settings")

app = Celery("testproj")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
