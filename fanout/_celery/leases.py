"""The leases this process holds (runs in a pass, parallel branches), renewed from a
daemon thread every third of their length, so a long step keeps its run."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from .._core.outage import Outage
from .._core.run_record import LEASE
from .._redis.store import Store, StoreError
from .forkgate import gate

log = logging.getLogger("fanout")


class Leases:
    """Leases held by this process, renewed every third of their length."""

    def __init__(self, store: Callable[[], Store], lease_s: float) -> None:
        self._store = store
        self.lease_s = lease_s
        self._held: dict[tuple[str, str], tuple[str, int]] = {}
        self._lock = threading.Lock()
        self._pid = 0

    def hold(self, run_id: str, field: str, token: str, until_ms: int) -> None:
        with self._lock:
            self._held[(run_id, field)] = (token, until_ms)
        if self._pid != os.getpid():  # first lease in this (possibly forked) process
            self._pid = os.getpid()
            threading.Thread(target=self._renew_loop, name="fanout-leases", daemon=True).start()

    def release(self, run_id: str, field: str) -> None:
        with self._lock:
            self._held.pop((run_id, field), None)

    def score(self, run_id: str, field: str = LEASE) -> int:
        """The timer score we last wrote for this lease (for a conditional removal)."""
        with self._lock:
            held = self._held.get((run_id, field))
        return held[1] if held else 0

    def _renew_loop(self) -> None:
        pid = os.getpid()
        # A failed renewal is tried again sooner than the next third of the lease,
        # backing off, but never waiting longer than that third.
        third = self.lease_s / 3
        outage = Outage("renewing the leases of running steps", base=min(0.1, third), cap=third)
        wait = self.lease_s / 3
        while self._pid == pid:
            time.sleep(wait)
            wait = self.lease_s / 3
            with self._lock:
                items = [(rid, f, tok) for (rid, f), (tok, _u) in self._held.items()]
            if not items:
                continue
            until = int((time.time() + self.lease_s) * 1000)
            try:
                with gate.section():
                    lost = set(self._store().renew_leases(items, until))
            except StoreError as exc:
                wait = outage.failed(exc)
                continue
            outage.ok()
            self._renewed(items, lost, until)

    def _renewed(
        self, items: list[tuple[str, str, str]], lost: set[tuple[str, str]], until: int
    ) -> None:
        """Record a renewal: a lost lease is no longer renewed, a held one got ``until``.
        A lease released or taken again (new token) since the renewal began is left
        as it is now."""
        with self._lock:
            for rid, f, tok in items:
                held = self._held.get((rid, f))
                if held is None or held[0] != tok:
                    continue
                if (rid, f) in lost:
                    del self._held[(rid, f)]
                else:
                    self._held[(rid, f)] = (tok, until)
