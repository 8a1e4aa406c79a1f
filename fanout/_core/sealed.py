"""Encrypted values that reach a handler still encrypted.

``fanout.encryption`` stores an encrypted value as ``{"__fanout_encrypted__":
"fernet", "data": TOKEN}`` and its middleware opens it before the handler runs. A
worker without that middleware (or whose middleware does not open this field) would
hand the handler the envelope, and the user's code would fail far from the cause
(``KeyError: 'card'``). :func:`still_sealed` finds such a value, so the pass fails at
once with a :class:`~fanout.DecryptionError` that names the middleware.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

MARKER = "__fanout_encrypted__"


def is_sealed(value: Any) -> bool:
    return isinstance(value, Mapping) and value.get(MARKER) == "fernet" and "data" in value


def _event_data(event: Any) -> Any:
    return event.get("data") if isinstance(event, Mapping) else getattr(event, "data", None)


def _sealed_field(event: Any) -> str | None:
    data = _event_data(event)
    if isinstance(data, Mapping):
        for k, v in data.items():
            if is_sealed(v):
                return str(k)
    return None


def still_sealed(events: Iterable[Any], memo: Mapping[str, Any]) -> str | None:
    """Where an encrypted value is left unopened (``None``: nowhere): the events a
    handler sees, and the memoized step outputs (and a received event's data)."""
    for i, ev in enumerate(events):
        field = _sealed_field(ev)
        if field is not None:
            return (f"data[{field!r}] of the triggering event" if i == 0
                    else f"data[{field!r}] of event {i} of the batch")
    for step_id, rec in memo.items():
        out = getattr(rec, "output", None)
        if is_sealed(out):
            return f"the output of step {step_id!r}"
        field = _sealed_field(out) if getattr(rec, "kind", "") in ("wait", "wait_for_event") \
            else None
        if field is not None:
            return f"data[{field!r}] of the event step {step_id!r} received"
    return None


def sealed_message(where: str) -> str:
    return (
        f"{where} is encrypted (fanout.encryption), and this worker has no "
        "EncryptionMiddleware to decrypt it: add "
        "middleware=[EncryptionMiddleware.factory(key)] to the client the worker imports"
    )


__all__ = ["MARKER", "is_sealed", "sealed_message", "still_sealed"]
