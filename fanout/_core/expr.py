"""Pure CEL expression wrapper (trigger filters, ``if_exp``, keys, priorities).

Uses cel-python's *interpreted* runner only (its ``CompiledRunner`` would ``exec``).

* Parsed and checked once. Identifiers are checked *statically* on the syntax tree:
  a name that is not a declared variable, a comprehension variable
  (``list.exists(x, ...)``) or a CEL type name (``int``...) is an error, and so are
  unknown function/method names. No trial evaluation.
* ``async`` is an ordinary identifier in cel-python's grammar: no rewriting needed.
* Activations are JSON-like. Ints outside int64 and unsupported values become CEL
  *error values*: only an expression that actually uses one fails.
* A filter that cannot be evaluated (missing field, type mismatch...) does not match.
"""

from __future__ import annotations

import base64
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import celpy
import lark
from celpy import celtypes
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError, base_functions

from .._errors import ExpressionError

__all__ = ["MAX_SOURCE_LENGTH", "Expression", "ExpressionError", "compile_expression"]

MAX_SOURCE_LENGTH = 4096
#: Max syntax-tree depth: ~23 nested parentheses, ~150 ``||`` terms. Needs at most
#: ~1300 frames in celpy's recursive evaluator (recursion limit is raised to 2500).
MAX_DEPTH = 250
_RECURSION_FLOOR = 2500

_IDENT = re.compile(r"[_a-zA-Z][_a-zA-Z0-9]*\Z")
_KEYWORDS = frozenset({"true", "false", "null", "in"})  # other reserved words fail to parse
_FUNCTIONS = frozenset(name for name in base_functions if _IDENT.match(name))
_CALLABLE = _FUNCTIONS | {"has", "dyn"}
# Macro name -> number of leading variable-name arguments it binds.
_MACROS = dict(map=1, filter=1, all=1, exists=1, exists_one=1, reduce=2, min=0)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _make_environment() -> celpy.Environment:
    # celpy.Environment() sets the recursion limit to exactly 2500 (its evaluator is
    # recursive, ~4.5 frames per tree level). Keep that floor but never lower it.
    limit = sys.getrecursionlimit()
    env = celpy.Environment()  # InterpretedRunner: no eval/exec
    sys.setrecursionlimit(max(limit, _RECURSION_FLOOR))
    env.annotations = {}  # drop protobuf well-known types: ~10% faster activations
    return env


_ENV = _make_environment()



class _Unsupported(Exception):
    """A value that cannot cross the Python/CEL boundary (wrapped in ExpressionError)."""


