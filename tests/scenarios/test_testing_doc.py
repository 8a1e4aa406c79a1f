"""docs/howto/testing.md: every code block runs, and the tests it defines pass."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parents[2] / "docs" / "howto" / "testing.md"
BLOCK = re.compile(r"^```python([^\n]*)\n(.*?)^```", re.S | re.M)


def blocks() -> list[tuple[str, str]]:
    return [(m.group(1).strip(), m.group(2)) for m in BLOCK.finditer(DOC.read_text())]


def test_the_doc_has_runnable_blocks_and_one_marked_sketch() -> None:
    found = blocks()
    assert len([b for info, b in found if "no-run" not in info]) >= 4
    assert [info for info, _ in found if info] == ["no-run"]


def test_every_block_runs_and_its_tests_pass() -> None:
    ns: dict[str, Any] = {"__name__": "testing_doc"}
    ran: list[str] = []
    for info, code in blocks():
        if "no-run" in info:
            compile(code, str(DOC), "exec")  # the sketch still parses
            continue
        ns = dict(ns)  # each block sees the names of the ones before it
        exec(compile(code, str(DOC), "exec"), ns)  # noqa: S102
        for name, value in list(ns.items()):
            if name.startswith("test_") and callable(value) and name not in ran:
                value()
                ran.append(name)
    assert "test_an_approved_order_ships" in ran and "test_welcome" in ran
    defined = sum(len(re.findall(r"^def test_", code, re.M)) for info, code in blocks() if not info)
    assert len(ran) == defined == 9


def test_plain_pytest_finds_proj_with_the_pythonpath_the_doc_gives(tmp_path: Path) -> None:
    """Plain ``pytest`` (not ``python -m pytest``) from a project's root, tests in a
    ``tests/`` folder: without the doc's ``pytest.ini`` it cannot import ``proj``; with it,
    it can."""
    import os
    import subprocess
    import sys

    (ini,) = [m.group(1) for m in re.finditer(r"^```ini\n(# pytest.ini\n.*?)^```",
                                              DOC.read_text(), re.S | re.M)]
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "__init__.py").write_text("ANSWER = 42\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_proj.py").write_text(
        "from proj import ANSWER\n\n\ndef test_answer():\n    assert ANSWER == 42\n")
    exe = Path(sys.executable).parent / "pytest"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def plain_pytest() -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(exe), "-q", "-p", "no:cacheprovider", "tests"], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=120)

    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    without = plain_pytest()
    assert without.returncode != 0 and "No module named 'proj'" in without.stdout, without.stdout
    (tmp_path / "pytest.ini").write_text(ini)
    with_it = plain_pytest()
    assert with_it.returncode == 0 and "1 passed" in with_it.stdout, with_it.stdout
