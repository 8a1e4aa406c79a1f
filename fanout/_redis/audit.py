"""The audit log: who did what from the dashboard (cancel, replay, rerun, bulk
actions, pause and resume, sending an event, invoking a function).

Key layout (``P`` is the store's prefix)::

    P:audit               list   every record, newest first, trimmed to ``keep``
    P:audit:on:<target>   list   the records about one run, event or function,
                                 newest first (at most 50), expiring with the
                                 retention after the last one

One record is one ``LPUSH`` to each list it belongs to, sent in one pipeline with
the trims and the expiry: an action costs one round trip more, nothing else.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .replies import text
from .store import Store

DEFAULT_KEEP = 10_000


def operator_name(tool: str) -> str:
    """Who acts from a terminal or a script: ``$FANOUT_OPERATOR``, else
    ``<tool>:<login>@<host>``."""
    import getpass
    import os
    import socket

    named = os.environ.get("FANOUT_OPERATOR", "").strip()
    if named:
        return named[:100]
    try:
        login = getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name (a container): say so
        login = "unknown"
    return f"{tool}:{login}@{socket.gethostname()}"
PER_TARGET = 50
MAX_TARGETS = 1000


@dataclass(frozen=True)
class AuditRecord:
    """One action: when, who (a token's name) with which role, what, on what."""

    at: float
    who: str
    role: str
    action: str
    targets: tuple[str, ...] = ()
    detail: str = ""
    client: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "who": self.who, "role": self.role, "action": self.action,
                "targets": list(self.targets), "detail": self.detail, "client": self.client,
                "extra": self.extra}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AuditRecord:
        return cls(at=float(data.get("at", 0)), who=str(data.get("who", "")),
                   role=str(data.get("role", "")), action=str(data.get("action", "")),
                   targets=tuple(str(t) for t in data.get("targets", ())),
                   detail=str(data.get("detail", "")), client=str(data.get("client", "")),
                   extra=dict(data.get("extra") or {}))


class AuditLog:
    """The audit records of one store."""

    def __init__(self, store: Store, *, keep: int = DEFAULT_KEEP) -> None:
        self.r: Any = store.r
        self.keys = store.keys
        self.keep = keep
        self.ttl = max(store.retention, 86400) + 86400

    @property
    def key(self) -> str:
        return self.keys.audit

    def target_key(self, target: str) -> str:
        return self.keys.audit_on(target)

    def record(self, who: str, role: str, action: str, targets: Iterable[str] = (),
               detail: str = "", *, client: str = "", extra: dict[str, Any] | None = None,
               now: float | None = None) -> AuditRecord:
        rec = AuditRecord(at=round(time.time() if now is None else now, 3), who=who, role=role,
                          action=action, targets=tuple(dict.fromkeys(t for t in targets if t)),
                          detail=detail[:1000], client=client, extra=dict(extra or {}))
        text = json.dumps(rec.to_json(), ensure_ascii=False, default=str)
        pipe = self.r.pipeline(transaction=False)
        pipe.lpush(self.key, text)
        pipe.ltrim(self.key, 0, self.keep - 1)
        for t in rec.targets[:MAX_TARGETS]:
            k = self.target_key(t)
            pipe.lpush(k, text)
            pipe.ltrim(k, 0, PER_TARGET - 1)
            pipe.expire(k, self.ttl)
        pipe.execute()
        return rec

    def recent(self, limit: int = 100, offset: int = 0) -> list[AuditRecord]:
        raw = self.r.lrange(self.key, offset, offset + max(1, limit) - 1)
        return [AuditRecord.from_json(json.loads(text(x))) for x in raw]

    def about(self, target: str, limit: int = PER_TARGET) -> list[AuditRecord]:
        raw = self.r.lrange(self.target_key(target), 0, max(1, limit) - 1)
        return [AuditRecord.from_json(json.loads(text(x))) for x in raw]

    def total(self) -> int:
        return int(self.r.llen(self.key))


__all__ = ["AuditLog", "AuditRecord", "operator_name"]
