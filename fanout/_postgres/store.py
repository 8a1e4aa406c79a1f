"""The PostgreSQL history store: the ``fanout_runs`` table, its upserts and queries.

One row per run, keyed by the run id, written by the copier (``copier.py``) with
``INSERT ... ON CONFLICT (run_id) DO UPDATE``: a run copied twice is one row. The
columns a filter uses are plain columns with indexes; the event's data, the output,
the error, the search attributes and the whole record are JSONB (GIN indexes on the
event data and the output, for the ``@>`` containment a search compiles to).

Needs psycopg 3 (``pip install celery-fanout[postgres]``).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._core.run_record import (
    APP,
    CREATED,
    ENDED,
    ERROR,
    EV,
    EVENT,
    EVENTS,
    FK,
    FN,
    OUTPUT,
    SEARCH,
    ST,
    STARTED,
    VERSION,
    VERSIONS,
)
from .._errors import ConfigError

try:  # the optional extra
    import psycopg
    from psycopg.types.json import Jsonb
except ImportError:  # pragma: no cover - exercised only without the extra
    psycopg = None  # type: ignore[assignment]
    Jsonb = None  # type: ignore[assignment,misc]

TABLE = "fanout_runs"
# One row per (run, version it was created or ran on) and per (run, event name that
# started it): 'v:<version>' and 'e:<name>', with the run's creation ms, and the same
# again under the run's function ('f:<function key><US>v:<version>', ``fn_tag``). Its primary key
# gives the version and event-name filters their page in order (a plain index on the
# version, or a GIN index over the names array, leaves PostgreSQL to sort every match).
TAGS = "fanout_run_tags"

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    run_id      text COLLATE "C" PRIMARY KEY,
    app         text NOT NULL DEFAULT '',
    fn_key      text NOT NULL DEFAULT '',
    fn_id       text NOT NULL DEFAULT '',
    status      text NOT NULL,
    version     text,
    versions    text[] NOT NULL DEFAULT '{{}}',
    created_ms  bigint NOT NULL DEFAULT 0,
    created_at  timestamptz,
    started_at  timestamptz,
    ended_at    timestamptz,
    event_names text[] NOT NULL DEFAULT '{{}}',
    event_ids   text[] NOT NULL DEFAULT '{{}}',
    event_data  jsonb,
    output      jsonb,
    error       jsonb,
    search      jsonb,
    record      jsonb NOT NULL,
    copied_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS {TABLE}_fn_status_created
    ON {TABLE} (fn_key, status, created_ms DESC, run_id DESC);
CREATE INDEX IF NOT EXISTS {TABLE}_fn_created ON {TABLE} (fn_key, created_ms DESC, run_id DESC);
CREATE INDEX IF NOT EXISTS {TABLE}_status_created ON {TABLE} (status, created_ms DESC, run_id DESC);
CREATE INDEX IF NOT EXISTS {TABLE}_created ON {TABLE} (created_ms DESC, run_id DESC);
CREATE INDEX IF NOT EXISTS {TABLE}_ended ON {TABLE} (ended_at);
CREATE INDEX IF NOT EXISTS {TABLE}_event_data ON {TABLE} USING gin (event_data jsonb_path_ops);
CREATE INDEX IF NOT EXISTS {TABLE}_output ON {TABLE} USING gin (output jsonb_path_ops);
DROP INDEX IF EXISTS {TABLE}_version;
DROP INDEX IF EXISTS {TABLE}_event_names;
DO $fanout$
BEGIN
    IF to_regclass('{TAGS}') IS NULL THEN
        CREATE TABLE {TAGS} (
            tag      text COLLATE "C" NOT NULL,
            tag_ms   bigint NOT NULL,
            tag_run  text COLLATE "C" NOT NULL REFERENCES {TABLE} (run_id) ON DELETE CASCADE,
            PRIMARY KEY (tag, tag_ms, tag_run)
        );
        CREATE INDEX {TAGS}_run ON {TAGS} (tag_run, tag);
        -- Once, when the table is new: the tags of the runs copied before it existed.
        INSERT INTO {TAGS} (tag, tag_ms, tag_run)
            SELECT DISTINCT f.tag, r.created_ms, r.run_id FROM {TABLE} r,
                LATERAL (SELECT 'v:' || v FROM unnest(r.versions) v
                         UNION SELECT 'e:' || e FROM unnest(r.event_names) e) AS t(tag),
                LATERAL (SELECT t.tag UNION ALL SELECT 'f:' || r.fn_key || chr(31) || t.tag
                         WHERE r.fn_key <> '') AS f(tag);
        ANALYZE {TAGS};
    END IF;
END
$fanout$;
"""

