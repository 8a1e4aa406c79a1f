"""The run-history methods of ``fanout.Fanout`` (``get_run``, ``list_runs``): a mixin
the client inherits, so that ``fanout/_client.py`` stays short. The listings
themselves: ``fanout/_redis/history.py`` (Redis's indexes) and ``fanout/_postgres``
(the history store)."""

from __future__ import annotations

import datetime as _dt
import json
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._celery.history_copy import history_url as history_url_setting
from ._core.flow import as_timestamp
from ._core.records import RunInfo, RunList
from ._core.run_record import ST
from ._core.run_view import to_run_info
from ._core.search import parse_term
from ._errors import ConfigError
from ._redis.history import MAX_LIMIT, History
from ._redis.history import statuses as history_statuses

if TYPE_CHECKING:
    from celery import Celery

    from ._celery.runtime import Runtime


class HistoryMethods:
    """A run's record, and runs listed by filters (docs/reference/api.md)."""

    if TYPE_CHECKING:
        _rt: Runtime
        celery: Celery
        app_id: str
        _pg: Any
        _pg_lock: threading.Lock

    def get_run(self, run_id: str) -> RunInfo | None:
        """A run's status, output or error, and its steps; None if unknown or expired.
        With the PostgreSQL history store, a run Redis no longer holds is read from its
        copy there (read only: replay and rerun need the run in Redis)."""
        store = self._rt.store
        info = store.run_info(run_id)
        url = history_url_setting(self.celery) if info is None else None
        if url is not None:
            from ._postgres.copies import fields_from

            info = store.run_info(run_id, fields_from(url, run_id))
        return info

    def list_runs(
        self,
        *,
        event_id: str | None = None,
        fn_id: str | None = None,
        status: str | None = None,
        since: _dt.datetime | float | None = None,
        until: _dt.datetime | float | None = None,
        cursor: str | None = None,
        limit: int = 100,
        version: str | None = None,
        search: Mapping[str, Any] | None = None,
        event_name: str | None = None,
    ) -> RunList:
        """Runs, newest first (by creation), of one event, one function, or all.

        ``status`` is a status, comma-separated statuses or ``"active"``; ``since`` /
        ``until`` (aware datetimes or epoch seconds) bound the creation time. The
        result is a list with ``next_cursor``: pass it as ``cursor=`` for the next page.
        Every filter is answered exactly from an index: the list holds ``limit`` runs
        whenever that many match, and ``total`` says how many match in all.
        ``prev_cursor`` pages back (the runs just newer than the first one).
        The runs of one event are one list (no cursor). ``version`` keeps the runs
        created on that version or with a pass that ran on it. ``search`` looks runs up
        by declared search attributes (``create_function(search=["data.user_id"])``):
        ``search={"data.user_id": 42}``; every attribute given must match.
        ``event_name`` keeps the runs started by an event of that name (a batch run: by
        any of its events; a cron run's is ``fanout/scheduled.timer``, an invoked run's
        ``fanout/function.invoked``).

        With the PostgreSQL history store (``history_url=``), ended runs come from it and
        active ones from Redis (docs/howto/history-postgres.md): ``search`` then takes any
        path under ``data.`` or ``output``.
        """
        if not isinstance(limit, int) or not 1 <= limit <= 10000:
            raise ConfigError("limit must be an integer from 1 to 10000")
        after = as_timestamp(since, "since")
        before = as_timestamp(until, "until")
        store = self._rt.store
        history = History(store)
        pg_url = history_url_setting(self.celery)
        if event_id is None and pg_url is not None:
            return self._list_runs_pg(pg_url, fn_id=fn_id, status=status, since=after,
                                      until=before, cursor=cursor, limit=limit,
                                      version=version, search=search, event_name=event_name)
        if event_name is not None and (not isinstance(event_name, str) or not event_name):
            raise ConfigError("event_name must be an event's name (a non-empty string)")
        if event_id is not None:
            if cursor is not None:
                raise ConfigError("cursor pages the runs of a function or of all functions; "
                                  "the runs of one event come in one list (drop cursor=)")
            if search:
                raise ConfigError("search= looks runs up by function or over all functions; "
                                  "drop event_id=")
            wanted = history_statuses(status)
            found = [r for r in history.runs_of_event(event_id)
                     if (wanted is None or r.status in wanted)
                     and (fn_id is None or r.fn_id == fn_id)
                     and (after is None or (r.created_at or 0) >= after)
                     and (before is None or (r.created_at or 0) <= before)
                     and (version is None or version in r.versions)]
            if event_name is not None:
                found = [r for r, ok in zip(found, history.started_by(
                    [r.run_id for r in found], event_name), strict=True) if ok]
            return RunList(self._infos([r.run_id for r in found[:limit]]))
        fn_key = f"{self.app_id}:{fn_id}" if fn_id else None
        if search is not None:
            if not isinstance(search, Mapping) or not search:
                raise ConfigError('search must be a dict like {"data.user_id": 42}')
            for path, value in search.items():
                parse_term(f"{path}={json.dumps(value)}")  # a clear error for a bad term
        ids: list[str] = []
        nxt = cursor
        total: int | None = None
        prev: str | None = None
        while len(ids) < limit:
            page = history.runs(fn_key=fn_key, status=status, since=after, until=before,
                                limit=min(MAX_LIMIT, limit - len(ids)), cursor=nxt,
                                version=version, search=search, event_name=event_name)
            if total is None:
                total, prev = page.total, page.prev_cursor
            ids.extend(r.run_id for r in page.items)
            nxt = page.next_cursor
            if nxt is None or (cursor or "").startswith("^"):
                break  # a page back is one page
        return RunList(self._infos(ids), nxt, total=total, prev_cursor=prev)

    def _list_runs_pg(self, url: str, *, fn_id: str | None, status: str | None,
                      since: float | None, until: float | None, cursor: str | None,
                      limit: int, version: str | None, search: Mapping[str, Any] | None,
                      event_name: str | None) -> RunList:
        from ._postgres.combined import combined_runs
        from ._postgres.store import PgHistory

        if search is not None and (not isinstance(search, Mapping) or not search):
            raise ConfigError('search must be a dict like {"data.user_id": 42}')
        with self._pg_lock:
            if self._pg is None or self._pg.url != url:
                self._pg = PgHistory(url)
            page = combined_runs(
                self._rt.store, self._pg, fn_key=f"{self.app_id}:{fn_id}" if fn_id else None,
                status=status, since=since, until=until, version=version,
                event_name=event_name, search=search, cursor=cursor, limit=limit)
        infos = [to_run_info(r.run_id, page.fields[r.run_id]) for r in page.items]
        return RunList(infos, page.next_cursor, total=page.total, prev_cursor=page.prev_cursor)

    def _infos(self, run_ids: list[str]) -> list[RunInfo]:
        store = self._rt.store
        return [to_run_info(rid, f) for rid, f in zip(run_ids, store.many_run_fields(run_ids),
                                                      strict=True) if f.get(ST)]