def _shorten(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class Expression:
    """A compiled CEL expression. Compiles (and validates) once, at construction."""

    source: str
    variables: tuple[str, ...] = ("event",)
    what: str = field(default="expression", compare=False)
    _program: celpy.Runner = field(init=False, repr=False, compare=False)
    _used: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "variables", tuple(self.variables))
        for name in self.variables:
            if not isinstance(name, str) or not _IDENT.match(name) or name in _KEYWORDS:
                raise ExpressionError(f"invalid variable name {name!r} for {self._label}")
        if not isinstance(self.source, str):
            raise self._invalid(f"expected a string, got {type(self.source).__name__}")
        if not self.source.strip():
            raise self._invalid("the expression is empty")
        if len(self.source) > MAX_SOURCE_LENGTH:
            raise self._invalid(
                f"too long ({len(self.source)} characters, maximum {MAX_SOURCE_LENGTH})"
            )
        try:
            tree = _ENV.compile(self.source)
        except CELParseError as exc:
            raise self._invalid(_syntax_problem(exc)) from None
        except Exception as exc:  # defensive: lark internals
            raise self._invalid(f"cannot parse: {exc}") from exc
        problem, used = _check(tree, frozenset(self.variables))
        if problem is not None:
            raise self._invalid(problem)
        object.__setattr__(self, "_program", _ENV.program(tree))
        object.__setattr__(self, "_used", used)

    @property
    def _label(self) -> str:
        return "expression" if self.what == "expression" else f"expression for {self.what}"

    def _invalid(self, problem: str) -> ExpressionError:
        shown = f" {_shorten(self.source)!r}" if isinstance(self.source, str) else ""
        return ExpressionError(f"invalid {self._label}{shown}: {problem}")

    def _failed(self, problem: str) -> ExpressionError:
        return ExpressionError(
            f"cannot evaluate {self._label} {_shorten(self.source)!r}: {problem}"
        )

    def evaluate(self, activation: Mapping[str, Any]) -> Any:
        """Evaluate against JSON-like variable values; return a plain Python value.

        Raises :class:`ExpressionError` (and nothing else) when evaluation fails.
        """
        if not isinstance(activation, Mapping):
            raise self._failed(f"activation must be a mapping, got {type(activation).__name__}")
        try:
            context: dict[str, Any] = {}
            for name in self._used:
                if name not in activation:
                    raise _Unsupported(f"variable {name!r} was not provided")
                context[name] = _to_cel(activation[name])
            return _from_cel(self._program.evaluate(context))
        except _Unsupported as exc:
            raise self._failed(str(exc)) from None
        except CELEvalError as exc:
            raise self._failed(_eval_problem(exc)) from exc
        except RecursionError:
            raise self._failed("value or expression nested too deeply") from None
        except Exception as exc:  # celpy may leak TypeError, ValueError...
            raise self._failed(f"{type(exc).__name__}: {_shorten(str(exc))}") from exc

    def matches(self, activation: Mapping[str, Any]) -> bool:
        """True only if the result is boolean ``true``; any failure is ``False``."""
        try:
            return self.evaluate(activation) is True
        except ExpressionError:
            return False

    def key(self, activation: Mapping[str, Any]) -> str | None:
        """The result as a stable string key, or ``None`` if evaluation fails.

        Strings are returned as-is; everything else (numbers, booleans, ``null``, lists,
        maps) as compact JSON with sorted keys, e.g. ``42``, ``true``, ``{"a":1}``.
        """
        try:
            value = self.evaluate(activation)
        except ExpressionError:
            return None
        if isinstance(value, str):
            return value
        try:
            canonical = _json_keys(value)
            return json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        except (RecursionError, ValueError):  # absurdly deep values
            return None

    def number(self, activation: Mapping[str, Any]) -> float | None:
        """The result as a float; ``None`` on failure or for non-numbers, bools, NaN, inf."""
        try:
            value = self.evaluate(activation)
        except ExpressionError:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        result = float(value)
        return result if math.isfinite(result) else None


def compile_expression(
    source: str, *, variables: Sequence[str] = ("event",), what: str = "expression"
) -> Expression:
    """Compile ``source`` once; raise :class:`ExpressionError` if it is not usable.

    ``what`` names the use in error messages (e.g. ``"trigger"`` gives
    ``invalid expression for trigger 'event.data.x >': syntax error at column 14...``).
    """
    if isinstance(variables, str):
        variables = (variables,)
    return Expression(source, tuple(variables), what)


def _syntax_problem(exc: CELParseError) -> str:
    where = f"column {exc.column}"
    if exc.line not in (None, 1):
        where = f"line {exc.line}, {where}"
    cause = exc.__context__
    token = getattr(cause, "token", None)
    if isinstance(token, lark.Token):
        near = "end of expression" if token.type == "$END" else repr(str(token))
        return f"syntax error at {where}: unexpected {near}"
    char = getattr(cause, "char", None)
    if isinstance(char, str):
        return f"syntax error at {where}: unexpected character {char!r}"
    return f"syntax error at {where}"


def _eval_problem(exc: CELEvalError) -> str:
    message = str(exc.args[0]) if exc.args else "evaluation error"
    message = message.split(" (in activation", 1)[0]  # celpy dumps the whole activation
    message = _shorten(message, 200)
    return message if exc.column is None else f"{message} (at column {exc.column})"


def _bare_ident(tree: lark.Tree[Any]) -> str | None:
    """``x`` if ``tree`` is just the identifier ``x`` (a comprehension variable)."""
    node: Any = tree
    while isinstance(node, lark.Tree) and node.data != "ident" and len(node.children) == 1:
        node = node.children[0]
    if isinstance(node, lark.Tree) and node.data == "ident":
        return str(node.children[0])
    return None


