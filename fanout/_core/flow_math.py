"""The arithmetic of flow control: keys and buckets, waiting scores, GCRA, debounce.

Pure: no Redis, no Celery.  The Lua scripts that decide for real
(``fanout/_redis/lua/fc_*.lua``) do the same arithmetic; :func:`gcra` and
:func:`debounce_due` are tested against them on the same inputs
(``tests/unit/test_flow_differential.py``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .flow import PRIORITY_LIMIT_S, UNEVALUABLE_KEY

if TYPE_CHECKING:
    from .expr import Expression
    from .flow import Cancel, Concurrency, Priority


# --------------------------------------------------------------------------- keys


def eval_key(expr: Expression | None, event: Mapping[str, Any]) -> str:
    """The flow-control key of ``event``: ``""`` without an expression, the CEL
    result otherwise, :data:`UNEVALUABLE_KEY` when it cannot be evaluated."""
    if expr is None:
        return ""
    key = expr.key({"event": dict(event)})
    return UNEVALUABLE_KEY if key is None else key


def bucket(*parts: str) -> str:
    """A short, stable Redis-safe name for a (function, key, ...) tuple."""
    h = hashlib.blake2b("\0".join(parts).encode(), digest_size=12)
    return h.hexdigest()


def concurrency_bucket(app_id: str, fn_id: str, c: Concurrency, event: Mapping[str, Any]) -> str:
    key = eval_key(c._key, event)
    if c.scope == "app":
        return bucket("app", app_id, c.key or "", key)
    return bucket("fn", app_id, fn_id, c.key or "", key)


def priority_factor(p: Priority | None, event: Mapping[str, Any]) -> float:
    """Seconds a run jumps ahead (clamped to +-600; 0 when it cannot be evaluated)."""
    if p is None or p._run is None:
        return 0.0
    value = p._run.number({"event": dict(event)})
    if value is None:
        return 0.0
    return max(-PRIORITY_LIMIT_S, min(PRIORITY_LIMIT_S, value))


def wait_score_ms(waiting_since: float, factor: float) -> int:
    """Order of a run in a concurrency waiting list: lower goes first."""
    return int((waiting_since - factor) * 1000)


# --------------------------------------------------------------------------- arithmetic


def gcra(tat_ms: float, now_ms: float, period_ms: float, limit: int, burst: int) -> tuple[float, float]:
    """Generic cell rate algorithm, delaying instead of refusing.

    ``limit`` starts per ``period`` are spaced ``period / limit`` apart; up to
    ``burst`` may start at the same instant.  Returns (start, new theoretical
    arrival time).  ``fanout/_redis/lua/fc_throttle.lua`` does exactly this.
    """
    interval = period_ms / limit
    tolerance = (burst - 1) * interval
    tat = max(tat_ms, now_ms)
    start = max(now_ms, tat - tolerance)
    return start, max(tat, start) + interval


def debounce_due(now: float, first: float, period: float, timeout: float | None) -> float:
    """When a debounced run starts: ``period`` after the last event, but never later
    than ``timeout`` after the first one."""
    due = now + period
    if timeout is not None:
        due = min(due, first + timeout)
    return due


def path_value(data: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    """(found, value) of a dotted field path such as ``data.user_id``."""
    cur: Any = data
    for part in path.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return False, None
        cur = cur[part]
    return True, cur


def match_bucket(c: Cancel, event: Mapping[str, Any]) -> str | None:
    """The bucket an event falls in for a cancel with ``match`` (``*`` without one;
    None when the event lacks the field, so nothing can match it)."""
    if c.match is None:
        return "*"
    found, value = path_value(event, c.match)
    if not found:
        return None
    return bucket(json.dumps(value, sort_keys=True, separators=(",", ":"), default=str))
