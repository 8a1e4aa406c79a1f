"""A private PostgreSQL database for the history store's tests.

The machine's server (``FANOUT_TEST_PG``, default ``postgresql://127.0.0.1:5432``;
trust auth) gets a database ``fanout_test_<pid>`` per test session, dropped after.
The tests skip with the reason when psycopg or the server is missing, except when
``FANOUT_TEST_REQUIRE_POSTGRES=1`` (set by ``.ci/run`` for the main suite, whose venv has
the ``postgres`` extra), where they must run. The release lane and the version matrix
install fanout without that extra, as a user who does not want PostgreSQL would, and
there these tests skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

SERVER = os.environ.get("FANOUT_TEST_PG", "postgresql://127.0.0.1:5432")
ENV = "FANOUT_TEST_PG_HISTORY"


def _unavailable() -> str | None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'celery-fanout[postgres]')"
    exe = shutil.which("pg_isready")
    if exe is not None:
        host_port = SERVER.split("//", 1)[1].split("/", 1)[0]
        host, _, port = host_port.rpartition(":")
        rc = subprocess.run([exe, "-h", host.split("@")[-1] or "127.0.0.1", "-p", port or "5432"],
                            capture_output=True).returncode
        if rc != 0:
            return f"no PostgreSQL server accepts connections at {SERVER} (pg_isready)"
    return None


def require_postgres() -> None:
    """Skip the module when PostgreSQL cannot be used, unless the run requires it."""
    why = _unavailable()
    if why is None:
        return
    if os.environ.get("FANOUT_TEST_REQUIRE_POSTGRES") == "1":
        raise RuntimeError(f"the history store's tests must run here "
                           f"(FANOUT_TEST_REQUIRE_POSTGRES=1): {why}")
    pytest.skip(why, allow_module_level=True)


def admin() -> Any:
    import psycopg

    return psycopg.connect(f"{SERVER}/postgres", autocommit=True)


def database_url() -> str:
    """This session's database (created once; the URL is passed on to the workers the
    tests start through the environment)."""
    url = os.environ.get(ENV)
    if url:
        return url
    url = f"{SERVER}/fanout_test_{os.getpid()}"
    create_database(url)
    os.environ[ENV] = url
    return url


def create_database(url: str) -> None:
    """The database of ``url``, new and empty (dropped first if it was there)."""
    name = url.rsplit("/", 1)[1]
    with admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')


@contextlib.contextmanager
def private_database(url: str) -> Iterator[None]:
    """A module's own database at ``url``: created empty, dropped on the way out."""
    create_database(url)
    try:
        yield
    finally:
        drop_database(url)


def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with admin() as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def set_connections(url: str, allowed: bool) -> None:
    """Close the database to every connection (and end those open), or open it again:
    a PostgreSQL outage for whoever uses it, the shared server left running."""
    name = url.rsplit("/", 1)[1]
    with admin() as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"true" if allowed else "false"}')
        if not allowed:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))


def run_ids(url: str) -> list[str]:
    """The run ids in the database's ``fanout_runs`` (none before the table exists), one
    per row: a run copied twice would be listed twice if it were two rows."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT to_regclass('fanout_runs') IS NOT NULL").fetchone()
        if not row or not row[0]:
            return []
        return [str(x[0]) for x in conn.execute("SELECT run_id FROM fanout_runs").fetchall()]


def admin_of(url: str) -> Any:
    """A connection (autocommit) to the database at ``url``."""
    import psycopg

    return psycopg.connect(url, autocommit=True)
