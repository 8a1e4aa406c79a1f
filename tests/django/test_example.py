"""examples/django_app: its own test suite (in-memory store and broker, the
``fanout_worker`` fixture) passes, and its project checks out."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("django", reason="Django is not installed (pip install django)")

from tests.support import ROOT

EXAMPLE = ROOT / "examples" / "django_app"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST_"))}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, *args], cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_example_project_passes_its_own_tests() -> None:
    proc = _run("-m", "pytest", "-q", "-p", "no:cacheprovider")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "2 passed" in proc.stdout


def test_the_example_project_checks_and_has_its_migrations() -> None:
    env_settings = ("--settings", "proj.settings_test")
    check = _run("manage.py", "check", *env_settings)
    assert check.returncode == 0, check.stderr[-3000:]
    missing = _run("manage.py", "makemigrations", "--check", "--dry-run", *env_settings)
    assert missing.returncode == 0, missing.stdout[-3000:] + missing.stderr[-2000:]
