"""Django integration: ``emit()`` from views with a transactional outbox.

Add ``"fanout.django"`` to ``INSTALLED_APPS`` and configure it::

    FANOUT = {
        "APP_ID": "shop",
        "REDIS_URL": "redis://localhost:6379/0",
        "CELERY_APP": "proj.celery:app",
    }

Functions live in each app's ``fanout_functions.py`` (found like Celery's
``tasks.py``) and use :func:`client`.  :func:`emit` and :func:`send` write the
event to an outbox table in the current transaction and publish it after
commit; a sweeper in the workers republishes what a crash or an outage left
behind.  See docs/howto/django.md.

Importing this package needs Django only; the outbox model is imported lazily.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

try:
    import django  # noqa: F401
except ImportError:
    raise ImportError(
        "fanout.django needs Django: pip install 'celery-fanout[django]'") from None

from .._core.event import Event
from ._project import client

__all__ = ["client", "emit", "send", "sweep"]


def emit(
    name: str,
    data: Mapping[str, Any] | None = None,
    *,
    id: str | None = None,
    user: Mapping[str, Any] | None = None,
) -> str:
    """Send one event through the outbox and return its id.

    Inside ``transaction.atomic()`` the event is published after the commit and
    not at all on rollback; outside, at once.  Raises :class:`fanout.EventError`
    for an invalid event before anything is written.
    """
    from .outbox import emit as _emit

    return _emit(name, data, id=id, user=user)


def send(events: Event | Mapping[str, Any] | Iterable[Event | Mapping[str, Any]]) -> list[str]:
    """Send several events through the outbox (one row each); returns their ids."""
    from .outbox import send as _send

    return _send(events)


def sweep(*, due_only: bool = True) -> int:
    """Publish outbox rows now (the workers do this every ``SWEEP_INTERVAL``).

    Returns how many rows were published.  ``due_only=False`` also takes rows
    younger than ``SWEEP_GRACE``.
    """
    from .sweeper import sweep as _sweep

    return _sweep(due_only=due_only).published
