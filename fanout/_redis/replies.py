"""Decoding what Redis answers: the one place bytes become text.

redis-py hands back bytes (the store's clients do not decode), and a Lua script's
reply mixes bytes, integers and nested lists.  Every reply is read through these
helpers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def text(value: Any) -> str:
    """A reply value as text: bytes decoded as UTF-8, anything else through ``str``."""
    return value.decode() if isinstance(value, bytes) else str(value)


def text_or_none(value: Any) -> str | None:
    """:func:`text`, keeping a missing value (``None``) as ``None``."""
    return None if value is None else text(value)


def texts(values: Iterable[Any]) -> list[str]:
    return [text(v) for v in values]


def field_map(raw: Mapping[Any, Any]) -> dict[str, str]:
    """An ``HGETALL`` reply as a dict of text."""
    return {text(k): text(v) for k, v in raw.items()}


def pairs(flat: Sequence[Any]) -> dict[str, str]:
    """A flat ``field, value, field, value`` list (a script returning ``HGETALL``)."""
    it = iter(flat)
    return {text(k): text(v) for k, v in zip(it, it, strict=True)}


def flatten(fields: Mapping[str, Any]) -> list[Any]:
    """A mapping as the ``field, value, ...`` arguments a script takes."""
    flat: list[Any] = []
    for k, v in fields.items():
        flat.extend((k, v))
    return flat
