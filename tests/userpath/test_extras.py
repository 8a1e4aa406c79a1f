"""Each extra of the wheel, in a fresh venv of its own: before it is installed the
feature fails with one line naming the extra to install; after
``pip install 'celery-fanout[extra]'`` (from the wheel) the same code works."""

from __future__ import annotations

import tempfile
import venv
from pathlib import Path

import pytest

from tests.userpath.conftest import UserVenv

pytestmark = pytest.mark.userpath

PROBES = {
    "embedded": "import fanout.embedded as e; assert e.memory_redis('memory://x').ping()",
    "otel": "import fanout.tracing; print(fanout.tracing.is_instrumented())",
    "encryption": "from fanout.encryption import generate_key; assert len(generate_key()) == 44",
    "metrics": ("import celery, fanout, fanout.metrics as m; app = celery.Celery('x'); "
                "c = fanout.Fanout('x', celery=app, redis_url='memory://x'); "
                "assert b'fanout' in m.generate(c)[0]"),
    "django": "import fanout.django; print(fanout.django.emit)",
    # The history store: its client needs psycopg (no server: nothing connects here).
    "postgres": ("from fanout._postgres.store import PgHistory; "
                 "assert PgHistory('postgresql://127.0.0.1:1/x').url"),
}


@pytest.fixture(scope="module")
def bare(wheel: Path) -> UserVenv:
    path = Path(tempfile.mkdtemp(prefix="fanout-extras-"))
    venv.EnvBuilder(with_pip=True).create(path)
    v = UserVenv(path)
    v.run("python", "-m", "pip", "install", "-q", str(wheel), timeout=600)
    return v


@pytest.mark.parametrize("extra", list(PROBES))
def test_each_extra_names_itself_then_works(bare: UserVenv, wheel: Path, extra: str) -> None:
    code = PROBES[extra]
    if extra == "metrics":  # the memory:// store of the probe needs the embedded extra
        bare.run("python", "-m", "pip", "install", "-q", f"{wheel}[embedded]", timeout=600)
    before = bare.run("python", "-c", code, check=False)
    assert before.returncode != 0, f"{extra}: worked before its extra was installed"
    assert f"celery-fanout[{extra}]" in before.stderr.strip().splitlines()[-1], before.stderr
    bare.run("python", "-m", "pip", "install", "-q", f"{wheel}[{extra}]", timeout=600)
    after = bare.run("python", "-c", code, check=False)
    assert after.returncode == 0, after.stderr
