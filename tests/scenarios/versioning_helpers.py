"""Shared by the versioning scenarios: which version of a module's code a process
runs (``FANOUT_TEST_CODE``, 1 by default: the test process itself), and steps that
count their executions in Redis so a test can check that no completed step ran again."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import redis

import fanout
from tests.support import Worker, wait_for

CODE = os.environ.get("FANOUT_TEST_CODE", "1")
EXEC_KEY = "test:executions"


def counted(r: redis.Redis, ctx: fanout.ContextSync, step: str, value: Any) -> Any:
    """``ctx.step.run(step)`` whose body records one execution and returns ``value``."""

    def body() -> Any:
        r.hincrby(EXEC_KEY, f"{ctx.run_id}:{step}", 1)
        r.rpush(f"test:log:{ctx.run_id}", f"{step}@{CODE}")
        return value

    return ctx.step.run(step, body)


def executions(r: redis.Redis, run_id: str) -> dict[str, int]:
    """How many times each step of ``run_id`` executed."""
    raw = r.hgetall(EXEC_KEY)
    prefix = f"{run_id}:"
    return {k.decode()[len(prefix):]: int(v) for k, v in raw.items()
            if k.decode().startswith(prefix)}


def step_log(r: redis.Redis, run_id: str) -> list[str]:
    """``step@code`` for each execution of ``run_id``'s steps, in order."""
    return [x.decode() for x in r.lrange(f"test:log:{run_id}", 0, -1)]


def worker_on(module: str, code: str, log_dir: Path, name: str | None = None) -> Worker:
    """A `celery worker` running version ``code`` of ``module``."""
    return Worker(module, name=name or f"code{code}", log_dir=log_dir,
                  env={"FANOUT_TEST_CODE": code})


def wait_status(client: fanout.Fanout, run_ids: list[str], status: str,
                timeout: float = 30.0) -> None:
    def ok() -> bool:
        return all((i := client.get_run(r)) is not None and i.status == status for r in run_ids)

    wait_for(ok, timeout=timeout)
