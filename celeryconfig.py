"""Celery settings for running fanout with at-least-once delivery.

Use it as is (``app.config_from_object("celeryconfig")``) or copy the parts you
need into your own configuration.  fanout refuses an app configured for pickle.
"""

import os

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

# Where fanout keeps runs, steps and events (defaults to the broker's Redis).
fanout_redis_url = os.environ.get("FANOUT_REDIS_URL")
