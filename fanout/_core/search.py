"""Search attributes: the event or output fields a function declares to find its runs by.

``create_function(..., search=["data.user_id", "output.order_id"])`` declares them;
a ``data.`` path is read from the triggering event's ``data`` when the run is created,
an ``output.`` path from the function's return value when the run ends. The run
scripts index each value found (``fanout/_redis/lua/_indexes.lua``) under a key built
from the function, the path and the value's text (:func:`value_part`), so a lookup
such as ``data.user_id=42`` is one exact sorted-set read.

A value's text: a string as it is, an integral number without a fraction (``42``
matches the number 42, 42.0 and the string ``"42"``), a boolean as ``true`` or
``false``; other values (objects, lists, null) and texts longer than 64 bytes are
not indexed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from .._errors import ConfigError
from .ids import key_part

ROOTS = ("data", "output")
MAX_SEARCH_ATTRIBUTES = 10
_PATH = re.compile(r"^(data|output)(\.[A-Za-z0-9_\-]+)+$")
MAX_VALUE_BYTES = 64


def check_search(fn_id: str, search: object) -> tuple[str, ...]:
    """The declared search attribute paths, checked (a ConfigError names the problem)."""
    if search is None:
        return ()
    if isinstance(search, str) or not isinstance(search, Iterable):
        raise ConfigError(
            f"function {fn_id!r}: search must be a list of paths like "
            f"['data.user_id', 'output.order_id'], not {search!r}")
    out: list[str] = []
    for path in search:
        if not isinstance(path, str) or not _PATH.match(path):
            raise ConfigError(
                f"function {fn_id!r}: search attribute {path!r} must be a path under 'data.' "
                "(the event's data) or 'output.' (the return value), keys of letters, digits, "
                "'_' and '-' separated by dots, for example 'data.user_id'")
        if path not in out:
            out.append(path)
    if len(out) > MAX_SEARCH_ATTRIBUTES:
        raise ConfigError(f"function {fn_id!r}: {len(out)} search attributes; the limit is "
                          f"{MAX_SEARCH_ATTRIBUTES}")
    return tuple(out)


def value_text(value: Any) -> str | None:
    """A value's indexed text (the module docstring), or None for a value not indexed."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 2 ** 53:
            return str(int(value))
        return f"{value:.17g}"
    if isinstance(value, str):
        return value
    return None


def value_part(value: Any) -> str | None:
    """A value as the last piece of its index key, as the run scripts write it."""
    raw = value_text(value)
    if raw is None or len(raw.encode("utf-8")) > MAX_VALUE_BYTES:
        return None
    return key_part(raw)


def parse_term(text: str) -> tuple[str, Any]:
    """``data.user_id=42`` -> (``data.user_id``, 42): the value is JSON when it parses,
    else the text as it is."""
    path, sep, raw = text.partition("=")
    path = path.strip()
    if not sep or not _PATH.match(path):
        raise ConfigError(
            f"cannot search for {text!r}: give path=value with a declared search attribute, "
            "for example data.user_id=42 or output.order_id=\"A-1\"")
    raw = raw.strip()
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    if value_part(value) is None:
        raise ConfigError(f"cannot search for {text!r}: the value must be a string, a number "
                          f"or true/false, at most {MAX_VALUE_BYTES} bytes long")
    return path, value


__all__ = ["MAX_SEARCH_ATTRIBUTES", "check_search", "parse_term", "value_part", "value_text"]
