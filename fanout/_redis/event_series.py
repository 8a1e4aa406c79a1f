"""Which event names get a metrics series of their own.

Events are counted by name (``c|events|<name>`` in the metrics hash, exported as the
``event`` label).  Names come from whoever sends events, an ingest key included, so
an unbounded set of names would make an unbounded set of series in Prometheus.  The
first ``cap`` distinct names (fleet-wide, in a Redis set beside the metrics hash)
are counted under their own name; any name after that is counted under
:data:`OTHER`.

Each process asks Redis once per name (one ``admit_event_name`` script call) and
remembers the answer, so counting an event stays one ``HINCRBY`` in the pipeline
that stores it.
"""

from __future__ import annotations

import threading

from .scripts import Scripts

OTHER = "other"
DEFAULT_CAP = 1000
_REFUSED_MEMORY = 10_000


class EventSeries:
    """The label an event name is counted under, capped fleet-wide."""

    def __init__(self, scripts: Scripts, key: str, cap: int = DEFAULT_CAP) -> None:
        self.scripts = scripts
        self.key = key
        self.cap = int(cap)
        self._admitted: set[str] = set()
        self._refused: set[str] = set()
        self._lock = threading.Lock()

    def label(self, name: str) -> str:
        """``name`` when it has a series of its own, else :data:`OTHER`."""
        if name in self._admitted:
            return name
        if name in self._refused:
            return OTHER
        admitted = bool(self.scripts.run("admit_event_name", [self.key], [name, self.cap]))
        with self._lock:
            if admitted:
                self._admitted.add(name)
            else:
                if len(self._refused) >= _REFUSED_MEMORY:
                    self._refused.clear()
                self._refused.add(name)
        return name if admitted else OTHER
