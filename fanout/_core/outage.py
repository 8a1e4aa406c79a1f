"""How a background loop lives through an outage of Redis or the broker.

Every loop a worker runs beside its tasks (the timer scan, the periodic jobs, lease
renewal, the paused-functions cache, the metrics sender, the cron thread) keeps one
:class:`Outage`.  After a failed round the loop asks it how long to wait
(:meth:`Outage.failed`): an exponential back-off with full jitter, from ``base`` up to
``cap`` seconds, so a loop neither spins on a dead server nor waits long after it is
back.  The outage is told in three lines at most per minute:

* one WARNING when it starts, with the cause and its one traceback;
* while it lasts, at most one WARNING a minute (how long so far, the last error);
* one INFO with its length when a round succeeds again (:meth:`Outage.ok`).

With ``calm`` seconds, a success ends the outage only once no round has failed for
that long: a loop whose rounds fail and succeed in turn (the messages of one worker
process while one master of a Redis Cluster fails over: the runs on the other
masters go through) has one outage, not one WARNING and traceback per turn.

Pure: no I/O but the ``logging`` calls; the clock and the random source are
parameters, so the tests drive it without sleeping.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

REPEAT_SECONDS = 60.0


class Backoff:
    """Exponential back-off with jitter: the n-th consecutive failure waits a random
    time between half and all of ``min(cap, base * 2**n)``."""

    def __init__(self, base: float = 0.1, cap: float = 5.0,
                 rand: Callable[[], float] = random.random) -> None:
        if base <= 0 or cap < base:
            raise ValueError(f"back-off needs 0 < base <= cap (got base={base}, cap={cap})")
        self.base = base
        self.cap = cap
        self._rand = rand
        self.failures = 0

    def next_delay(self) -> float:
        """Count one more failure; the seconds to wait before the next attempt."""
        ceiling = min(self.cap, self.base * (2.0 ** min(self.failures, 30)))
        self.failures += 1
        return ceiling * (0.5 + 0.5 * self._rand())

    def reset(self) -> None:
        self.failures = 0


class Outage:
    """One loop's view of an outage: its back-off and the lines it logs."""

    def __init__(
        self,
        what: str,
        *,
        logger: logging.Logger | None = None,
        base: float = 0.1,
        cap: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
        repeat: float = REPEAT_SECONDS,
        calm: float = 0.0,
    ) -> None:
        if calm < 0:
            raise ValueError(f"calm must be >= 0 seconds (got {calm})")
        self.what = what
        self.calm = calm
        self._last_failure = 0.0
        self._ok_at: float | None = None  # the first good round since the last failure
        self.log = logger or logging.getLogger("fanout")
        self.backoff = Backoff(base, cap, rand)
        self._clock = clock
        self.repeat = repeat
        self.since: float | None = None  # when the outage began (None: no outage)
        self._last_line = 0.0
        self.attempts = 0

    @property
    def active(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException) -> float:
        """Record a failed round; returns the seconds to wait before the next one."""
        now = self._clock()
        if self.since is not None and self._ok_at is not None \
                and now - self._last_failure >= self.calm:
            self._end(self._ok_at)  # it ended, calm, before this new failure
        self._last_failure, self._ok_at = now, None
        self.attempts += 1
        if self.since is None:
            self.since = self._last_line = now
            self.log.warning(
                "fanout: %s failed (%s: %s); retrying with back-off up to %gs, logging "
                "at most once a minute until it recovers",
                self.what, type(exc).__name__, _short(exc), self.backoff.cap,
                exc_info=(type(exc), exc, exc.__traceback__),
            )
        elif now - self._last_line >= self.repeat:
            self._last_line = now
            self.log.warning(
                "fanout: %s still failing after %.0fs (%d attempts; last: %s: %s)",
                self.what, now - self.since, self.attempts, type(exc).__name__, _short(exc),
            )
        return self.backoff.next_delay()

    def ok(self) -> None:
        """Record a good round: ends an outage in progress (one INFO line), once no
        round has failed for ``calm`` seconds."""
        self.backoff.reset()
        if self.since is None:
            return
        now = self._clock()
        if self._ok_at is None:
            self._ok_at = now
        if now - self._last_failure >= self.calm:
            self._end(self._ok_at)

    def _end(self, at: float) -> None:
        """The outage ended at ``at`` (its first good round after the last failure)."""
        assert self.since is not None
        self.log.info(
            "fanout: %s recovered after an outage of %.1fs (%d failed attempts)",
            self.what, at - self.since, self.attempts,
        )
        self.since = None
        self._ok_at = None
        self.attempts = 0
        self.backoff.reset()


def _short(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


__all__ = ["Backoff", "Outage"]
