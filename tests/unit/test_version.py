"""One version: ``pyproject.toml`` holds it, and ``fanout.__version__`` and
``fanout --version`` report the installed distribution's metadata."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest

import fanout
from fanout._cli import main

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_the_version_is_the_installed_distributions() -> None:
    assert fanout.__version__ == importlib.metadata.version("celery-fanout")
    assert fanout.__version__ != "0+unknown"


def test_the_version_is_the_one_written_in_pyproject() -> None:
    # The tree the tests came from: the repository, or an unpacked sdist.
    written = re.search(r'^version\s*=\s*"([^"]+)"', PYPROJECT.read_text(), re.M)
    assert written, "pyproject.toml: no static version line"
    assert fanout.__version__ == written.group(1)


def test_fanout_version_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"fanout {fanout.__version__}\n"
