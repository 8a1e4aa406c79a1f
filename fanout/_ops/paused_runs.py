"""Runs of a paused function, shown as ``paused`` rather than ``queued``.

A function paused with ``fanout pause`` (or the dashboard) keeps creating runs, and
its queued passes park in the store until it is resumed (``fanout/_redis/pause_store.py``).
Such a run's stored status stays ``queued``; every listing the CLI and the dashboard
draw shows it as ``paused``, because it will not start until someone resumes it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from .._core.records import RunInfo
from .._redis.history import History, Page, RunSummary
from .._redis.pause_store import PauseStore
from .._redis.store import Store

PAUSED = "paused"


def paused_functions(store: Store) -> set[str]:
    """The functions paused now (one ``SMEMBERS``)."""
    return PauseStore(store).paused()


def show_paused(runs: Iterable[RunSummary], paused: set[str]) -> list[RunSummary]:
    return [dataclasses.replace(r, status=PAUSED) if r.status == "queued" and r.fn_key in paused
            else r for r in runs]


def run_shown(info: RunInfo, fn_key: str, paused: set[str]) -> RunInfo:
    if info.status == "queued" and fn_key in paused:
        return dataclasses.replace(info, status=PAUSED)
    return info


def list_runs(history: History, paused: set[str], *, status: str | None,
              **query: Any) -> Page[RunSummary]:
    """``History.runs`` with ``paused`` as a status: a paused run is read as ``queued``
    and shown as paused; a ``queued`` filter leaves out the paused ones."""
    wanted: Sequence[str] = [s.strip() for s in status.split(",") if s.strip()] if status else []
    asked = ",".join(dict.fromkeys("queued" if s == PAUSED else s for s in wanted)) or None
    page = history.runs(status=asked, **query)
    items = show_paused(page.items, paused)
    if wanted and "active" not in wanted:
        items = [r for r in items if r.status in wanted]
    return Page(items, page.next_cursor, page.scanned, page.complete, page.total,
                page.prev_cursor)


__all__ = ["PAUSED", "list_runs", "paused_functions", "run_shown", "show_paused"]
