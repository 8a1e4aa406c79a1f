"""The step tools are typed by their handlers (mypy --strict on two sample files).

``typing_samples/good.py`` holds the right spellings (``ctx: fanout.ContextSync`` in a
``def`` handler, ``ctx: fanout.Context`` in an ``async def`` one, step arguments that
fit the step's handler): it must type-check, and each ``reveal_type`` must show the
type written after ``# R:``.  ``typing_samples/bad.py`` holds the wrong ones (``await``
in a ``def`` handler, a ``def`` handler taking ``fanout.Context``, an ``async def`` one
taking ``fanout.ContextSync``, a step called with arguments its handler does not take,
a step's result used as the wrong type): it must fail exactly on the lines marked
``# E:``, each with that message.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

api = pytest.importorskip("mypy.api")

SAMPLES = Path(__file__).parent / "typing_samples"
ROOT = Path(__file__).resolve().parents[2]


def _mypy(path: Path) -> tuple[str, int]:
    out, err, status = api.run([
        "--strict", "--no-error-summary", "--hide-error-context", "--show-error-codes",
        "--no-incremental", "--config-file", str(ROOT / "pyproject.toml"), str(path),
    ])
    return out + err, status


def _marked(path: Path, mark: str) -> dict[int, str]:
    found = {}
    for no, line in enumerate(path.read_text().splitlines(), 1):
        m = re.search(rf"# {mark}: (.+)$", line)
        if m:
            found[no] = m.group(1).strip()
    return found


def _messages(output: str, path: Path) -> dict[int, list[tuple[str, str]]]:
    by_line: dict[int, list[tuple[str, str]]] = {}
    for line in output.splitlines():
        m = re.match(rf".*{re.escape(path.name)}:(\d+): (\w+): (.+)$", line)
        if m:
            by_line.setdefault(int(m.group(1)), []).append((m.group(2), m.group(3)))
    return by_line


def test_typed_step_tools_check_and_reveal_the_handlers_types() -> None:
    path = SAMPLES / "good.py"
    output, _status = _mypy(path)
    got = _messages(output, path)
    errors = [(no, msg) for no, items in got.items() for kind, msg in items if kind == "error"]
    assert errors == [], output
    expected = _marked(path, "R")
    assert expected, "the sample has no reveal_type checks"
    for no, want in expected.items():
        # Older mypy versions spell builtins out: compare without the prefix.
        notes = [msg.replace("builtins.", "") for kind, msg in got.get(no, []) if kind == "note"]
        assert f'Revealed type is "{want}"' in notes, (no, notes, output)


def test_mistyped_steps_and_a_mismatched_context_do_not_type_check() -> None:
    path = SAMPLES / "bad.py"
    output, status = _mypy(path)
    assert status != 0, output
    got = _messages(output, path)
    expected = _marked(path, "E")
    errors = {no: [msg for kind, msg in items if kind == "error"] for no, items in got.items()}
    assert sorted(no for no, msgs in errors.items() if msgs) == sorted(expected), output
    for no, want in expected.items():
        assert any(msg.startswith(want) for msg in errors[no]), (no, errors[no])
