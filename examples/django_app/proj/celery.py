"""The Celery app. ``celery -A proj worker`` imports this module; Celery's Django
fix-up then runs ``django.setup()``, and fanout.django's app config loads every
app's ``fanout_functions.py`` and the outbox sweeper."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")

app = Celery("proj")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
