"""examples/django_app runs its own tests the way its README says, in a fresh venv
that has only the wheel (with the extras the README names) and what the README
installs, from a copy of the example outside the repository."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
import venv
from pathlib import Path

import pytest

from .conftest import ROOT, UserVenv

pytestmark = pytest.mark.userpath

EXAMPLE = ROOT / "examples" / "django_app"


def _readme_commands() -> tuple[list[str], list[list[str]]]:
    """The README's install line for the Django extra, and its "Run the tests" commands."""
    text = (EXAMPLE / "README.md").read_text()
    (extra,) = re.findall(r'`(pip install "celery-fanout\[django\]")`', text)
    section = text.split("## Run the tests", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "examples/django_app/README.md: no bash block under 'Run the tests'"
    lines = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]
    return shlex.split(extra), [shlex.split(line) for line in lines if line]


def test_the_readme_commands_run_the_examples_tests(wheel: Path) -> None:
    extra, commands = _readme_commands()
    assert commands[-1][:3] == ["python", "-m", "pytest"], commands
    path = Path(tempfile.mkdtemp(prefix="fanout-djangovenv-"))
    project = Path(tempfile.mkdtemp(prefix="fanout-django-example-")) / "django_app"
    try:
        venv.EnvBuilder(with_pip=True).create(path)
        v = UserVenv(path)
        shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns(
            "__pycache__", "*.sqlite3", ".pytest_cache"))

        def from_wheel(args: list[str]) -> list[str]:
            # "celery-fanout[x]" from PyPI is this tree's wheel with the same extras.
            return [re.sub(r"^celery-fanout(\[.*\])?$", lambda m: f"{wheel}{m.group(1) or ''}", a)
                    for a in args]

        v.run("python", "-m", *from_wheel(extra), "-q", timeout=600)
        out = None
        for cmd in commands:
            if cmd[0] == "pip":
                v.run("python", "-m", *from_wheel(cmd), "-q", timeout=600)
            else:
                env = {k: val for k, val in os.environ.items()
                       if not k.startswith(("DJANGO_", "PYTEST_", "FANOUT_", "CELERY_"))
                       and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
                out = subprocess.run([str(v.bin / cmd[0]), *cmd[1:]], cwd=project, env=env,
                                     text=True, capture_output=True, timeout=300,
                                     stdin=subprocess.DEVNULL)
        assert out is not None
        tail = (out.stdout + out.stderr)[-4000:]
        assert out.returncode == 0, tail
        assert re.search(r"\b\d+ passed\b", out.stdout) and "failed" not in out.stdout, tail
        assert "fanout" in v.run("python", "-c", "import fanout; print(fanout.__file__)").stdout
    finally:
        shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(project.parent, ignore_errors=True)
