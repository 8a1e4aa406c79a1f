"""The dashboard with the PostgreSQL history store (``fanout_history_url``): a run Redis
no longer holds (past its retention) is read from its copy, and the search box looks
``field=value`` up in the store, over any field, exactly. Read only: a copied run's
page says why it offers no action."""

from __future__ import annotations

from typing import Any

from .._celery.history_copy import history_url as history_url_setting
from .._core.run_record import ST
from .._ops.stats import DataQuery, SearchPage


def _pg(dash: Any, url: str) -> Any:
    from .._postgres.store import PgHistory

    if dash._pg is None or dash._pg.url != url:
        dash._pg = PgHistory(url)
    return dash._pg


def run_fields(dash: Any, run_id: str) -> tuple[dict[str, str], bool]:
    """The run's fields from Redis, or from the history store's copy when Redis no
    longer has them; and whether they are the copy's."""
    t = dash.target
    fields: dict[str, str] = t.runtime.store.run_fields(run_id)
    url = None if fields.get(ST) else history_url_setting(t.runtime.app)
    if url is None:
        return fields, False
    from .._postgres.copies import copied_fields

    with dash._pg_lock:
        copy = copied_fields(_pg(dash, url), run_id)
    return copy, bool(copy)


def search_page(dash: Any, query: DataQuery, fn_key: str | None, limit: int,
                cursor: str | None) -> SearchPage | None:
    """The search box's ``field=value`` answered by the history store (None without
    it): active and not-yet-copied runs from Redis, the rest from PostgreSQL."""
    t = dash.target
    url = history_url_setting(t.runtime.app)
    if url is None:
        return None
    from .._postgres.combined import combined_runs

    path = ".".join((query.root, *query.path))
    with dash._pg_lock:
        page = combined_runs(t.runtime.store, _pg(dash, url), fn_key=fn_key,
                             search={path: query.value}, cursor=cursor, limit=limit)
    return SearchPage(page.items, page.next_cursor, len(page.items), page.total, exact=True)
