"""Paused functions in the store.

Per function (one hash tag, so the two keys share a cluster slot): the pause flag
``{p}:pause:{fn}`` (a JSON string: when and why) and the parked set
``{p}:parked:{fn}`` (passes that arrived while paused, scored by arrival).  The set
``{p}:paused`` lists the paused functions for workers' caches and listings; the flag
alone decides, atomically, in ``park_run.lua`` and ``resume_fn.lua``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from .replies import text, texts
from .store import Store


@dataclass(frozen=True)
class PauseInfo:
    fn_key: str
    since: float
    reason: str
    parked: int


class PauseStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.r = store.r
        self.keys = store.keys
        self.scripts = store.scripts

    def flag_key(self, fn_key: str) -> str:
        return self.keys.pause_flag(fn_key)

    def parked_key(self, fn_key: str) -> str:
        return self.keys.parked(fn_key)

    @property
    def registry_key(self) -> str:
        return self.keys.paused

    def pause(self, fn_key: str, reason: str = "") -> bool:
        """Pause ``fn_key``; False when it was paused already (the first pause stands)."""
        text = json.dumps({"at": time.time(), "reason": reason})
        created = bool(self.r.set(self.flag_key(fn_key), text, nx=True))
        self.r.sadd(self.registry_key, fn_key)
        return created

    def resume(self, fn_key: str) -> list[tuple[str, int | None]]:
        """Unpause ``fn_key``; the passes parked meanwhile, oldest first."""
        raw = self.scripts.run("resume_fn", [self.flag_key(fn_key), self.parked_key(fn_key)], [])
        self.r.srem(self.registry_key, fn_key)
        out: list[tuple[str, int | None]] = []
        for member in raw:
            run_id, seq = json.loads(text(member))
            out.append((str(run_id), None if seq is None else int(seq)))
        return out

    def park(self, fn_key: str, run_id: str, seq: int | None) -> bool:
        """Park one pass if ``fn_key`` is paused (atomically); True when parked."""
        member = json.dumps([run_id, seq])
        return bool(self.scripts.run("park_run", [self.flag_key(fn_key), self.parked_key(fn_key)],
                                     [member, int(time.time() * 1000)]))

    def paused(self) -> set[str]:
        """The functions paused now (one SMEMBERS; workers cache it)."""
        return set(texts(self.r.smembers(self.registry_key)))

    def info(self, fn_key: str) -> PauseInfo | None:
        pipe = self.r.pipeline(transaction=False)
        pipe.get(self.flag_key(fn_key))
        pipe.zcard(self.parked_key(fn_key))
        raw, n = pipe.execute()
        if raw is None:
            return None
        data = json.loads(text(raw))
        return PauseInfo(fn_key, float(data.get("at", 0)), str(data.get("reason", "")), int(n))