COLUMNS = ("run_id", "app", "fn_key", "fn_id", "status", "version", "versions", "created_ms",
           "created_at",
           "started_at", "ended_at", "event_names", "event_ids", "event_data", "output",
           "error", "search", "record")

_UPSERT = (
    f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))}) "
    f"ON CONFLICT (run_id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS[1:])
    + ", copied_at = now()"
)


_TAG_INSERT = (f"INSERT INTO {TAGS} (tag, tag_ms, tag_run) "
               "SELECT * FROM unnest(%s::text[], %s::bigint[], %s::text[]) "
               "ON CONFLICT DO NOTHING")


def fn_tag(fn_key: str, tag: str) -> str:
    """The tag of one function's runs: ``f:<function key><US><tag>``."""
    return f"f:{fn_key}\x1f{tag}"


def tags_of(row: Sequence[Any]) -> list[str]:
    """A row's tags (``row_of``): ``v:`` each version, ``e:`` each event name, and each
    of them again under the run's function (:func:`fn_tag`)."""
    tags = {f"v:{v}" for v in row[6]} | {f"e:{e}" for e in row[11]}
    fn_key = str(row[2])
    return sorted(tags | ({fn_tag(fn_key, t) for t in tags} if fn_key else set()))


def _tag_columns(rows: Sequence[Sequence[Any]]) -> tuple[list[str], list[int], list[str]]:
    tags: list[str] = []
    mss: list[int] = []
    rids: list[str] = []
    for row in rows:
        for tag in tags_of(row):
            tags.append(tag)
            mss.append(int(row[7]))
            rids.append(str(row[0]))
    return tags, mss, rids


def require_psycopg() -> None:
    if psycopg is None:
        raise ConfigError(
            "the PostgreSQL history store needs psycopg 3: pip install 'celery-fanout[postgres]'"
        )


def _ts(value: Any) -> _dt.datetime | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    if f <= 0:
        return None
    return _dt.datetime.fromtimestamp(f, _dt.timezone.utc)


def _ms_of(value: Any) -> int:
    """Milliseconds as the run indexes score a run (``ix_ms`` in ``lua/_indexes.lua``)."""
    try:
        return int(math.floor(float(value) * 1000))
    except (TypeError, ValueError):
        return 0


def _jsonb(value: Any) -> Any:
    return None if value is None else Jsonb(value)


def row_of(run_id: str, rec: Mapping[str, Any]) -> tuple[Any, ...]:
    """The table row of a run record (``ended_feed.record_of``)."""
    event = rec.get(EVENT) if isinstance(rec.get(EVENT), dict) else None
    events = rec.get(EVENTS) if isinstance(rec.get(EVENTS), list) else None
    evs = [e for e in (events or ([event] if event else [])) if isinstance(e, dict)]
    names = sorted({str(e.get("name")) for e in evs if e.get("name")})
    raw_ids, raw_vs = rec.get(EV), rec.get(VERSIONS)
    ids: list[Any] = raw_ids if isinstance(raw_ids, list) else []
    vs: list[Any] = raw_vs if isinstance(raw_vs, list) else []
    version = rec.get(VERSION) or None
    search: dict[str, Any] | None = None
    paths = rec.get(SEARCH)
    if isinstance(paths, list) and paths:
        search = {}
        for path in paths:
            root, _, rest = str(path).partition(".")
            doc: Any = (event or {}).get("data") if root == "data" else rec.get(OUTPUT)
            for part in rest.split(".") if rest else []:
                doc = doc.get(part) if isinstance(doc, dict) else None
            if doc is not None:
                search[str(path)] = doc
    return (
        run_id,
        str(rec.get(APP) or ""),
        str(rec.get(FK) or ""),
        str(rec.get(FN) or ""),
        str(rec.get(ST) or ""),
        version,
        list(dict.fromkeys([str(v) for v in ([version] if version else []) + vs if v])),
        _ms_of(rec.get(CREATED)),
        _ts(rec.get(CREATED)),
        _ts(rec.get(STARTED)),
        _ts(rec.get(ENDED)),
        names,
        [str(i) for i in ids],
        _jsonb(event.get("data") if event else None),
        _jsonb(rec.get(OUTPUT)),
        _jsonb(rec.get(ERROR)),
        _jsonb(search),
        Jsonb(dict(rec)),
    )


