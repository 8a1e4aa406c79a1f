"""Which functions are paused, as each process sees them, and parking a pass.

While a function is paused, events still create its runs and cron ticks are still
recorded; every pass that arrives (a new run's first pass, a run waking from a
sleep, a wait answered, a retry due) is parked in the store instead of run, at a
pass boundary, so a step that is running finishes.  Resuming hands the parked passes
back to the broker oldest first, where the function's flow control applies as usual;
``skip_backlog`` records the runs that never started as skipped instead.

Workers learn which functions are paused from a set in the store, re-read every
second by a thread in each process (no Redis round trip per pass); a pass of a
function on that list asks the store, atomically, whether to park.  A pass that
arrives within a second of a pause may still run: pausing stops runs at their next
pass boundary, not mid-pass.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from .._core.outage import Outage
from .._redis.pause_store import PauseInfo, PauseStore
from .._redis.store import Store

log = logging.getLogger("fanout")
REFRESH_SECONDS = 1.0


class Paused:
    """The paused functions (a set in the store, re-read every second) and the pause
    flag's operations; resuming is in ``pausing.py``."""

    def __init__(self, store: Callable[[], Store]) -> None:
        self._store = store
        self._pid = 0
        self._stores: PauseStore | None = None
        self._paused: frozenset[str] = frozenset()
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    @property
    def store(self) -> PauseStore:
        pid = os.getpid()
        if self._stores is None or self._pid != pid:
            with self._lock:
                if self._stores is None or self._pid != pid:
                    self._stores = PauseStore(self._store())
                    self._paused = frozenset(self._stores.paused())
                    self._pid = pid
                    threading.Thread(target=self._refresh_loop, args=(pid,),
                                     name="fanout-paused", daemon=True).start()
        return self._stores

    def _refresh_loop(self, pid: int) -> None:
        outage = Outage("reading the paused functions", base=REFRESH_SECONDS)
        wait = REFRESH_SECONDS
        while self._pid == pid:
            if self._stopped.wait(wait):
                return
            try:
                self._paused = frozenset(self.store.paused())
            except Exception as exc:  # noqa: BLE001 - Redis away: keep the last answer
                wait = max(REFRESH_SECONDS, outage.failed(exc))
                continue
            outage.ok()
            wait = REFRESH_SECONDS

    def stop(self) -> None:
        """End the refresh thread (before its Redis goes away: a process's last
        moments, a test session's end), without a warning for the outage that follows."""
        self._stopped.set()

    def is_paused(self, fn_key: str) -> bool:
        """Whether ``fn_key`` is paused, as this process last read it (no round trip):
        a pass does not go on to the run's next step in its task then."""
        return fn_key in self._paused

    def maybe_park(self, fn_key: str, run_id: str, seq: int | None) -> bool:
        """Park this pass if its function is paused; True when the caller must stop."""
        store = self.store
        if fn_key not in self._paused:
            return False
        if store.park(fn_key, run_id, seq):
            log.info("fanout: %s is paused: run %s waits for resume", fn_key, run_id)
            return True
        return False

    def pause(self, fn_key: str, reason: str = "") -> bool:
        created = self.store.pause(fn_key, reason)
        self._paused = self._paused | {fn_key}
        log.warning("fanout: %s paused%s", fn_key, f" ({reason})" if reason else "")
        return created

    def resumed(self, fn_key: str) -> list[tuple[str, int | None]]:
        """Unpause ``fn_key``; the passes parked meanwhile, oldest first."""
        parked = self.store.resume(fn_key)
        self._paused = self._paused - {fn_key}
        return parked

    def info(self, fn_key: str) -> PauseInfo | None:
        return self.store.info(fn_key)
