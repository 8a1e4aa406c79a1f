"""The history store's copier in a worker: started from the Celery settings.

``fanout_history_url = "postgresql://..."`` turns it on; ``fanout_history_retention``
(days, unset = keep every run) deletes older runs from the store about once an hour.
Each worker's main process starts one copier thread when it is ready and stops it
when it stops; the copier's lease in Redis lets one process of the fleet copy at a
time (``fanout/_postgres/copier.py``).
"""

from __future__ import annotations

import logging
from typing import Any

from .._errors import ConfigError
from .._postgres.copier import Copier
from .._postgres.store import PgHistory

log = logging.getLogger("fanout")


def history_url(app: Any) -> str | None:
    """The Celery setting ``fanout_history_url`` (None when unset)."""
    value = app.conf.get("fanout_history_url")
    if value in (None, ""):
        return None
    if not isinstance(value, str) or not value.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"fanout_history_url must be a postgresql:// URL, not {value!r}")
    return value


def history_retention(app: Any) -> float | None:
    """The Celery setting ``fanout_history_retention``: days (None = keep every run)."""
    value = app.conf.get("fanout_history_retention")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(
            f"fanout_history_retention must be a number of days above 0, not {value!r}"
        )
    return float(value)


def copier_for(rt: Any) -> Copier | None:
    """A copier for the runtime's app, or None when the store is not configured."""
    url = history_url(rt.app)
    if url is None:
        return None
    return Copier(lambda: rt.store, PgHistory(url), retention_days=history_retention(rt.app))
