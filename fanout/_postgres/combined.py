"""Listing runs with the history store: active and not-yet-copied runs from Redis,
the rest from PostgreSQL, merged in one order.

Both sides order runs the same way (creation ms, then run id bytewise: the Redis
indexes' order, ``store.py``), so a page is a merge of the two, and a cursor
(``"<created ms>:<run id>"``, ``"^..."`` to page back) means the same on both. The
Redis side is the *live* set (``EndedFeed.live``): every active run of the functions
asked about and every run in the ended feed after the copier's cursor. Its runs are
read from Redis and filtered here (as costly as there are runs in flight plus the
copier's lag); PostgreSQL answers the rest with the live runs excluded, so a run is
never listed twice, and the total is the sum of the two counts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .._core.run_record import CREATED, EVENT, EVENTS, FK, OUTPUT, ST, VERSION, VERSIONS
from .._redis.ended_feed import EndedFeed, fields_of
from .._redis.history import RunSummary, statuses
from .._redis.run_index import RunIndex
from .._redis.store import Store
from .store import PgHistory, _parse_cursor, search_clause


@dataclass
class CombinedPage:
    items: list[RunSummary]
    total: int
    next_cursor: str | None
    prev_cursor: str | None
    fields: dict[str, dict[str, str]]  # each listed run's hash fields (Redis or the copy)
    complete: bool = True


def _ms(f: Mapping[str, str]) -> int:
    try:
        return int(math.floor(float(f.get(CREATED) or 0) * 1000))
    except ValueError:
        return 0


def _json(raw: str | None) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _contains(doc: Any, want: Any, *, top: bool = True) -> bool:
    """JSONB ``@>`` as PostgreSQL defines it (tests/unit/test_history_pg_search.py
    compares the two): objects by their keys, arrays by their elements, and a scalar is
    contained in an array that holds it only at the top level."""
    if isinstance(want, dict):
        return isinstance(doc, dict) and all(k in doc and _contains(doc[k], v, top=False)
                                             for k, v in want.items())
    if isinstance(want, list):
        return isinstance(doc, list) and all(any(_contains(d, w, top=False) for d in doc)
                                             for w in want)
    if isinstance(doc, list):
        return top and any(_same(d, want) for d in doc)
    return _same(doc, want)


def _same(a: Any, b: Any) -> bool:
    """JSON scalar equality: numbers by value, booleans and null only as themselves."""
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return bool(a == b)
    return type(a) is type(b) and bool(a == b)


def _matches(f: Mapping[str, str], *, fn_key: str | None, wanted: frozenset[str] | None,
             since_ms: int | None, until_ms: int | None, version: str | None,
             event_name: str | None, search: Mapping[str, Any] | None) -> bool:
    if not f.get(ST):
        return False
    if fn_key and f.get(FK) != fn_key:
        return False
    if wanted is not None and f[ST] not in wanted:
        return False
    ms = _ms(f)
    if since_ms is not None and ms < since_ms:
        return False
    if until_ms is not None and ms > until_ms:
        return False
    if version and f.get(VERSION) != version and version not in (_json(f.get(VERSIONS)) or []):
        return False
    event = _json(f.get(EVENT))
    if event_name:
        events = _json(f.get(EVENTS)) or ([event] if event else [])
        if event_name not in {e.get("name") for e in events if isinstance(e, dict)}:
            return False
    for path, value in (search or {}).items():
        column, doc = search_clause(path, value)
        have = ((event or {}).get("data") if isinstance(event, dict) else None) \
            if column == "event_data" else _json(f.get(OUTPUT))
        if have is None or not _contains(have, doc):
            return False
    return True


def combined_runs(
    store: Store,
    pg: PgHistory,
    *,
    fn_key: str | None = None,
    status: str | Iterable[str] | None = None,
    since: float | None = None,
    until: float | None = None,
    version: str | None = None,
    event_name: str | None = None,
    search: Mapping[str, Any] | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> CombinedPage:
    """One page of runs, newest first, from Redis (live) and PostgreSQL (the rest)."""
    wanted = statuses(status)
    fns = [fn_key] if fn_key else RunIndex(store).functions()
    live_ids = EndedFeed(store).live(fns)
    live_fields = store.many_run_fields(live_ids)
    since_ms = None if since is None else round(since * 1000)
    until_ms = None if until is None else round(until * 1000)
    live = sorted(
        ((_ms(f), rid, f) for rid, f in zip(live_ids, live_fields, strict=True)
         if _matches(f, fn_key=fn_key, wanted=wanted, since_ms=since_ms, until_ms=until_ms,
                     version=version, event_name=event_name, search=search)),
        key=lambda x: (x[0], x[1].encode()), reverse=True)
    back = bool(cursor and cursor.startswith("^"))
    pg_status = sorted(wanted) if wanted is not None else None
    page = pg.runs(fn_key=fn_key, status=pg_status, since=since, until=until, version=version,
                   event_name=event_name, search=search, cursor=cursor, limit=limit,
                   exclude=live_ids, with_records=True)
    rows: list[tuple[int, str, dict[str, str]]] = list(live)
    if cursor:
        at_ms, at_rid = _parse_cursor(cursor.lstrip("^"))
        at = (at_ms, at_rid.encode())
        rows = [x for x in rows if ((x[0], x[1].encode()) > at if back
                                    else (x[0], x[1].encode()) < at)]
    rows += [(x.created_ms, x.run_id, fields_of(x.record or {})) for x in page.runs]
    rows.sort(key=lambda x: (x[0], x[1].encode()), reverse=True)
    if back:  # the entries just newer than the cursor: the oldest ``limit`` of them
        more = len(rows) > limit
        rows = rows[-limit:]
        older = True
        newer = more or page.prev_cursor is not None
    else:
        more = len(rows) > limit
        rows = rows[:limit]
        older = more or page.next_cursor is not None
        newer = bool(cursor)
    items = [RunSummary.from_fields(rid, dict(f)) for _ms_, rid, f in rows]
    first, last = (rows[0], rows[-1]) if rows else (None, None)
    return CombinedPage(
        items=items,
        total=page.total + len(live),
        next_cursor=f"{last[0]}:{last[1]}" if last and older else None,
        prev_cursor=f"^{first[0]}:{first[1]}" if first and newer else None,
        fields={rid: f for _m, rid, f in rows},
    )
