"""The dashboard as a WSGI application: requests, sign-in, and the pages.

``server.py`` explains the security model; ``auth.py`` holds the tokens, sessions
and throttle; ``actions.py`` the POST actions; ``pages.py``, ``overview.py``,
``charts.py`` and ``access_pages.py`` the HTML.

Live refresh: a page marked ``data-live`` is asked again every few seconds by
``app.js`` with ``X-Fanout-Live: 1`` and ``If-None-Match``. The server first
computes a cheap stamp of what the page shows (``fanout/_redis/live.py``: one round
trip) and answers ``304`` when it is unchanged, without rendering; otherwise it
sends the page's ``<main>`` content, which the script swaps in place.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from importlib import resources
from typing import Any
from urllib.parse import quote, urlsplit

from .._celery.history_copy import history_url as history_url_setting
from .._core.run_record import EVENT, FK
from .._errors import ConfigError, FanoutError
from .._ops.locate import Target
from .._ops.paused_runs import list_runs, paused_functions, run_shown, show_paused
from .._ops.render import decrypted
from .._ops.stats import (
    DataQuery,
    SearchPage,
    day_counts,
    function_stats,
    overview,
    overview_json,
    search_runs,
)
from .._ops.timeseries import RANGES, read_charts
from .._redis.audit import AuditLog
from .._redis.history import Page, RunSummary, parse_time
from .._redis.insight import run_events
from .._redis.live import fleet_stamp, run_stamp
from .._redis.pause_store import PauseStore
from . import access_pages, bulk_pages, history_views, pages
from .actions import perform
from .auth import LOCAL, Principal, Signer, Throttle, Token
from .charts import charts_section
from .overview import overview_page
from .web import HttpError, Redirect, Reply, Request, local_path

SESSION_COOKIE = "fanout_session"
_STATIC = {"style.css": "text/css; charset=utf-8", "app.js": "text/javascript; charset=utf-8"}
_CSP = ("default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
Fleet = Callable[[], tuple[dict[str, int | None], list[str] | None]]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url


class Memo:
    """Figures that scan many runs (the day's counts per status, the overview's
    per-function windows), shared by concurrent requests: computed again when the
    fleet's stamp changed and they are over ``min_age`` seconds old, or when they are
    over ``max_age`` (the windows move). One thread computes; the others wait for it."""

    def __init__(self, min_age: float = 2.0, max_age: float = 30.0) -> None:
        self.min_age, self.max_age = min_age, max_age
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._values: dict[str, tuple[str | None, float, Any]] = {}

    def get(self, key: str, stamp: str | None, compute: Callable[[], Any]) -> Any:
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            hit = self._values.get(key)
            now = time.monotonic()
            if hit is not None:
                old_stamp, at, value = hit
                age = now - at
                if age < self.min_age or (stamp is not None and stamp == old_stamp
                                          and age < self.max_age):
                    return value
            value = compute()
            with self._lock:
                if len(self._values) > 1000:
                    self._values.clear()
                self._values[key] = (stamp, time.monotonic(), value)
            return value


class DashboardApp:
    """The WSGI callable."""

    def __init__(self, target: Target, *, tokens: list[Token], secret: str | None = None,
                 session_seconds: float | None = None, trusted_proxies: list[Any] | None = None,
                 secure_cookie: bool | None = None, fleet: Fleet | None = None) -> None:
        from .auth import DEFAULT_SESSION_SECONDS

        self.target = target
        self.open = not tokens  # loopback only, everyone is "local"
        self.signer = Signer(tokens, secret, session_seconds or DEFAULT_SESSION_SECONDS)
        self.throttle = Throttle()
        self.trusted = list(trusted_proxies or [])
        self.secure_cookie = secure_cookie
        self.fleet = fleet or (lambda: ({}, None))
        self.local_csrf = hashlib.sha256(os.urandom(32)).hexdigest()[:32]
        self.memo = Memo()
        self._registry: Any = None
        self._pg: Any = None  # the history store's client, with fanout_history_url
        self._pg_lock = threading.Lock()

    @property
    def audit(self) -> AuditLog:
        return AuditLog(self.target.runtime.store)

    # -- WSGI ------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        req = Request(environ, self.trusted)
        try:
            reply = self.handle(req)
        except HttpError as exc:
            reply = self.error(req, exc.status, str(exc))
        headers = [("Content-Type", reply.ctype), ("Content-Length", str(len(reply.body))),
                   ("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"),
                   ("Referrer-Policy", "same-origin"), ("Content-Security-Policy", _CSP),
                   *reply.headers]
        if not any(k == "Cache-Control" for k, _ in reply.headers):
            headers.append(("Cache-Control", "no-store"))
        start_response(f"{reply.status} {HTTPStatus(reply.status).phrase}", headers)
        return [b"" if req.method == "HEAD" else reply.body]

    # -- replies ---------------------------------------------------------------------------

    def html(self, req: Request, status: int, title: str, body: str,
             who: Principal | None = None, flash: dict[str, str] | None = None) -> Reply:
        text = pages.page(title, body, path=req.path, where=_redact(self.target.redis_url),
                          user=access_pages.user_box(who, self.csrf(req, who), self.open),
                          **(flash or {}))
        return Reply(status, text.encode(), "text/html; charset=utf-8")

    def json(self, status: int, data: Any) -> Reply:
        return Reply(status, json.dumps(data, default=str).encode(), "application/json")

    def error(self, req: Request, status: int, message: str,
              who: Principal | None = None) -> Reply:
        if req.is_api or req.method == "POST" and req.headers.get("accept", "").startswith(
                "application/json"):
            return self.json(status, {"error": message})
        titles = {401: "Sign in", 403: "Not allowed", 404: "Not found", 429: "Too many tries"}
        return self.html(req, status, titles.get(status, "Error"),
                         access_pages.error_page(status, message), who)

    def redirect(self, location: str, cookie: str | None = None) -> Reply:
        headers = [("Location", location)]
        if cookie:
            headers.append(("Set-Cookie", cookie))
        return Reply(HTTPStatus.SEE_OTHER, b"", headers=headers)

    # -- who is asking -----------------------------------------------------------------------

    def csrf(self, req: Request, who: Principal | None) -> str:
        """The CSRF value of this request's session ('' for a read-only principal)."""
        if who is None or not who.can_act:
            return ""
        if self.open:
            return self.local_csrf
        value = req.cookie(SESSION_COOKIE)
        return self.signer.csrf_for(value) if value else ""

    def _cookie(self, req: Request, value: str, max_age: int) -> str:
        secure = self.secure_cookie if self.secure_cookie is not None else req.https
        return (f"{SESSION_COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; "
                f"SameSite=Strict" + ("; Secure" if secure else ""))

    def _throttled(self, req: Request) -> None:
        wait = self.throttle.wait(req.addr)
        if wait > 0:
            raise HttpError(429, f"too many wrong tokens from {req.addr}: try again in "
                                 f"{wait:.0f} s")

    def principal(self, req: Request) -> Principal | None:
        if self.open:
            return LOCAL
        header = req.bearer()
        if header:
            self._throttled(req)
            tok = self.signer.verify_token(header)
            if tok is None:
                self.throttle.failed(req.addr)
                raise HttpError(401, "the token in the Authorization header is not valid")
            self.throttle.succeeded(req.addr)
            return Principal(tok.name, tok.role)
        s = self.signer.session(req.cookie(SESSION_COOKIE))
        return None if s is None else Principal(s.name, s.role)

    def _same_origin(self, req: Request) -> str | None:
        origin = req.headers.get("origin")
        if origin and origin != "null" and urlsplit(origin).netloc != req.headers.get("host", ""):
            return "cross-origin request refused"
        site = req.headers.get("sec-fetch-site")
        if site and site not in ("same-origin", "none"):
            return "cross-site request refused"
        return None

    # -- dispatch ---------------------------------------------------------------------------

    def handle(self, req: Request) -> Reply:
        if self.open:
            host = req.headers.get("host", "")
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if not is_loopback(name.strip("[]")):
                return Reply(403, b"forbidden host")
        if req.path == "/healthz":
            return Reply(200, b"ok")
        if req.path.startswith("/static/"):
            return self.static(req.path[len("/static/"):])
        if "token" in req.query:
            raise HttpError(400, "a token never goes in a URL (it would stay in the browser's "
                                 "history and the proxies' logs): sign in with the form at "
                                 "/login, or send 'Authorization: Bearer <token>'")
        if req.path == "/login":
            return self.login(req)
        if req.path == "/logout" and req.method == "POST":
            problem = self._same_origin(req)
            if problem:
                raise HttpError(403, problem)
            return self.redirect("/login?out=1", self._cookie(req, "", 0))
        who = self.principal(req)
        if who is None:
            if req.is_api or req.method == "POST":
                raise HttpError(401, "sign in first: POST the token to /login, or send "
                                     "'Authorization: Bearer <token>'")
            expired = req.cookie(SESSION_COOKIE) is not None
            return self.html(req, 401, "Sign in", access_pages.login_page(
                expired=expired, nxt=req.path))
        if req.method == "POST":
            return self.post(req, who)
        if req.method not in ("GET", "HEAD"):
            raise HttpError(405, f"{req.method} is not allowed here")
        try:
            return self.get(req, who)
        except Redirect as r:
            return self.redirect(r.location)
        except (FanoutError, ValueError) as exc:
            if req.is_api:
                return self.json(400, {"error": str(exc)})
            return self.html(req, 400, "Error", f'<h1>Bad request</h1><p class="err-text">'
                             f"{pages.h(exc)}</p>", who)

    def static(self, name: str) -> Reply:
        ctype = _STATIC.get(name)
        if ctype is None:
            return Reply(404, b"not found")
        body = resources.files("fanout._dashboard").joinpath("static", name).read_bytes()
        return Reply(200, body, ctype, [("Cache-Control", "no-cache")])

    def login(self, req: Request) -> Reply:
        if self.open:
            return self.redirect("/overview")
        if req.method != "POST":
            return self.html(req, 200, "Sign in", access_pages.login_page(
                signed_out="out" in req.query, nxt=req.query.get("next", "")))
        problem = self._same_origin(req)
        if problem:
            raise HttpError(403, problem)
        self._throttled(req)
        form, _ = req.form()
        tok = self.signer.verify_token(form.get("token", ""))
        nxt = form.get("next", "")
        if tok is None:
            wait = self.throttle.failed(req.addr)
            return self.html(req, 401, "Sign in", access_pages.login_page(bad=True, wait=wait,
                                                                          nxt=nxt))
        self.throttle.succeeded(req.addr)
        dest = local_path(nxt, "/overview")
        value = self.signer.session_cookie_value(tok)
        return self.redirect(dest, self._cookie(req, value, int(self.signer.session_seconds)))

    # -- GET --------------------------------------------------------------------------------

    def get(self, req: Request, who: Principal) -> Reply:
        t = self.target
        path, q = req.path, req.query
        if path == "/metrics":
            return self.metrics()
        if path == "/audit":
            offset = max(0, int(q.get("offset") or 0))
            return self.html(req, 200, "Audit", access_pages.audit_page(
                self.audit.recent(100, offset), offset, self.audit.total()), who)
        if path == "/api/audit":
            return self.json(200, [r.to_json() for r in self.audit.recent(
                min(int(q.get("limit") or 100), 1000), int(q.get("offset") or 0))])
        if path in ("/", "/overview", "/runs") or path.startswith(("/runs/", "/bulk/")) \
                and path != "/bulk/new":
            return self.live_page(req, who)
        if path in ("/bulk", "/bulk/new"):
            return self.bulk_get(req, who)
        if path == "/api/overview":
            depths, workers = self.fleet()
            fns = t.functions()
            ov = overview(t.history, queues=depths, workers=workers, functions=len(fns))
            return self.json(200, overview_json(ov, [function_stats(t.history, fn, now=ov.now)
                                                     for fn in fns]))
        if path == "/api/charts":
            charts = read_charts(t.runtime.store, q.get("range") or "hour",
                                 [fn.key for fn in t.functions()])
            return self.json(200, {"range": charts.range, "width": charts.width,
                                   "last_roll": charts.last_roll, "functions": {
                                       k: [p.__dict__ for p in s.points]
                                       for k, s in charts.series.items()}})
        if path == "/functions":
            store = PauseStore(t.runtime.store)
            paused = {fn.key: pinfo for fn in t.functions()
                      if (pinfo := store.info(fn.key)) is not None}
            return self.html(req, 200, "Functions", pages.functions_page(
                t.functions(), self.csrf(req, who), paused), who, self.signer.flash(q))
        if path == "/api/functions":
            return self.json(200, [fn.describe() for fn in t.functions()])
        if path == "/api/runs":
            return self.api_runs(q)
        if path.startswith("/api/runs/"):
            from .._ops.render import run_json

            run_id = path.rsplit("/", 1)[1]
            fields, _copy = history_views.run_fields(self, run_id)
            info = t.runtime.store.run_info(run_id, fields)
            if info is None:
                raise HttpError(404, f"no run {run_id} (unknown, or past its retention)")
            info = run_shown(info, fields.get(FK, ""), paused_functions(t.runtime.store))
            return self.json(200, run_json(self._decrypted(info), fields))
        if path in ("/events", "/api/events"):
            after = float(q["after"]) if q.get("after") else None
            events = t.history.events(name=q.get("name") or None, since=after,
                                      after_exclusive=after is not None,
                                      limit=min(int(q.get("limit") or 50), 500),
                                      cursor=q.get("cursor") or None)
            if path == "/api/events":
                return self.json(200, {"events": [e.to_json() for e in events.items],
                                       "next_cursor": events.next_cursor})
            return self.html(req, 200, "Events", pages.events_page(
                events, self.csrf(req, who), q.get("name", "")), who, self.signer.flash(q))
        if path.startswith("/events/"):
            eid = path.rsplit("/", 1)[1]
            ev = t.history.event(eid)
            if ev is None:
                raise HttpError(404, f"no event {eid} (unknown, or past its retention)")
            paused_fns = paused_functions(t.runtime.store)
            body = pages.event_page(ev, show_paused(t.history.runs_of_event(eid), paused_fns),
                                    self.csrf(req, who),
                                    resumed=show_paused(t.history.runs_resumed_by(eid), paused_fns))
            body += access_pages.audit_section(self.audit.about(eid), "Actions on this event")
            return self.html(req, 200, f"Event {eid}", body, who, self.signer.flash(q))
        raise HttpError(404, f"no page {path}")

    def _decrypted(self, info: Any) -> Any:
        key = os.environ.get("FANOUT_ENCRYPTION_KEY")
        return decrypted(info, key) if key else info

    def metrics(self) -> Reply:
        """Prometheus metrics of the whole fleet (the counts live in the store)."""
        from .._ops.prometheus import CONTENT_TYPE, registry_for, render

        try:
            if self._registry is None:
                rt = self.target.runtime
                self._registry = registry_for(lambda: rt.store)
            body = render(self._registry)
        except ConfigError as exc:  # prometheus_client is not installed
            return Reply(501, f"{exc}\n".encode())
        return Reply(200, body, CONTENT_TYPE)

    def api_runs(self, q: dict[str, str]) -> Reply:
        t = self.target
        fn_key = t.function(q["fn"]).key if q.get("fn") else None
        if q.get("q", "").strip():
            found = self._search_page(q, fn_key)
            return self.json(200, {"runs": [r.to_json() for r in found.items],
                                   "looked": found.looked, "total": found.total,
                                   "exact": found.exact, "next_cursor": found.next_cursor,
                                   "complete": found.complete})
        runs = self._runs(q, fn_key)
        return self.json(200, {"runs": [r.to_json() for r in runs.items],
                               "next_cursor": runs.next_cursor, "prev_cursor": runs.prev_cursor,
                               "total": runs.total})

    def _runs(self, q: dict[str, str], fn_key: str | None) -> Page[RunSummary]:
        t = self.target
        pg_url = history_url_setting(t.runtime.app)
        if pg_url is not None:
            return self._runs_pg(q, fn_key, pg_url)
        return list_runs(t.history, paused_functions(t.runtime.store),
                         status=q.get("status") or None, fn_key=fn_key,
                         since=parse_time(q["since"]) if q.get("since") else None,
                         until=parse_time(q["until"]) if q.get("until") else None,
                         limit=min(int(q.get("limit") or 50), 500),
                         cursor=q.get("cursor") or None, version=q.get("version") or None,
                         event_name=q.get("event_name") or None)

    def _runs_pg(self, q: dict[str, str], fn_key: str | None, url: str) -> Page[RunSummary]:
        """The runs list with the PostgreSQL history store: ended runs from it, active
        ones from Redis (``fanout/_postgres/combined.py``); ``paused`` reads as queued
        and is shown as paused, as without the store."""
        from .._postgres.combined import combined_runs
        from .._postgres.store import PgHistory

        t = self.target
        wanted = [s.strip() for s in (q.get("status") or "").split(",") if s.strip()]
        asked = ",".join(dict.fromkeys("queued" if s == "paused" else s for s in wanted))
        with self._pg_lock:
            pg = self._pg
            if pg is None or pg.url != url:
                pg = self._pg = PgHistory(url)
            page = combined_runs(
                t.runtime.store, pg, fn_key=fn_key, status=asked or None,
                since=parse_time(q["since"]) if q.get("since") else None,
                until=parse_time(q["until"]) if q.get("until") else None,
                version=q.get("version") or None, event_name=q.get("event_name") or None,
                cursor=q.get("cursor") or None, limit=min(int(q.get("limit") or 50), 500))
        items = show_paused(page.items, paused_functions(t.runtime.store))
        if wanted and "active" not in wanted:
            items = [r for r in items if r.status in wanted]
        return Page(items, page.next_cursor, len(page.items), True, page.total,
                    page.prev_cursor)

    # -- the live pages -----------------------------------------------------------------------

    def live_page(self, req: Request, who: Principal) -> Reply:
        """The overview, the runs list and a run's page: whole, or (``X-Fanout-Live``)
        their ``<main>`` content with an ETag, or 304 when nothing changed."""
        live = req.headers.get("x-fanout-live") == "1"
        etag = None
        if live:
            stamp = self._stamp(req)
            if stamp is not None:
                session = req.cookie(SESSION_COOKIE) or req.bearer() or ""
                etag = 'W/"' + hashlib.sha1(
                    f"{stamp}|{req.path}|{sorted(req.query.items())}|{who}|{session}".encode(),
                    usedforsecurity=False).hexdigest()[:24] + '"'
                if req.headers.get("if-none-match") == etag:
                    return Reply(304, b"", headers=[("ETag", etag), ("Cache-Control", "no-cache")])
        title, body = self.render(req, who)
        if live:
            headers = [("Cache-Control", "no-cache")] + ([("ETag", etag)] if etag else [])
            return Reply(200, body.encode(), "text/html; charset=utf-8", headers)
        return self.html(req, 200, title, body, who, self.signer.flash(req.query))

    def bulk_get(self, req: Request, who: Principal) -> Reply:
        """``/bulk``: the jobs; ``/bulk/new``: an operator's confirmation, with the exact
        count of the runs the job would act on."""
        from .._celery.bulk_jobs import submit
        from .._redis.bulk_store import BulkStore

        if req.path == "/bulk":
            return self.html(req, 200, "Bulk jobs", bulk_pages.jobs_page(
                BulkStore(self.target.runtime.store).jobs(100)), who)
        csrf = self.csrf(req, who)
        if not csrf:
            raise HttpError(403, f"{who.name} has a {who.role} token: it can look but not "
                                 "act. Ask for an operator token.")
        kind = req.query.get("kind", "")
        query = bulk_pages.query_from(self.target, req.query, kind)
        preview = submit(self.target.runtime, kind, query, who=who.name, reason="",
                         client="dashboard", dry_run=True)
        return self.html(req, 200, f"Bulk {kind}",
                         bulk_pages.confirm_page(preview, req.query, csrf), who)

    def _stamp(self, req: Request) -> str | None:
        store = self.target.runtime.store
        if req.path.startswith("/bulk/"):
            return None  # the job's hash: read every time
        if req.path.startswith("/runs/"):
            return run_stamp(store, req.path.rsplit("/", 1)[1])
        stamp = fleet_stamp(store)
        if stamp is None:
            return None
        # The windows move: a page that did not change is drawn again every 30 s.
        extra = self.fleet() if req.path != "/runs" else ""
        return f"{stamp}|{int(time.time() // 30)}|{extra}"

    def render(self, req: Request, who: Principal) -> tuple[str, str]:
        t, q, path = self.target, req.query, req.path
        csrf = self.csrf(req, who)
        store = t.runtime.store
        if path in ("/", "/overview"):
            depths, workers = self.fleet()
            fns = t.functions()
            stamp = fleet_stamp(store)
            ov, fstats = self.memo.get("overview", stamp, lambda: self._overview(depths, workers))
            pstore = PauseStore(store)
            now_paused = pstore.paused()
            paused = {fn.key: pinfo for fn in fns if fn.key in now_paused
                      and (pinfo := pstore.info(fn.key)) is not None}
            rng = q.get("range") or "hour"
            if rng not in RANGES:
                raise ValueError(f"unknown range {rng!r}: use hour, day or week")
            charts = read_charts(store, rng, [fn.key for fn in fns], now=ov.now)
            return "Overview", (overview_page(ov, fns, fstats, paused)
                                + '<div data-region="ov-charts">'
                                + charts_section(charts, [fn.key for fn in fns], q) + "</div>")
        if path == "/runs":
            fn_key = t.function(q["fn"]).key if q.get("fn") else None
            if q.get("q", "").strip():
                return "Runs", self._search(q, fn_key, csrf)
            runs = self._runs(q, fn_key)
            counts = self.memo.get(f"counts:{fn_key}", fleet_stamp(store),
                                   lambda: day_counts(t.history, fn_key=fn_key))
            return "Runs", pages.runs_page(
                runs, t.functions(), q, counts=counts, names=self._names(runs.items),
                csrf=csrf, bulk=bulk_pages.bulk_buttons(q, runs.total) if csrf else "")
        if path.startswith("/bulk/"):
            from .._redis.bulk_store import BulkStore

            job = BulkStore(store).get(path.rsplit("/", 1)[1])
            if job is None:
                raise HttpError(404, f"no bulk job {path.rsplit('/', 1)[1]} (unknown, or "
                                     "past its retention)")
            return f"Bulk job {job.id}", bulk_pages.job_page(job, csrf)
        run_id = path.rsplit("/", 1)[1]
        fields, copy = history_views.run_fields(self, run_id)
        info = store.run_info(run_id, fields)
        if info is None:
            raise HttpError(404, f"no run {run_id} (unknown, or past its retention)")
        fn_key = fields.get(FK, "")
        pause = PauseStore(store).info(fn_key) if info.status == "queued" else None
        info = run_shown(self._decrypted(info), fn_key, {fn_key} if pause else set())
        event = json.loads(fields.get(EVENT, "null"))
        body = pages.run_page(info, fields, event, csrf, pause=pause, copy=copy)
        body += access_pages.audit_section(self.audit.about(run_id), "Actions on this run")
        return f"Run {run_id}", body

    def _overview(self, depths: dict[str, int | None],
                  workers: list[str] | None) -> tuple[Any, list[Any]]:
        t = self.target
        fns = t.functions()
        ov = overview(t.history, queues=depths, workers=workers, functions=len(fns))
        return ov, [function_stats(t.history, fn, now=ov.now) for fn in fns]

    def _names(self, runs: list[RunSummary]) -> dict[str, str]:
        events = run_events(self.target.runtime.store, [r.run_id for r in runs])
        return {r.run_id: str(ev.get("name", "")) for r, ev in zip(runs, events, strict=True) if ev}

    def _search(self, q: dict[str, str], fn_key: str | None, csrf: str) -> str:
        """``q``: a run id or an event id opens it; ``field=value`` lists the runs whose
        triggering event has that value in its data."""
        t = self.target
        text = q["q"].strip()
        if " " not in text and "=" not in text:
            if history_views.run_fields(self, text)[0]:
                raise Redirect(f"/runs/{quote(text)}")
            if t.history.event(text) is not None:
                raise Redirect(f"/events/{quote(text)}")
            raise HttpError(404, f"no run or event has the id {text!r}; to search the "
                                 "events' data, write field=value (for example user.id=42)")
        found = self._search_page(q, fn_key)
        items = show_paused(found.items, paused_functions(t.runtime.store))
        return pages.runs_page(Page(items, found.next_cursor, found.looked, found.complete,
                                    found.total), t.functions(), q,
                               names=self._names(items), csrf=csrf, search=found)

    def _search_page(self, q: dict[str, str], fn_key: str | None) -> SearchPage:
        """``field=value`` over the event's data (or ``output.field=value``): exact
        when a function declares it as a search attribute, else a look through the
        runs that says how far it got and goes on from its cursor."""
        t = self.target
        query = DataQuery.parse(q["q"].strip())
        limit, cursor = min(int(q.get("limit") or 50), 500), q.get("cursor") or None
        found = history_views.search_page(self, query, fn_key, limit, cursor)
        if found is not None:  # the history store: any field, exactly
            return found
        fns = [fn for fn in t.functions() if fn_key is None or fn.key == fn_key]
        indexed = any(query.attribute in fn.search for fn in fns)
        return search_runs(t.history, query, fn_key=fn_key,
                           limit=min(int(q.get("limit") or 50), 500),
                           cursor=q.get("cursor") or None, indexed=indexed)

    # -- POST --------------------------------------------------------------------------------

    def post(self, req: Request, who: Principal) -> Reply:

        problem = self._same_origin(req)
        if problem:
            raise HttpError(403, problem)
        if not who.can_act:
            raise HttpError(403, f"{who.name} has a {who.role} token: it can look but not act "
                                 "(cancel, replay, pause, send events). Ask for an operator "
                                 "token.")
        form, run_ids = req.form()
        sent = form.get("csrf", "")
        header = bool(req.bearer())  # a header token cannot be forged by another site
        expected = self.csrf(req, who)
        if not header and not (sent and expected and hmac.compare_digest(sent, expected)):
            raise HttpError(403, "missing or invalid CSRF value: reload the page and try again")
        back = local_path(urlsplit(req.headers.get("referer", "")).path, "/runs")
        try:
            location, msg = perform(self, req, who, form, run_ids)
        except (FanoutError, ValueError) as exc:
            return self.redirect(f"{back}?{self.signer.flash_query('err', str(exc))}")
        return self.redirect(f"{location}?{self.signer.flash_query('msg', msg)}")

    def record(self, req: Request, who: Principal, action: str, targets: Iterable[str],
               detail: str, **extra: Any) -> None:
        self.audit.record(who.name, who.role, action, targets, detail, client=req.addr,
                          extra=extra)
