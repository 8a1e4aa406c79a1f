"""The dashboard's HTTP server (stdlib ``ThreadingHTTPServer``).

Security model:

* It binds to 127.0.0.1 by default.  Binding to any other address requires a
  token; the server refuses to start without one.
* With a token, every request needs it: the ``fanout_token`` cookie (set by
  opening any page with ``?token=...`` or through ``/login``), an
  ``Authorization: Bearer`` header or an ``X-Fanout-Token`` header.
* Without a token (loopback only), the ``Host`` header must name a loopback
  address, which defeats DNS rebinding.
* Every POST must carry the page's CSRF value (a hidden form field) or the token
  in a header, and a cross-site ``Origin``/``Sec-Fetch-Site`` is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import ipaddress
import json
import logging
import os
import secrets
import threading
import time
from http import HTTPStatus
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from .._celery.inspect import fanout_queues, live_workers, queue_depths
from .._core.run_record import EVENT
from .._errors import ConfigError, FanoutError
from .._ops.locate import Target
from .._ops.render import decrypted
from .._ops.stats import (
    DataQuery,
    day_counts,
    function_stats,
    overview,
    overview_json,
    search_runs,
)
from .._redis.history import Page, RunSummary, parse_time
from .._redis.insight import run_events
from . import pages
from .overview import overview_page

log = logging.getLogger("fanout.dashboard")

COOKIE = "fanout_token"
MAX_BODY = 1 << 20
_STATIC = {"style.css": "text/css; charset=utf-8", "app.js": "text/javascript; charset=utf-8"}


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


class _Redirect(Exception):
    def __init__(self, location: str) -> None:
        self.location = location


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class DashboardServer:
    """A dashboard for one :class:`~fanout._ops.locate.Target`."""

    def __init__(self, target: Target, *, host: str = "127.0.0.1", port: int = 8289,
                 token: str | None = None) -> None:
        if not is_loopback(host) and not token:
            raise ConfigError(
                f"the dashboard would be reachable from other machines on {host}: it needs an "
                "access token there (--token or FANOUT_DASHBOARD_TOKEN), or bind to 127.0.0.1"
            )
        if token is not None and len(token) < 8:
            raise ConfigError("the dashboard token must be at least 8 characters")
        self.target = target
        self.token = token
        self.csrf = (hmac.new(token.encode(), b"fanout-csrf", hashlib.sha256).hexdigest()
                     if token else secrets.token_urlsafe(24))
        handler = type("Handler", (_Handler,), {"dash": self})
        try:
            self.httpd = http.server.ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self.httpd.daemon_threads = True
        self.host = host
        self.port = int(self.httpd.server_address[1])
        self._thread: threading.Thread | None = None
        self._fleet_lock = threading.Lock()
        self._fleet_at = 0.0
        self._fleet: tuple[dict[str, int | None], list[str] | None] = ({}, None)

    def fleet(self, max_age: float = 5.0) -> tuple[dict[str, int | None], list[str] | None]:
        """Queue depths and live workers, asked of the broker at most every ``max_age``
        seconds (a ping waits its whole timeout for answers)."""
        with self._fleet_lock:
            if time.monotonic() - self._fleet_at > max_age:
                app = self.target.app
                try:
                    depths = queue_depths(app, fanout_queues(app))
                except Exception:  # noqa: BLE001 - the broker is down: say so, keep serving
                    depths = {name: None for name in fanout_queues(app)}
                self._fleet = (depths, live_workers(app, timeout=1.0))
                self._fleet_at = time.monotonic()
            return self._fleet

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "[::]") else host
        return f"http://{shown}:{self.port}/"

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.2)

    def start(self) -> DashboardServer:
        self._thread = threading.Thread(target=self.serve_forever, name="fanout-dashboard",
                                        daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


class _Handler(http.server.BaseHTTPRequestHandler):
    dash: DashboardServer
    _registry: Any = None
    server_version = "fanout-dashboard"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    # -- plumbing ----------------------------------------------------------------------

    def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "same-origin")
        self.send_header("Content-Security-Policy",
                         "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                         "frame-ancestors 'none'; form-action 'self'")
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _html(self, status: int, title: str, body: str, **flash: str) -> None:
        where = _redact(self.dash.target.redis_url)
        text = pages.page(title, body, path=urlsplit(self.path).path, where=where, **flash)
        self._send(status, text.encode(), "text/html; charset=utf-8")

    def _json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data, default=str).encode(), "application/json")

    def _redirect(self, location: str, cookie: str | None = None) -> None:
        headers = {"Location": location}
        if cookie:
            headers["Set-Cookie"] = cookie
        self._send(HTTPStatus.SEE_OTHER, b"", "text/plain", headers)

    def _cookie_token(self) -> str | None:
        for part in self.headers.get("Cookie", "").split(";"):
            k, _, v = part.strip().partition("=")
            if k == COOKIE:
                return v
        return None

    def _header_token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return self.headers.get("X-Fanout-Token")

    def _valid(self, candidate: str | None) -> bool:
        tok = self.dash.token
        return bool(tok and candidate and hmac.compare_digest(candidate.encode(), tok.encode()))

    def _host_ok(self) -> bool:
        if self.dash.token:
            return True
        host = self.headers.get("Host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return is_loopback(name.strip("[]"))

    def _authorized(self) -> bool:
        if not self.dash.token:
            return True
        return self._valid(self._cookie_token()) or self._valid(self._header_token())

    def _cookie_for(self, token: str) -> str:
        return f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"

    # -- GET ---------------------------------------------------------------------------

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if not self._host_ok():
            self._send(HTTPStatus.FORBIDDEN, b"forbidden host", "text/plain")
            return
        if url.path == "/healthz":
            self._send(HTTPStatus.OK, b"ok", "text/plain")
            return
        if url.path.startswith("/static/"):
            self._static(url.path[len("/static/"):])
            return
        if self.dash.token and ("token" in q or url.path == "/login"):
            if self._valid(q.get("token")):
                rest = {k: v for k, v in q.items() if k != "token"}
                dest = "/runs" if url.path == "/login" else url.path + (
                    "?" + urlencode(rest) if rest else "")
                self._redirect(dest, self._cookie_for(q["token"]))
            else:
                self._html(HTTPStatus.UNAUTHORIZED, "Sign in", pages.login_page(bad="token" in q))
            return
        if not self._authorized():
            if url.path.startswith("/api/") or url.path == "/metrics":
                self._json(HTTPStatus.UNAUTHORIZED, {"error": "a valid token is required"})
            else:
                self._html(HTTPStatus.UNAUTHORIZED, "Sign in", pages.login_page(bad=False))
            return
        try:
            self._route_get(url.path, q)
        except _Redirect as r:
            self._redirect(r.location)
        except _HttpError as exc:
            if url.path.startswith("/api/"):
                self._json(exc.status, {"error": str(exc)})
            else:
                self._html(exc.status, "Not found" if exc.status == 404 else "Error",
                           f'<h1>{pages.h(exc)}</h1><p><a href="/runs">back to runs</a></p>')
        except (FanoutError, ValueError) as exc:
            if url.path.startswith("/api/"):
                self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            else:
                self._html(HTTPStatus.BAD_REQUEST, "Error",
                           f'<h1>Bad request</h1><p class="err-text">{pages.h(exc)}</p>')

    def _metrics(self) -> None:
        """Prometheus metrics of the whole fleet (the counts live in the store)."""
        from .._ops.prometheus import CONTENT_TYPE, registry_for, render

        try:
            if self._registry is None:
                rt = self.dash.target.runtime
                type(self)._registry = registry_for(lambda: rt.store)
            body = render(self._registry)
        except ConfigError as exc:  # prometheus_client is not installed
            self._send(HTTPStatus.NOT_IMPLEMENTED, f"{exc}\n".encode(), "text/plain")
            return
        self._send(HTTPStatus.OK, body, CONTENT_TYPE)

    def _names(self, runs: list[RunSummary]) -> dict[str, str]:
        events = run_events(self.dash.target.runtime.store, [r.run_id for r in runs])
        return {r.run_id: str(ev.get("name", "")) for r, ev in zip(runs, events, strict=True) if ev}

    def _search(self, path: str, q: dict[str, str], fn_key: str | None) -> None:
        """``q``: a run id or an event id opens it; ``field=value`` lists the runs whose
        triggering event has that value in its data."""
        t = self.dash.target
        text = q["q"].strip()
        if path == "/runs" and " " not in text and "=" not in text:
            if t.runtime.store.run_fields(text):
                raise _Redirect(f"/runs/{quote(text)}")
            if t.history.event(text) is not None:
                raise _Redirect(f"/events/{quote(text)}")
            raise _HttpError(404, f"no run or event has the id {text!r}; to search the "
                                  "events' data, write field=value (for example user.id=42)")
        query = DataQuery.parse(text)
        found, scanned, complete = search_runs(t.history, query, fn_key=fn_key,
                                               limit=min(int(q.get("limit") or 50), 500))
        if path == "/api/runs":
            self._json(200, {"runs": [r.to_json() for r in found], "scanned": scanned,
                             "complete": complete})
            return
        runs = Page(found, None, scanned, complete=complete)
        self._html(200, "Runs", pages.runs_page(runs, t.functions(), q,
                                                names=self._names(found), csrf=self.dash.csrf))

    def _static(self, name: str) -> None:
        ctype = _STATIC.get(name)
        if ctype is None:
            self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
            return
        body = resources.files("fanout._dashboard").joinpath("static", name).read_bytes()
        self._send(HTTPStatus.OK, body, ctype)

    def _route_get(self, path: str, q: dict[str, str]) -> None:
        t = self.dash.target
        hist = t.history
        flash = {"msg": q.get("msg", ""), "err": q.get("err", "")}
        if path == "/metrics":
            self._metrics()
            return
        if path in ("/", "/overview", "/api/overview"):
            depths, workers = self.dash.fleet()
            fns = t.functions()
            ov = overview(hist, queues=depths, workers=workers, functions=len(fns))
            fstats = [function_stats(hist, fn, now=ov.now) for fn in fns]
            if path == "/api/overview":
                self._json(200, overview_json(ov, fstats))
            else:
                self._html(200, "Overview", overview_page(ov, fns, fstats), **flash)
            return
        if path == "/functions":
            paused = {fn.key: pinfo for fn in t.functions()
                      if (pinfo := t.pause_info(fn.key)) is not None}
            self._html(200, "Functions", pages.functions_page(t.functions(), self.dash.csrf, paused),
                       **flash)
        elif path == "/api/functions":
            self._json(200, [fn.describe() for fn in t.functions()])
        elif path in ("/runs", "/api/runs"):
            fn_key = t.function(q["fn"]).key if q.get("fn") else None
            if q.get("q", "").strip():
                self._search(path, q, fn_key)
                return
            runs = hist.runs(fn_key=fn_key, status=q.get("status") or None,
                             since=parse_time(q["since"]) if q.get("since") else None,
                             until=parse_time(q["until"]) if q.get("until") else None,
                             limit=min(int(q.get("limit") or 50), 500), cursor=q.get("cursor") or None,
                             version=q.get("version") or None)
            if path == "/api/runs":
                self._json(200, {"runs": [r.to_json() for r in runs.items],
                                 "next_cursor": runs.next_cursor})
            else:
                counts = day_counts(hist, fn_key=fn_key)
                self._html(200, "Runs", pages.runs_page(runs, t.functions(), q, counts=counts,
                                                        names=self._names(runs.items),
                                                        csrf=self.dash.csrf), **flash)
        elif path.startswith("/runs/") or path.startswith("/api/runs/"):
            run_id = path.rsplit("/", 1)[1]
            fields = t.runtime.store.run_fields(run_id)
            info = t.runtime.store.run_info(run_id, fields)
            if info is None:
                raise _HttpError(404, f"no run {run_id} (unknown, or past its retention)")
            key = os.environ.get("FANOUT_ENCRYPTION_KEY")
            if key:  # decrypted only when the dashboard was started with the key
                info = decrypted(info, key)
            if path.startswith("/api/"):
                from .._ops.render import run_json

                self._json(200, run_json(info, fields))
            else:
                event = json.loads(fields.get(EVENT, "null"))
                self._html(200, f"Run {run_id}", pages.run_page(info, fields, event, self.dash.csrf),
                           **flash)
        elif path in ("/events", "/api/events"):
            after = float(q["after"]) if q.get("after") else None
            events = hist.events(name=q.get("name") or None, since=after,
                                 after_exclusive=after is not None,
                                 limit=min(int(q.get("limit") or 50), 500), cursor=q.get("cursor") or None)
            if path == "/api/events":
                self._json(200, {"events": [e.to_json() for e in events.items],
                                 "next_cursor": events.next_cursor})
            else:
                self._html(200, "Events", pages.events_page(events, self.dash.csrf,
                                                            q.get("name", "")), **flash)
        elif path.startswith("/events/"):
            eid = path.rsplit("/", 1)[1]
            ev = hist.event(eid)
            if ev is None:
                raise _HttpError(404, f"no event {eid} (unknown, or past its retention)")
            self._html(200, f"Event {eid}", pages.event_page(ev, hist.runs_of_event(eid),
                                                             self.dash.csrf), **flash)
        else:
            raise _HttpError(404, f"no page {path}")

    # -- POST --------------------------------------------------------------------------

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        if not self._host_ok():
            self._send(HTTPStatus.FORBIDDEN, b"forbidden host", "text/plain")
            return
        if not self._authorized():
            self._json(HTTPStatus.UNAUTHORIZED, {"error": "a valid token is required"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "request body too large"})
            return
        raw = self.rfile.read(length).decode("utf-8", "replace")
        parsed = parse_qs(raw, keep_blank_values=True)
        form = {k: v[-1] for k, v in parsed.items()}
        # The runs list's checkboxes: every selected run, comma-joined.
        form["run_ids"] = ",".join(v for v in parsed.get("run_ids", []) if v)
        problem = self._csrf_problem(form)
        if problem:
            self._json(HTTPStatus.FORBIDDEN, {"error": problem})
            return
        back = urlsplit(self.headers.get("Referer", "")).path or "/runs"
        try:
            location, msg = self._action(url.path, form)
        except _HttpError as exc:
            self._json(exc.status, {"error": str(exc)})
            return
        except (FanoutError, ValueError) as exc:
            self._redirect(f"{back}?err={quote(str(exc))}")
            return
        self._redirect(f"{location}?msg={quote(msg)}")

    def _csrf_problem(self, form: dict[str, str]) -> str | None:
        origin = self.headers.get("Origin")
        if origin and origin != "null":
            if urlsplit(origin).netloc != self.headers.get("Host", ""):
                return "cross-origin request refused"
        site = self.headers.get("Sec-Fetch-Site")
        if site and site not in ("same-origin", "none"):
            return "cross-site request refused"
        sent = form.get("csrf", "")
        if sent and hmac.compare_digest(sent.encode(), self.dash.csrf.encode()):
            return None
        if self._valid(self._header_token()):
            return None
        return "missing or invalid CSRF value: reload the page and try again"

    def _bulk(self, form: dict[str, str]) -> tuple[str, str]:
        """Cancel or replay every run selected on the runs list."""
        t = self.dash.target
        ids = [i for i in form.get("run_ids", "").split(",") if i]
        what = form.get("bulk", "")
        back = form.get("back") or "/runs"
        if not back.startswith("/runs"):
            back = "/runs"
        if not ids:
            raise ValueError("select at least one run first")
        if len(ids) > 500:
            raise ValueError(f"{len(ids)} runs selected; act on at most 500 at once")
        done, skipped, failed = 0, [], []
        for rid in ids:
            try:
                if what == "cancel":
                    head = t.cancel(rid, "cancelled from the dashboard (bulk)")
                    if head in ("cancelled", "flagged"):
                        done += 1
                    else:
                        skipped.append(rid)
                elif what == "replay":
                    t.replay(rid)
                    done += 1
                else:
                    raise _HttpError(400, f"unknown bulk action {what!r}: cancel or replay")
            except (FanoutError, ValueError) as exc:
                failed.append(f"{rid}: {exc}")
        verb = "Cancelled" if what == "cancel" else "Replayed"
        return back.split("?")[0], _bulk_summary(verb, done, skipped, failed)

    def _action(self, path: str, form: dict[str, str]) -> tuple[str, str]:
        t = self.dash.target

        def need(name: str) -> str:
            value = form.get(name, "").strip()
            if not value:
                raise _HttpError(400, f"missing form field {name!r}")
            return value

        if path == "/actions/cancel":
            rid = need("run_id")
            head = t.cancel(rid, form.get("reason") or "cancelled from the dashboard")
            text = {"cancelled": "Run cancelled.",
                    "flagged": "Cancelling: the run stops after its running step.",
                    "ended": "The run had already ended.", "missing": "No such run."}
            return f"/runs/{quote(rid)}", text.get(head, head)
        if path == "/actions/replay":
            new = t.replay(need("run_id"))
            return f"/runs/{quote(new)}", f"Replay started: run {new}."
        if path == "/actions/rerun":
            rid, step = need("run_id"), need("step")
            new = t.rerun(rid, step)
            return f"/runs/{quote(new)}", f"Rerun from step {step} started: run {new}."
        if path == "/actions/bulk":
            return self._bulk(form)
        if path == "/actions/pause":
            fn = t.function(need("fn"))
            t.pause(fn.key, "paused from the dashboard")
            return "/functions", f"{fn.key} paused: its runs wait until you resume it."
        if path == "/actions/resume":
            fn = t.function(need("fn"))
            resumed, skipped = t.resume(fn.key, skip_backlog=bool(form.get("skip_backlog")))
            return "/functions", (f"{fn.key} resumed: {resumed} waiting pass(es) continue"
                                  + (f", {skipped} run(s) skipped" if skipped else "") + ".")
        if path in ("/actions/send", "/actions/invoke"):
            try:
                data = json.loads(form.get("data") or "{}")
            except ValueError as exc:
                raise ValueError(f"the data is not valid JSON: {exc}") from None
            if not isinstance(data, dict):
                raise ValueError("the data must be a JSON object")
            if path == "/actions/invoke":
                rid = t.invoke(need("fn"), data)
                return f"/runs/{quote(rid)}", f"Invoked: run {rid}."
            eid = t.send(need("name"), data)
            return f"/events/{quote(eid)}", f"Event {eid} sent."
        raise _HttpError(404, f"no action {path}")


def _bulk_summary(verb: str, done: int, skipped: list[str], failed: list[str]) -> str:
    parts = [f"{verb} {done} run(s)."]
    if skipped:
        parts.append(f"{len(skipped)} skipped (already ended): {', '.join(skipped[:5])}"
                     + (" ..." if len(skipped) > 5 else "") + ".")
    if failed:
        parts.append(f"{len(failed)} failed: {'; '.join(failed[:3])}.")
    return " ".join(parts)


def serve(target: Target, *, host: str = "127.0.0.1", port: int = 8289,
          token: str | None = None) -> None:
    """Serve the dashboard until interrupted."""
    server = DashboardServer(target, host=host, port=port, token=token)
    import sys

    sys.stderr.write(f"fanout dashboard on {server.url} (Ctrl-C to stop)\n")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