@dataclass(frozen=True)
class PgRun:
    """A run as the history store holds it (the summary a listing shows)."""

    run_id: str
    fn_key: str
    fn_id: str
    app_id: str
    status: str
    version: str | None
    created_at: float | None
    started_at: float | None
    ended_at: float | None
    event_names: list[str]
    event_ids: list[str]
    created_ms: int = 0
    record: dict[str, Any] | None = None


@dataclass
class PgPage:
    runs: list[PgRun]
    total: int
    next_cursor: str | None
    prev_cursor: str | None = None
    filters: dict[str, Any] = field(default_factory=dict)


def _epoch(ts: _dt.datetime | None) -> float | None:
    return None if ts is None else ts.timestamp()


class PgHistory:
    """The history store over one PostgreSQL database (a URL psycopg accepts)."""

    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        require_psycopg()
        if not url or not url.startswith(("postgresql://", "postgres://")):
            raise ConfigError(f"history_url must be a postgresql:// URL, not {url!r}")
        self.url = url
        self.connect_timeout = connect_timeout
        self._conn: Any = None

    # -- connection and schema -----------------------------------------------------------

    def connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.url, connect_timeout=max(1, int(self.connect_timeout)),
                                         autocommit=False)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def _reset_on_error(self) -> None:
        conn = self._conn
        self._conn = None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - already broken
                pass

    def create_schema(self) -> None:
        """Create the table and its indexes (idempotent)."""
        try:
            conn = self.connection()
            with conn.transaction(), conn.cursor() as cur:
                # One creator at a time: workers starting together would race on CREATE.
                cur.execute("SELECT pg_advisory_xact_lock(hashtext('fanout_runs schema'))")
                cur.execute(f"SELECT to_regclass('{TAGS}') IS NULL")
                row = cur.fetchone()
                cur.execute(SCHEMA)
            if row and row[0]:
                # The tags were just filled from the rows there: their visibility map,
                # so that the counts read the index alone from the first listing on
                # (autovacuum would do it, later).
                conn.autocommit = True
                try:
                    conn.execute(f"VACUUM (ANALYZE) {TAGS}")
                finally:
                    conn.autocommit = False
        except Exception:
            self._reset_on_error()
            raise

    # -- writing -------------------------------------------------------------------------

    def upsert(self, runs: Sequence[tuple[str, Mapping[str, Any]]]) -> int:
        """Write the runs (id, record) in one transaction; the rows written."""
        if not runs:
            return 0
        try:
            conn = self.connection()
            rows = [row_of(rid, rec) for rid, rec in runs]
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(_UPSERT, rows)
                # The tags again, in the same transaction (a run copied twice: its tags
                # as the last copy has them).
                cur.execute(f"DELETE FROM {TAGS} WHERE tag_run = ANY(%s)",
                            ([row[0] for row in rows],))
                cur.execute(_TAG_INSERT, _tag_columns(rows))
        except Exception:
            self._reset_on_error()
            raise
        return len(runs)

    def delete_older(self, days: float) -> int:
        """Delete the runs that ended more than ``days`` ago (the store's retention)."""
        try:
            conn = self.connection()
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(f"DELETE FROM {TABLE} WHERE ended_at < now() - make_interval(secs => %s)",
                            (float(days) * 86400.0,))
                return int(cur.rowcount)
        except Exception:
            self._reset_on_error()
            raise

    # -- reading -------------------------------------------------------------------------

    def runs(
        self,
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
        exclude: Sequence[str] = (),
        with_records: bool = False,
    ) -> PgPage:
        """Runs newest first (by creation, then run id), filtered; ``total`` counts every
        match. ``search`` maps a path (``data.<field>...`` over the event's data,
        ``output.<field>...`` over the output, ``output`` for the output itself) to the
        value it must equal (JSON equality, through ``@>`` containment on the GIN
        indexes). The order is the Redis indexes' (creation ms, then run id, bytewise), so
        both give the same pages. Cursors: ``"<created ms>:<run id>"`` pages older,
        ``"^..."`` newer."""
        tags = ([f"v:{version}"] if version else []) + ([f"e:{event_name}"] if event_name else [])
        # A version or an event name (of one function or of all): the page comes from
        # the tags' primary key (tag, creation ms, run id), in order, the run's row
        # joined to it. With a status too, from the (function, status, creation) or
        # (status, creation) index, each row's tag looked up by its run id.
        by_tag = bool(tags) and not status
        if by_tag and fn_key:
            tags = [fn_tag(fn_key, tag) for tag in tags]
        where, args = self._where(None if by_tag else fn_key, status, search)
        ms, rid_col = ("t.tag_ms", "t.tag_run") if by_tag else ("created_ms", "run_id")
        on_runs = bool(where)  # a condition on the run's row: the count joins it too
        for i, tag in enumerate(tags[1:] if by_tag else tags):
            # On the run id alone: with the creation ms too, PostgreSQL takes the two
            # for independent and plans on one matching row.
            where.append(f"EXISTS (SELECT 1 FROM {TAGS} t{i} WHERE t{i}.tag_run = {rid_col} "
                         f"AND t{i}.tag = %s)")
            args.append(tag)
        if by_tag:
            where.append("t.tag = %s")
            args.append(tags[0])
        # The bounds as the Redis indexes take them: milliseconds, both inclusive.
        if since is not None:
            where.append(f"{ms} >= %s")
            args.append(round(float(since) * 1000))
        if until is not None:
            where.append(f"{ms} <= %s")
            args.append(round(float(until) * 1000))
        if exclude:  # the runs the caller reads elsewhere (the combined listing: Redis)
            where.append(f"NOT ({rid_col} = ANY(%s))")
            args.append(list(exclude))
        base_where = list(where)
        base_args = list(args)
        back = bool(cursor and cursor.startswith("^"))
        if cursor:
            created_ms, rid = _parse_cursor(cursor.lstrip("^"))
            op = ">" if back else "<"
            where.append(f"({ms}, {rid_col}) {op} (%s, %s)")
            args += [created_ms, rid]
        order = "ASC" if back else "DESC"
        # Joined on the run id alone: with the creation ms too, PostgreSQL counts on
        # one joined row and hashes every match instead of walking the tags in order.
        source = f"{TAGS} t JOIN {TABLE} ON run_id = t.tag_run" if by_tag else TABLE
        sql = ("SELECT run_id, fn_key, fn_id, app, status, version, created_at, started_at, "
               "ended_at, event_names, event_ids, created_ms"
               + (", record" if with_records else "") + f" FROM {source}"
               + (" WHERE " + " AND ".join(where) if where else "")
               + f" ORDER BY {ms} {order}, {rid_col} {order} LIMIT %s")
        count_source = source if (on_runs or not by_tag) else f"{TAGS} t"
        count_sql = (f"SELECT count(*) FROM {count_source}"
                     + (" WHERE " + " AND ".join(base_where) if base_where else ""))
        try:
            conn = self.connection()
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(sql, [*args, limit + 1])
                rows = cur.fetchall()
                cur.execute(count_sql, base_args)
                count_row = cur.fetchone()
        except Exception:
            self._reset_on_error()
            raise
        more = len(rows) > limit
        rows = rows[:limit]
        if back:
            rows.reverse()
        runs = [PgRun(run_id=r[0], fn_key=r[1], fn_id=r[2], app_id=r[3], status=r[4],
                      version=r[5], created_at=_epoch(r[6]), started_at=_epoch(r[7]),
                      ended_at=_epoch(r[8]), event_names=list(r[9] or []),
                      event_ids=list(r[10] or []), created_ms=int(r[11]),
                      record=dict(r[12]) if with_records else None) for r in rows]
        total = int(count_row[0]) if count_row else 0
        older = (more if not back else True) and bool(runs)
        newer = (bool(cursor) if not back else more) and bool(runs)
        return PgPage(
            runs=runs, total=total,
            next_cursor=_cursor_of(runs[-1]) if older else None,
            prev_cursor="^" + _cursor_of(runs[0]) if newer else None,
        )

    def record(self, run_id: str) -> dict[str, Any] | None:
        """A run's full record as copied, or None."""
        try:
            conn = self.connection()
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(f"SELECT record FROM {TABLE} WHERE run_id = %s", (run_id,))
                row = cur.fetchone()
        except Exception:
            self._reset_on_error()
            raise
        return dict(row[0]) if row else None

    def count(self) -> int:
        conn = self.connection()
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {TABLE}")
            row = cur.fetchone()
        return int(row[0]) if row else 0

    @staticmethod
    def _where(fn_key: str | None, status: str | Iterable[str] | None,
               search: Mapping[str, Any] | None) -> tuple[list[str], list[Any]]:
        """The conditions on the run's own row (the function, the status, a search)."""
        where: list[str] = []
        args: list[Any] = []
        if fn_key:
            where.append("fn_key = %s")
            args.append(fn_key)
        if status:
            names = ([s.strip() for s in status.split(",") if s.strip()]
                     if isinstance(status, str) else list(status))
            if len(names) == 1:  # equality: the (status, created) indexes give the order
                where.append("status = %s")
                args.append(names[0])
            else:
                where.append("status = ANY(%s)")
                args.append(names)
        for path, value in (search or {}).items():
            column, doc = search_clause(path, value)
            where.append(f"{column} @> %s")
            args.append(Jsonb(doc))
        return where, args


