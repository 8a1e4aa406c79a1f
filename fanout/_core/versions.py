"""Which code a run ran on: function versions, patch markers and versioning warnings.

Pure: the run-hash fields (named in ``run_record.py``) are computed here and written
by the adapter.

* ``v``  the function version when the run was created (``version=`` on
  ``create_function``, else a fingerprint of the handler's source);
* ``vs`` JSON list of the versions its passes ran on, in order, consecutive repeats
  collapsed (absent until a pass runs on a version other than ``v``);
* ``mk`` JSON list of the patch markers the function declared when the run was
  created (absent: none, which is also what a run created before markers existed sees);
* ``vw`` JSON list of versioning warnings (order changed, steps no longer reached),
  each recorded once per run;
* ``vdv`` JSON ``{"n": ..., "gone": [...]}``: the guard against nondeterministic step
  ids. ``n`` counts the passes in a row that met a new step while steps saved by
  earlier passes went unreached (and were not unreached before); ``gone`` the saved
  steps passes of the run left unreached (the newest 64).  A deploy changes the steps once (one such
  pass); an id built from the time or a random value changes them on every pass.

See ``docs/concepts/versioning.md``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .._errors import ConfigError
from .run_record import DIVERGENCE, MARKERS, VERSION, VERSION_WARNINGS, VERSIONS

MAX_VERSION_HISTORY = 32
MAX_WARNINGS = 16
#: The pass that would be the third in a row to meet a new step while steps saved by
#: the passes before it go unreached fails the run with NonDeterminismError, before
#: its new step runs (docs/concepts/versioning.md, "Nondeterministic step ids").
DIVERGENT_PASSES = 3
MAX_GONE = 64
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+/-]{0,63}$")
_MARKER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$")


def fingerprint(handler: Callable[..., Any]) -> str:
    """``src-`` and 12 hex digits of a hash of the handler's source (its code object
    when the source cannot be read)."""
    try:
        text = inspect.getsource(handler).encode()
    except (OSError, TypeError):
        code = getattr(handler, "__code__", None)
        if code is None:
            code = getattr(getattr(handler, "__call__", None), "__code__", None)  # noqa: B004
        text = repr(code and (code.co_code, code.co_consts, code.co_names)).encode()
    return "src-" + hashlib.blake2b(text, digest_size=6).hexdigest()


def check_version(fn_id: str, value: object, handler: Callable[..., Any]) -> str:
    if value is None:
        return fingerprint(handler)
    if not isinstance(value, str) or not _VERSION.match(value):
        raise ConfigError(
            f"function {fn_id!r}: version must be 1 to 64 characters from letters, digits "
            f"and '_ . : + / -' (for example '2024-06-01' or 'v7'), not {value!r}"
        )
    return value


def check_patches(fn_id: str, value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigError(
            f"function {fn_id!r}: patches must be a list of marker names, for example "
            f"patches=['new-pricing'], not {value!r}"
        )
    out: list[str] = []
    for m in value:
        if not isinstance(m, str) or not _MARKER.match(m):
            raise ConfigError(
                f"function {fn_id!r}: patch marker {m!r} must be 1 to 128 characters from "
                "letters, digits and '_ . : / -'"
            )
        if m not in out:
            out.append(m)
    return tuple(out)


def creation_fields(version: str, patches: Iterable[str]) -> dict[str, str]:
    """The fields a new run records about the code it was created on."""
    fields = {VERSION: version}
    markers = list(patches)
    if markers:
        fields[MARKERS] = json.dumps(markers, separators=(",", ":"))
    return fields


def _json_list(raw: str | None) -> list[Any]:
    if not raw:
        return []
    try:
        value = json.loads(raw)
    except ValueError:
        return []
    return value if isinstance(value, list) else []


def versions_of(fields: Mapping[str, str]) -> list[str]:
    """The versions a run's passes ran on, in order (the creation version first)."""
    seen = [str(v) for v in _json_list(fields.get(VERSIONS))]
    if seen:
        return seen
    return [fields[VERSION]] if fields.get(VERSION) else []


def markers_of(fields: Mapping[str, str]) -> frozenset[str]:
    return frozenset(str(m) for m in _json_list(fields.get(MARKERS)))


