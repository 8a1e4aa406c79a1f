"""Django settings for fanout's Django tests and for the processes they start.

Which database is decided by ``tests/django/conftest.py`` and passed on in the
environment, so the pytest process, the `celery worker` subprocess and the
crash-test subprocesses all use the same one:

* ``FANOUT_DJANGO_TEST_DB``: ``postgresql`` (default) or ``sqlite``;
* ``FANOUT_DJANGO_DB_NAME``: for subprocesses, the test database the runner created;
* ``FANOUT_DJANGO_PG_TEST_NAME``: the PostgreSQL test database for this session;
* ``FANOUT_DJANGO_SQLITE_DIR``: where the SQLite fallback keeps its files;
* ``FANOUT_TEST_PG_HOST``/``_PORT``/``_USER``/``_PASSWORD``: the PostgreSQL server.

``FANOUT_DJANGO_REDIS_URL`` / ``FANOUT_DJANGO_BROKER_URL`` override the Redis
store and the broker (the outage tests point them at a dead port).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from tests.support import url_for

BACKEND = os.environ.get("FANOUT_DJANGO_TEST_DB", "postgresql")

if BACKEND == "postgresql":
    _db: dict[str, Any] = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "fanout_django",
        "USER": os.environ.get("FANOUT_TEST_PG_USER", "postgres"),
        "PASSWORD": os.environ.get("FANOUT_TEST_PG_PASSWORD", ""),
        "HOST": os.environ.get("FANOUT_TEST_PG_HOST", "127.0.0.1"),
        "PORT": os.environ.get("FANOUT_TEST_PG_PORT", "5432"),
        # Per pytest session (conftest.py sets it): sessions running side by side
        # on one server must not drop each other's database.
        "TEST": {"NAME": os.environ.get("FANOUT_DJANGO_PG_TEST_NAME", "test_fanout_django")},
    }
else:
    _dir = os.environ.get("FANOUT_DJANGO_SQLITE_DIR") or tempfile.gettempdir()
    _db = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(_dir, "fanout_django.sqlite3"),
        "TEST": {"NAME": os.path.join(_dir, "test_fanout_django.sqlite3")},
        "OPTIONS": {"timeout": 20},
    }
if os.environ.get("FANOUT_DJANGO_DB_NAME"):
    _db["NAME"] = os.environ["FANOUT_DJANGO_DB_NAME"]
DATABASES = {"default": _db}

REDIS_URL = os.environ.get("FANOUT_DJANGO_REDIS_URL") or url_for("tests.django")
BROKER_URL = os.environ.get("FANOUT_DJANGO_BROKER_URL") or REDIS_URL

SECRET_KEY = "fanout-django-tests"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["fanout.django", "tests.django.shop"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "tests.django.testproj.urls"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

FANOUT = {
    "APP_ID": "django-tests",
    "REDIS_URL": REDIS_URL,
    "CELERY_APP": "tests.django.testproj.celery:app",
    "SWEEP_INTERVAL": 0.3,
    # A process may set its own (the outage emitter does: its row must still be there
    # when the test reads it, whatever the load).
    "SWEEP_GRACE": float(os.environ.get("FANOUT_DJANGO_SWEEP_GRACE", "2.0")),
    "SWEEP_MAX_BACKOFF": 2.0,
    "CLIENT_OPTIONS": {"retry_backoff": [0.2, 0.4, 0.6]},
}

# Celery, configured the usual Django way (app.config_from_object(..., namespace="CELERY")).
CELERY_BROKER_URL = BROKER_URL
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_HIJACK_ROOT_LOGGER = True