def search_clause(path: str, value: Any) -> tuple[str, Any]:
    """The column and the JSON document ``path = value`` compiles to (``@>``)."""
    parts = [p for p in str(path).split(".")]
    if not parts or any(not p for p in parts):
        raise ConfigError(f"invalid search path {path!r}: use data.<field>[.<field>...] "
                          "or output[.<field>...]")
    root, rest = parts[0], parts[1:]
    if root == "data":
        column = "event_data"
        if not rest:
            raise ConfigError(f"invalid search path {path!r}: name a field under data.")
    elif root == "output":
        column = "output"
    else:
        raise ConfigError(f"invalid search path {path!r}: a search path starts with data. "
                          "(the event's data) or output (the run's output)")
    doc: Any = value
    for part in reversed(rest):
        doc = {part: doc}
    return column, doc


def parse_search(items: Iterable[str]) -> dict[str, Any]:
    """``["data.user_id=42", 'data.tier="gold"']`` as a search mapping: the value is JSON
    when it parses as JSON (42, true, "42", null), else the text as written."""
    out: dict[str, Any] = {}
    for item in items:
        path, eq, raw = item.partition("=")
        if not eq or not path.strip():
            raise ConfigError(f"invalid search {item!r}: use <path>=<value>, "
                              "like data.user_id=42")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        search_clause(path.strip(), value)
        out[path.strip()] = value
    return out


def _cursor_of(run: PgRun) -> str:
    return f"{run.created_ms}:{run.run_id}"


def _parse_cursor(raw: str) -> tuple[int, str]:
    us, sep, rid = raw.partition(":")
    try:
        if not sep:
            raise ValueError
        return int(us), rid
    except ValueError:
        raise ConfigError(f"invalid cursor {raw!r}: pass a next_cursor or prev_cursor "
                          "this store returned") from None
