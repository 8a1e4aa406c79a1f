"""Run-hash field names are written in one place, ``fanout/_core/run_record.py``.

Elsewhere a run's hash is read and written through its constants (``ST``, ``FK``...)
and its helpers (``step_field``...).  The check reads the code: a string literal that
starts like a per-step field (``s:``, ``bl:``, ``wd:``, ``be:``), or a field name used
as a key of a mapping named like a run's hash (``fields``, ``f``, ``head``), is an
offence.  Other mappings (a step record's JSON, an event) keep their own keys.
"""

from __future__ import annotations

import ast
from pathlib import Path

import fanout
from fanout._core import run_record

# The package under test, wherever it is installed (the repository, or a venv).
PACKAGE = Path(fanout.__file__).resolve().parent
NAMES = set(run_record.RunRecord.__annotations__)
PREFIXES = (run_record.STEP_PREFIX, run_record.BRANCH_LEASE_PREFIX,
            run_record.BATCH_EVENT_PREFIX, run_record.WATCHDOG_PREFIX)
HASHES = {"fields", "f", "head", "run_fields", "extra_fields"}


def _key_of(node: ast.AST) -> tuple[str, str] | None:
    """(mapping name, key) of ``m["k"]``, ``m.get("k")`` or ``m.pop("k")``."""
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
        key = node.slice
        base = node.value.id
    elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
          and node.func.attr in ("get", "pop") and isinstance(node.func.value, ast.Name)
          and node.args):
        key, base = node.args[0], node.func.value.id
    else:
        return None
    if isinstance(key, ast.Constant) and isinstance(key.value, str):
        return base, key.value
    return None


def offences(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and node.value.startswith(PREFIXES) and len(node.value) <= 4:
            found.append(f"{node.lineno}: {node.value!r}")
        if isinstance(node, ast.JoinedStr) and node.values and isinstance(
                node.values[0], ast.Constant) and str(node.values[0].value) in PREFIXES:
            found.append(f"{node.lineno}: f{node.values[0].value!r}...")
        hit = _key_of(node)
        if hit is not None and hit[0] in HASHES and hit[1] in NAMES:
            found.append(f"{node.lineno}: {hit[0]}[{hit[1]!r}]")
    return found


def test_run_fields_are_named_only_in_run_record() -> None:
    bad = [f"{path.relative_to(PACKAGE.parent)}:{o}"
           for path in sorted(PACKAGE.rglob("*.py")) if path.name != "run_record.py"
           for o in offences(path.read_text(encoding="utf-8"))]
    assert bad == [], "use the names in fanout/_core/run_record.py:\n" + "\n".join(bad)


def test_the_check_finds_a_literal_field() -> None:
    probe = ('def f(fields, rec):\n    a = fields.get("st")\n    b = fields["fk"]\n'
             '    c = rec.get("st")\n    d = f"s:{x}"\n    return k.startswith("s:")\n')
    lines = {int(o.split(":")[0]) for o in offences(probe)}
    assert lines == {2, 3, 5, 6}  # not line 4: a step record's own JSON
