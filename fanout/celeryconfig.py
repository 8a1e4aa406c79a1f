"""Celery settings for running fanout with at-least-once delivery, JSON only.

Use it as is, after ``pip install celery-fanout``::

    app.config_from_object("fanout.celeryconfig")

or apply the same settings to an app you configure yourself with
:func:`fanout.celeryconfig.apply` (it keeps settings you already set when asked),
or copy the parts you need.  fanout refuses an app configured for pickle, and its
workers warn when late acks are off or the prefetch multiplier is above 1.

fanout's state store is ``FANOUT_REDIS_URL``, else ``redis://localhost:6379/0``.
The broker is ``CELERY_BROKER_URL``; without it, the next database of the store's
Redis (``redis://host:6379/0`` gives ``redis://host:6379/1``; database 15 gives 14),
never the store's own database.  A worker whose broker and store share a Redis server
logs a warning: in production give the broker its own server, or RabbitMQ
(docs/howto/deployment.md, "The broker").
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

_DEFAULT_STORE = "redis://localhost:6379/0"


def broker_beside(store_url: str) -> str:
    """The broker URL used when only the store's is given: the same Redis server, the
    next database (the one before for database 15), so the two never share a database.

    A Redis Cluster or in-memory store has no database to move to: set
    ``CELERY_BROKER_URL`` then (``memory://`` gives Celery's ``memory://`` broker).
    """
    parts = urlsplit(store_url)
    scheme = parts.scheme.lower()
    if scheme == "memory":
        return "memory://"
    if scheme in ("redis", "rediss"):
        path = parts.path.strip("/")
        db = int(path) if path.isdigit() else 0
        return urlunsplit(parts._replace(path=f"/{db + 1 if db < 15 else db - 1}"))
    if scheme == "unix":
        query = dict(parse_qsl(parts.query))
        db = int(query["db"]) if query.get("db", "").isdigit() else 0
        # kombu's form of a socket: redis+socket:///path?virtual_host=<db>
        return f"redis+socket://{parts.path}?virtual_host={db + 1 if db < 15 else db - 1}"
    raise ValueError(
        f"fanout.celeryconfig: FANOUT_REDIS_URL is {scheme}://..., which cannot also carry "
        "Celery's broker: set CELERY_BROKER_URL (see docs/howto/deployment.md)"
    )


broker_url = os.environ.get("CELERY_BROKER_URL") or broker_beside(
    os.environ.get("FANOUT_REDIS_URL") or _DEFAULT_STORE
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
