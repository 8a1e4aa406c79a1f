"""Django for the tests in this directory only.

Settings come from ``tests/django/settings.py`` through ``settings.configure``
(no ``DJANGO_SETTINGS_MODULE`` is left in the environment, so worker
subprocesses of the other test modules never set Django up).

The database is PostgreSQL (``FANOUT_TEST_PG_HOST`` etc., default
127.0.0.1:5432, user postgres).  The test runner creates
``test_fanout_django_<pid>`` (one per pytest session, so sessions running at
the same time never share or drop each other's database) and drops it at the
end; databases left by killed sessions are dropped by the next session.  Only when PostgreSQL cannot be reached (or psycopg is
missing) do the tests fall back to SQLite, and they say so: a warning, a line
in the session header and one in the summary.  ``FANOUT_TEST_DJANGO_DB=sqlite``
or ``=postgresql`` forces the choice (forcing PostgreSQL makes an unreachable
server an error instead of a fallback).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests import support

HAVE_DJANGO = importlib.util.find_spec("django") is not None
HAVE_PYTEST_DJANGO = importlib.util.find_spec("pytest_django") is not None
WORKER_MODULE = "tests.django.testproj"
REDIS_MODULE = "tests.django"

_state: dict[str, Any] = {"backend": None, "why": "", "tmp": None}


class SQLiteFallbackWarning(UserWarning):
    """The Django tests run on SQLite because PostgreSQL is unavailable."""


def _pg_params() -> dict[str, Any]:
    return {
        "host": os.environ.get("FANOUT_TEST_PG_HOST", "127.0.0.1"),
        "port": int(os.environ.get("FANOUT_TEST_PG_PORT", "5432")),
        "user": os.environ.get("FANOUT_TEST_PG_USER", "postgres"),
        "password": os.environ.get("FANOUT_TEST_PG_PASSWORD", ""),
    }


PG_TEST_PREFIX = "test_fanout_django_"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _drop_stale_pg_databases() -> None:
    """Drop test databases of sessions that died before their teardown."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(dbname="postgres", autocommit=True, connect_timeout=3, **_pg_params()) as conn:
        names = [
            row[0]
            for row in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s",
                (PG_TEST_PREFIX.replace("_", r"\_") + "%",),
            )
        ]
        for name in names:
            suffix = name[len(PG_TEST_PREFIX) :]
            if not suffix.isdigit() or _pid_alive(int(suffix)):
                continue
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)
            ).fetchone()
            if row is None or row[0] == 0:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def _choose_backend() -> tuple[str, str]:
    forced = os.environ.get("FANOUT_TEST_DJANGO_DB", "").strip().lower()
    if forced == "sqlite":
        return "sqlite", "FANOUT_TEST_DJANGO_DB=sqlite"
    params = _pg_params()
    where = f"{params['host']}:{params['port']}"
    try:
        import psycopg
    except ImportError:
        why = "psycopg is not installed (pip install 'psycopg[binary]')"
    else:
        try:
            psycopg.connect(dbname="postgres", connect_timeout=3, **params).close()
            return "postgresql", f"PostgreSQL at {where}"
        except psycopg.Error as exc:
            why = f"PostgreSQL at {where} is unreachable: {str(exc).strip()}"
    if forced == "postgresql":
        raise pytest.UsageError(f"FANOUT_TEST_DJANGO_DB=postgresql, but {why}")
    return "sqlite", why


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    """Configure Django once the Redis for the tests is known (tests/conftest.py)."""
    if not HAVE_DJANGO or _state["backend"] is not None:
        return
    backend, why = _choose_backend()
    _state["backend"], _state["why"] = backend, why
    os.environ["FANOUT_DJANGO_TEST_DB"] = backend
    if backend == "postgresql":
        os.environ["FANOUT_DJANGO_PG_TEST_NAME"] = f"{PG_TEST_PREFIX}{os.getpid()}"
        _drop_stale_pg_databases()
    if backend == "sqlite":
        _state["tmp"] = tempfile.mkdtemp(prefix="fanout-django-sqlite-")
        os.environ["FANOUT_DJANGO_SQLITE_DIR"] = _state["tmp"]
        config.issue_config_time_warning(
            SQLiteFallbackWarning(
                f"fanout.django tests are running on SQLITE, not PostgreSQL: {why} "
                "(SKIP LOCKED is not exercised)"
            ),
            stacklevel=2,
        )

    import django
    from django.conf import settings

    module = importlib.import_module("tests.django.settings")
    values = {k: getattr(module, k) for k in dir(module) if k.isupper()}
    previous = os.environ.get("DJANGO_SETTINGS_MODULE")
    if not settings.configured:
        settings.configure(**values)
    django.setup()  # imports testproj.celery, which sets DJANGO_SETTINGS_MODULE ...
    if previous is None:  # ... which must not leak into other tests' worker processes
        os.environ.pop("DJANGO_SETTINGS_MODULE", None)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _state["tmp"]:
        shutil.rmtree(_state["tmp"], ignore_errors=True)


def pytest_report_header(config: pytest.Config) -> list[str]:
    if not HAVE_DJANGO:
        return ["fanout.django tests: SKIPPED, Django is not installed"]
    if _state["backend"] == "sqlite":
        return [f"fanout.django tests: WARNING: database SQLITE (fallback): {_state['why']}"]
    return [f"fanout.django tests: database {_state['why']}"]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _state["backend"] == "sqlite":
        terminalreporter.write_sep(
            "!", f"fanout.django tests ran on SQLITE, not PostgreSQL: {_state['why']}", yellow=True
        )


@pytest.fixture(autouse=True)
def _needs_pytest_django() -> None:
    if not HAVE_PYTEST_DJANGO:
        pytest.fail("the Django tests need pytest-django: pip install pytest-django")


@pytest.fixture(scope="session")
def db_backend() -> str:
    return str(_state["backend"])


@pytest.fixture(scope="module")
def fanout_redis() -> redis.Redis:
    """The Django tests' Redis database, flushed before each module."""
    r = support.redis_for(REDIS_MODULE)
    r.flushdb()
    return r


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a process that should use this session's test database."""
    from django.db import connection

    return {
        "DJANGO_SETTINGS_MODULE": "tests.django.settings",
        "FANOUT_DJANGO_DB_NAME": str(connection.settings_dict["NAME"]),
        **extra,
    }


@pytest.fixture(scope="module")
def django_worker(
    request: pytest.FixtureRequest,
    django_db_setup: None,
    django_db_blocker: Any,
    fanout_redis: redis.Redis,
    log_dir: Path,
) -> Iterator[support.Worker]:
    """A real `celery -A tests.django.testproj worker` on the test database."""
    with django_db_blocker.unblock():
        env = subprocess_env()
    w = support.Worker(WORKER_MODULE, log_dir=log_dir, env=env)
    yield w
    w.stop()
    if request.session.testsfailed:
        print(f"\n--- worker log {w.log_path} (tail) ---\n{w.log()[-4000:]}")
