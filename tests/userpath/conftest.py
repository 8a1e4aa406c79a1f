"""The user's path: the wheel built from this tree, installed alone in a fresh venv.

Nothing here imports the repository's ``fanout``: every check runs the venv's own
``python``, ``celery`` and ``fanout`` as subprocesses, from a project directory
that holds only what the docs tell a user to write.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import support

ROOT = support.ROOT


def code_blocks(markdown: Path, lang: str = "python") -> list[str]:
    """The ``lang`` fenced blocks of a markdown file, skipping those marked not to run.

    A block preceded by a line ``<!-- not-run: reason -->`` is not executed.
    """
    text = markdown.read_text()
    blocks = []
    for m in re.finditer(r"(<!-- not-run:[^>]*-->\s*\n)?```" + lang + r"\n(.*?)```", text, re.S):
        if not m.group(1):
            blocks.append(m.group(2))
    return blocks


class UserVenv:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.bin = path / "bin"

    def run(self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        full_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        full_env.update(env or {})
        proc = subprocess.run(
            # Never the repository's directory: its ./fanout would shadow the wheel's.
            [str(self.bin / args[0]), *args[1:]], cwd=cwd or self.path, env=full_env, text=True,
            capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc


@pytest.fixture(scope="session")
def wheel() -> Path:
    out = Path(tempfile.mkdtemp(prefix="fanout-wheel-"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(out), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )
    (built,) = out.glob("celery_fanout-*.whl")
    return built


@pytest.fixture(scope="session")
def user_venv(wheel: Path) -> Iterator[UserVenv]:
    """A fresh venv with only the wheel installed (no extras)."""
    path = Path(tempfile.mkdtemp(prefix="fanout-uservenv-"))
    venv.EnvBuilder(with_pip=True).create(path)
    v = UserVenv(path)
    v.run("python", "-m", "pip", "install", "-q", str(wheel), timeout=600)
    yield v
