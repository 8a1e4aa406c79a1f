"""Test settings: everything in one process (see orders/tests/)."""

import os
import tempfile

from .settings import *  # noqa: F403
from .settings import FANOUT

# fanout's in-memory store (needs fakeredis[lua]) and Celery's in-memory broker:
# no Redis needed to run the tests.
FANOUT = {**FANOUT, "REDIS_URL": "memory://"}
CELERY_BROKER_URL = "memory://"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": ":memory:",
        "OPTIONS": {"timeout": 20},
        # The test database is a file, not :memory:, so that the worker's threads
        # share it; one per process, so parallel runs don't collide.
        "TEST": {
            "NAME": os.path.join(tempfile.gettempdir(), f"fanout-example-test-{os.getpid()}.sqlite3")
        },
    }
}
LOGGING = {"version": 1, "disable_existing_loggers": False}
