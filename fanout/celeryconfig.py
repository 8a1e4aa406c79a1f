"""Celery settings for running fanout with at-least-once delivery, JSON only.

Use it as is, after ``pip install celery-fanout``::

    app.config_from_object("fanout.celeryconfig")

or apply the same settings to an app you configure yourself with
:func:`fanout.celeryconfig.apply` (it keeps settings you already set when asked),
or copy the parts you need.  fanout refuses an app configured for pickle, and its
workers warn when late acks are off or the prefetch multiplier is above 1.

The broker is ``CELERY_BROKER_URL``, else ``FANOUT_REDIS_URL``, else
``redis://localhost:6379/0``; fanout's state store is ``FANOUT_REDIS_URL`` (else the
client's default).  Keep the broker and the store in separate Redis databases.
"""

from __future__ import annotations

import os
from typing import Any

broker_url = os.environ.get("CELERY_BROKER_URL") or os.environ.get(
    "FANOUT_REDIS_URL", "redis://localhost:6379/0"
)
# fanout keeps its own state in Redis; Celery task results are not needed.
result_backend = None
task_ignore_result = True

# JSON only, never pickle.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
event_serializer = "json"

# At-least-once: a message is acknowledged only after its task has finished,
# and a message whose worker died is delivered again.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1

# Keep publishing robust when the broker blips.
broker_connection_retry_on_startup = True
task_publish_retry = True

# Where fanout keeps runs, steps and events (None: the client's default).
fanout_redis_url = os.environ.get("FANOUT_REDIS_URL")

#: The settings fanout's guarantees rely on (applied by :func:`apply`).
AT_LEAST_ONCE: dict[str, Any] = {
    "task_serializer": "json",
    "result_serializer": "json",
    "accept_content": ["json"],
    "event_serializer": "json",
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
    "task_ignore_result": True,
    "broker_connection_retry_on_startup": True,
    "task_publish_retry": True,
}


def apply(app: Any) -> None:
    """Set fanout's at-least-once, JSON-only settings on a Celery app.

    Only the delivery and serialization settings are set; the broker URL and the
    rest of the app's configuration are left as they are.
    """
    app.conf.update(AT_LEAST_ONCE)
