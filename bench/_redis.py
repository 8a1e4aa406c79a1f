"""A private redis-server for the bench scripts (or FANOUT_BENCH_REDIS_URL)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def bench_redis() -> Iterator[str]:
    url = os.environ.get("FANOUT_BENCH_REDIS_URL")
    if url:
        yield url
        return
    from tests.conftest import start_redis_server

    proc, port, tmp = start_redis_server()
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
