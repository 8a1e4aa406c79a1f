"""Helpers for the flow-control scenarios: steps that record when they ran, and
the largest number of recorded spans open at one instant."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from tests.support import Worker, redis_for


def recorder(module: str) -> Callable[..., dict[str, Any]]:
    """A step body: sleeps ``seconds`` and records (tag, run, start, end) in Redis."""

    def span(tag: str, run_id: str, seconds: float, list_name: str = "spans") -> dict[str, Any]:
        start = time.time()
        time.sleep(seconds)
        end = time.time()
        item = {"tag": tag, "run": run_id, "start": start, "end": end}
        redis_for(module).rpush(f"side:{list_name}", json.dumps(item))
        return item

    return span


def spans(module: str, list_name: str = "spans") -> list[dict[str, Any]]:
    return [json.loads(x) for x in redis_for(module).lrange(f"side:{list_name}", 0, -1)]


def max_overlap(items: Iterable[dict[str, Any]]) -> int:
    """The most spans open at the same instant (an end before a start at a tie)."""
    edges = sorted([(s["start"], 1) for s in items] + [(s["end"], -1) for s in items],
                   key=lambda e: (e[0], e[1]))
    best = cur = 0
    for _t, d in edges:
        cur += d
        best = max(best, cur)
    return best


def module_worker(module: str, log_dir: Path, concurrency: int, request: pytest.FixtureRequest,
                  **kw: Any) -> Any:
    w = Worker(module, concurrency=concurrency, log_dir=log_dir, **kw)
    yield w
    w.stop()
    if request.session.testsfailed:
        print(f"\n--- worker log {w.log_path} (tail) ---\n{w.log()[-4000:]}")