def warnings_of(fields: Mapping[str, str]) -> list[dict[str, Any]]:
    return [w for w in _json_list(fields.get(VERSION_WARNINGS)) if isinstance(w, dict)]


def crossed_deploy(fields: Mapping[str, str]) -> bool:
    """Whether passes of the run ran on more than one version."""
    return len(set(versions_of(fields))) > 1


def _divergence(fields: Mapping[str, str]) -> tuple[int, list[str]]:
    raw = fields.get(DIVERGENCE)
    if not raw:
        return 0, []
    try:
        value = json.loads(raw)
        return int(value.get("n", 0)), [str(s) for s in value.get("gone", [])]
    except (ValueError, TypeError, AttributeError):
        return 0, []


def divergence_of(fields: Mapping[str, str]) -> tuple[int, frozenset[str]]:
    """The guard's state: (divergent passes in a row, the saved steps some pass of the
    run left unreached: they count once)."""
    n, gone = _divergence(fields)
    return n, frozenset(gone)


def divergence_fields(fields: Mapping[str, str], divergent: bool,
                      unreached: Iterable[str]) -> dict[str, str]:
    """What a pass writes for the guard: the count goes up on a divergent pass and back
    to 0 on any other; the steps it left unreached join ``gone`` (the newest
    ``MAX_GONE`` are kept), so that passes alternating between two versions during a
    rolling deploy, each leaving the other's step unreached, count once. Nothing is
    written when nothing changed."""
    n, gone = _divergence(fields)
    new_n = n + 1 if divergent else 0
    known = set(gone)
    new_gone = (gone + sorted(s for s in set(unreached) if s not in known))[-MAX_GONE:]
    if new_n == n and new_gone == gone:
        return {}
    return {DIVERGENCE: json.dumps({"n": new_n, "gone": new_gone}, separators=(",", ":"))}


def divergence_message(step_id: str, fresh: Iterable[str], passes: int) -> str:
    """The NonDeterminismError of the guard."""
    return (
        f"the handler reached the new step {step_id!r} while the step(s) "
        f"{sorted(fresh)!r} saved by the previous pass went unreached, {passes} passes in "
        "a row: the step ids change on every pass, so they depend on something "
        "that differs between passes (the time, a random value, a dict read outside a "
        "step). Make step ids fixed strings (or build them from the event or from step "
        "outputs); see docs/concepts/versioning.md"
    )


def strict_hint() -> str:
    """The end of a strict-mode NonDeterminismError message."""
    return (" (a step renamed, reordered or removed by a deploy); strict mode fails the "
            "run; see docs/concepts/versioning.md")


def pass_fields(
    version: str, fields: Mapping[str, str], warnings: list[dict[str, Any]]
) -> dict[str, str]:
    """What a pass on ``version`` adds to the run hash (nothing in the common case: the
    same version as the last pass, no new warning)."""
    out: dict[str, str] = {}
    seen = versions_of(fields)
    if not seen or seen[-1] != version:
        seen = [*seen, version][-MAX_VERSION_HISTORY:]
        if fields.get(VERSION) and seen[0] != fields[VERSION] and len(seen) == MAX_VERSION_HISTORY:
            seen[0] = fields[VERSION]  # the creation version always stays first
        out[VERSIONS] = json.dumps(seen, separators=(",", ":"))
    if warnings:
        known = warnings_of(fields)
        kinds = {w.get("kind") for w in known}
        fresh = [w for w in warnings if w.get("kind") not in kinds]
        if fresh:
            out[VERSION_WARNINGS] = json.dumps([*known, *fresh][:MAX_WARNINGS], separators=(",", ":"))
    return out


def warned_kinds(fields: Mapping[str, str]) -> frozenset[str]:
    return frozenset(str(w.get("kind")) for w in warnings_of(fields))


def report_warning(
    sink: Any, fn_id: str, run_id: str, version: str, kind: str, message: str,
    detail: Mapping[str, Any],
) -> None:
    """Hand a versioning warning to the sink (recorded on the run) and log it."""
    entry = {"kind": kind, "message": message, "version": version,
             "at": round(time.time(), 3), **detail}
    report = getattr(sink, "versioning_warning", None)
    if report is not None:
        report(entry)
    logging.getLogger("fanout.versioning").warning("[%s %s] %s", fn_id, run_id, message)
