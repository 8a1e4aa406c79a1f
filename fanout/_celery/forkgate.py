"""Keep ``os.fork()`` out of the middle of fanout's background work.

A prefork Celery worker forks its pool processes from the main process, and
forks again whenever a pool process dies or is recycled
(``--max-tasks-per-child``).  fanout runs threads in that main process: the
timer thread, the periodic jobs, and in a beat the cron thread.  Those threads
publish through Celery and kombu, which guard their lazily computed attributes
(``app.amqp``, a channel's client, ...) with locks shared by all instances.  A
fork copies such a lock in whatever state it is in.  If one of fanout's
threads held it at that instant, the new pool process inherits a lock that no
thread of its own will ever release, and its first publish blocks forever.

:data:`gate` prevents that.  Background work runs inside
``with gate.section():``; ``os.register_at_fork`` makes every fork wait until
no section is open and keeps new sections from opening until the fork is
done.  The wait is bounded (:data:`FORK_WAIT`): a section stuck on a dead
broker delays a fork, but does not stop it.  The child starts with a fresh
gate, since none of the parent's threads exist there.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("fanout")

FORK_WAIT = 10.0  # seconds a fork waits for open sections to close


class ForkGate:
    """Sections of background work, and forks that wait for them to close."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._open = 0
        self._forking = 0  # forks in progress (two threads may fork at once)

    @contextmanager
    def section(self) -> Iterator[None]:
        """Run the body with no fork in progress; a fork waits until it ends."""
        with self._cond:
            while self._forking:
                self._cond.wait()
            self._open += 1
        try:
            yield
        finally:
            with self._cond:
                self._open -= 1
                self._cond.notify_all()

    @property
    def open_sections(self) -> int:
        return self._open

    def before_fork(self) -> None:
        deadline = time.monotonic() + FORK_WAIT
        with self._cond:
            self._forking += 1
            while self._open:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning(
                        "fanout: forking while %d background section(s) are still open "
                        "after %.0fs; the new process may block on a lock they hold",
                        self._open, FORK_WAIT,
                    )
                    break
                self._cond.wait(left)

    def after_fork_in_parent(self) -> None:
        with self._cond:
            self._forking = max(0, self._forking - 1)
            self._cond.notify_all()

    def after_fork_in_child(self) -> None:
        self._reset()


gate = ForkGate()
os.register_at_fork(
    before=gate.before_fork,
    after_in_parent=gate.after_fork_in_parent,
    after_in_child=gate.after_fork_in_child,
)
