"""Which events a ``ctx.step.wait_for_event`` accepts (pure; shared by the router,
the worker's sink and the test harness).

A wait names an event, and may add ``match`` (a field path whose value must be the
same in the triggering event and the awaited one) and ``if_exp`` (a CEL expression
over ``event`` and ``async``).  The store indexes open waits by ``match`` value
(:func:`wait_bucket`), so the router looks only at the waits an incoming event can
satisfy, then checks each with :func:`wait_matches`.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from typing import Any

from .event import dumps

__all__ = ["wait_bucket", "wait_matches"]

_MISSING = object()


def _path(data: Mapping[str, Any], path: str) -> Any:
    cur: Any = data
    for part in path.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def wait_bucket(match: str | None, event: Mapping[str, Any]) -> str | None:
    """The index bucket of a wait (``match`` path and the trigger's value), so the
    router looks only at waits whose ``match`` value equals the incoming event's.
    None when the wait has no ``match`` (or the trigger lacks the field)."""
    if not match:
        return None
    value = _path(event, match)
    if value is _MISSING:
        return None
    digest = hashlib.blake2b(dumps(value).encode(), digest_size=10).hexdigest()
    return f"{match}={digest}"


@functools.lru_cache(maxsize=512)
def _wait_expr(source: str) -> Any:
    from .expr import compile_expression

    try:
        return compile_expression(source, variables=("event", "async"))
    except ValueError:
        return None


def wait_matches(spec: Mapping[str, Any], trigger: Mapping[str, Any], candidate: Mapping[str, Any]) -> bool:
    """Whether ``candidate`` satisfies a wait's ``match`` and ``if_exp`` (never raises)."""
    match = spec.get("match")
    if match:
        mine = _path(trigger, match)
        if mine is _MISSING or mine != _path(candidate, match):
            return False
    expr = spec.get("if_exp")
    if expr:
        compiled = _wait_expr(expr)
        if compiled is None:
            return False
        return bool(compiled.matches({"event": dict(trigger), "async": dict(candidate)}))
    return True