def _check(tree: lark.Tree[Any], variables: frozenset[str]) -> tuple[str | None, tuple[str, ...]]:
    """Statically check identifiers and nesting. Returns (problem, variables used)."""
    used: set[str] = set()
    stack: list[tuple[lark.Tree[Any], frozenset[str], int]] = [(tree, frozenset(), 1)]
    while stack:
        node, bound, depth = stack.pop()
        if depth > MAX_DEPTH:
            return "the expression is nested too deeply", ()
        kind, kids = node.data, node.children
        column = getattr(node.meta, "column", "?")
        if kind in ("ident", "dot_ident"):
            name = str(kids[0])
            if name in variables and name not in bound:
                used.add(name)
            elif name not in bound and name not in _FUNCTIONS:
                declared = ", ".join(sorted(variables)) or "none"
                return (
                    f"undeclared variable {name!r} at column {column} (available: {declared})"
                ), ()
            continue
        if kind == "dot_ident_arg":
            return f"unsupported syntax '.{kids[0]}(...)' at column {column}", ()
        if kind == "ident_arg" and str(kids[0]) not in _CALLABLE:
            return f"unknown function {str(kids[0])!r} at column {column}", ()
        if kind == "member_dot_arg":
            method = str(kids[1])
            args = [c for c in kids[2].children] if len(kids) > 2 else []
            if method in _MACROS:
                count = _MACROS[method]
                names = [_bare_ident(a) for a in args[:count]]
                if len(args) < count or any(n is None for n in names):
                    return (
                        f"{method}() at column {column} needs {count} variable name(s) first"
                    ), ()
                inner = bound | {n for n in names if n is not None}
                stack.append((kids[0], bound, depth + 1))
                stack.extend((a, inner, depth + 1) for a in args[count:])
                continue
            if method not in _FUNCTIONS:
                return f"unknown method {method!r} at column {column}", ()
        stack.extend((c, bound, depth + 1) for c in kids if isinstance(c, lark.Tree))
    return None, tuple(sorted(used))


def _to_cel(value: Any) -> Any:
    """JSON-like Python -> CEL. Unusable values become CEL error values (lazy errors)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            return celtypes.IntType(value)
        return CELEvalError(f"integer {_shorten(str(value), 40)} is out of the 64-bit range")
    if isinstance(value, float):
        return celtypes.DoubleType(value)
    if isinstance(value, str):
        return celtypes.StringType(value)
    if isinstance(value, Mapping):
        items = {}
        for key, item in value.items():
            cel_key = _to_cel(key)
            if not isinstance(cel_key, str | int):  # None, float, huge int, ...
                raise _Unsupported(f"unsupported map key {_shorten(repr(key), 40)}")
            items[cel_key] = _to_cel(item)
        return celtypes.MapType(items)
    if isinstance(value, list | tuple):
        return celtypes.ListType([_to_cel(item) for item in value])
    return CELEvalError(f"unsupported value of type {type(value).__name__}")


def _from_cel(value: Any) -> Any:
    """CEL -> plain Python (bool/int/float/str/list/dict/None)."""
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, celtypes.BoolType):
        return bool(value)
    if isinstance(value, int):  # IntType, UintType
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, celtypes.MapType):
        return {_from_cel(k): _from_cel(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_cel(item) for item in value]
    if isinstance(value, celtypes.TimestampType | celtypes.DurationType):
        return str(value)  # celpy renders RFC 3339 timestamps and "90s" durations
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")  # as celpy's JSON encoder does
    if isinstance(value, CELEvalError):
        raise value
    raise _Unsupported(f"unsupported result of type {type(value).__name__}")


def _json_keys(value: Any) -> Any:
    """Make map keys strings so that ``sort_keys`` never compares mixed types."""
    if isinstance(value, dict):
        return {k if isinstance(k, str) else json.dumps(k): _json_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_keys(item) for item in value]
    return value
