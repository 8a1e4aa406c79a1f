"""The event ingestion endpoint, free of any web framework.

:class:`Ingest` answers one request in two halves: :meth:`Ingest.head` looks at the
method, the route and the headers (authentication, content type, declared length)
before the body is read; :meth:`Ingest.finish` checks the signature, parses and
validates the body, and publishes.  The WSGI and ASGI adapters below, and the
Django view, only move bytes in and out.

Routes (relative to where the app is mounted):

* ``POST /`` or ``POST /events`` with an ingest key (``Authorization: Bearer <key>``
  or ``X-Fanout-Key: <key>``); the key names the source.
* ``POST /webhooks/<source>``: authenticated by the source's webhook signature, or by
  a key of that source.

The body is one JSON event or a JSON array of them, checked, deduplicated and
published by ``client.send_sync`` (so the client's middleware applies): all events
or none, in one publish.
Nothing here waits for a worker.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._core.event import Event, prepare_batch
from .._core.ids import _digest_id
from .._errors import ConfigError, EventError, MiddlewareError, PublishError
from .._redis.ingest_rate import IngestRate
from .._redis.ingest_store import IngestStore
from .._redis.store import StoreError
from .ingest_keys import Grant, IngestKeys, check_source
from .signing import SignatureError, Webhook

if TYPE_CHECKING:
    from .._client import Fanout

log = logging.getLogger("fanout.http")

DEFAULT_MAX_BODY = 1024 * 1024
KEY_HEADER = "x-fanout-key"
IDEMPOTENCY_HEADER = "idempotency-key"


@dataclass
class Response:
    """What to answer: a status, a JSON body and extra headers."""

    status: int
    body: dict[str, Any]
    headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def reason(self) -> str:
        return _REASONS.get(self.status, "")

    def encoded(self) -> bytes:
        return json.dumps(self.body, ensure_ascii=False).encode()

    def all_headers(self, length: int) -> list[tuple[str, str]]:
        return [("Content-Type", "application/json"), ("Content-Length", str(length)),
                ("Cache-Control", "no-store"), *self.headers]


_REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized",
            403: "Forbidden", 404: "Not Found", 429: "Too Many Requests", 405: "Method Not Allowed", 411: "Length Required",
            413: "Payload Too Large", 415: "Unsupported Media Type",
            500: "Internal Server Error", 503: "Service Unavailable"}


def _error(status: int, message: str, *, retry_after: int | None = None,
           **extra: Any) -> Response:
    headers = []
    if retry_after is not None:
        headers.append(("Retry-After", str(retry_after)))
    if status == 401:
        headers.append(("WWW-Authenticate", 'Bearer realm="fanout"'))
    elif status == 503:
        headers.append(("Retry-After", "5"))
    elif status == 405:
        headers.append(("Allow", "POST"))
    return Response(status, {"error": message, **extra}, headers)


@dataclass
class Pending:
    """A request whose head was accepted: its source and how it must be signed."""

    source: str
    webhook: Webhook | None
    headers: Mapping[str, str]
    grant: Grant | None = None


def route(path: str) -> tuple[bool, str | None]:
    """``(known, source)`` for a path: ``source`` is set for ``/webhooks/<source>``."""
    parts = [p for p in path.split("/") if p]
    if not parts or parts == ["events"]:
        return True, None
    if len(parts) == 2 and parts[0] == "webhooks":
        return True, parts[1]
    return False, None


class Ingest:
    """The endpoint's logic for one client; see :func:`fanout.http.ingest_app`."""

    def __init__(
        self,
        client: Fanout,
        *,
        keys: IngestKeys | None = None,
        webhooks: Mapping[str, Webhook] | None = None,
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        from .._client import Fanout

        if not isinstance(client, Fanout):
            raise ConfigError(f"client must be a fanout.Fanout, not {type(client).__name__}")
        if keys is not None and not isinstance(keys, IngestKeys):
            raise ConfigError("keys must be a fanout.http.IngestKeys")
        hooks = dict(webhooks or {})
        for source, hook in hooks.items():
            check_source(source)
            if not isinstance(hook, Webhook):
                raise ConfigError(f"webhooks[{source!r}] must be a fanout.http.Webhook")
        if keys is None and not hooks:
            raise ConfigError("the endpoint needs keys=IngestKeys(...) or webhooks={...}: "
                              "it never accepts unauthenticated events")
        if not (isinstance(max_body, int) and 1 <= max_body <= 64 * 1024 * 1024):
            raise ConfigError("max_body must be a number of bytes from 1 to 64 MiB")
        self.client = client
        self.keys = keys
        self.webhooks = hooks
        self.max_body = max_body
        self._seen = IngestStore(client.runtime.store)
        self._rate = IngestRate(client.runtime.store)

    # -- the head ---------------------------------------------------------------------

    def head(self, method: str, path_source: str | None,
             headers: Mapping[str, str]) -> Pending | Response:
        """Check what can be checked before reading the body. ``headers``: lower-case names."""
        if method != "POST":
            return _error(405, f"use POST to send events, not {method}")
        key = _key_of(headers)
        source: str | None = None
        grant: Grant | None = None
        if key:
            if self.keys is None:
                return _error(401, "this endpoint takes no ingest keys; sign the request")
            try:
                grant = self.keys.grant(key)
            except StoreError as exc:
                return _error(503, f"cannot check the key: Redis is unavailable ({exc})")
            if grant is None:
                return _error(401, "unknown or revoked ingest key")
            source = grant.source
            if path_source is not None and source != path_source:
                return _error(401, f"this key belongs to another source, not {path_source!r}")
        elif path_source is None:
            return _error(401, "missing ingest key: send 'Authorization: Bearer <key>' "
                               "(create one with 'fanout keys create SOURCE')")
        elif path_source not in self.webhooks:
            return _error(401, f"source {path_source!r} accepts only ingest keys: send "
                               "'Authorization: Bearer <key>'")
        src = source or path_source
        assert src is not None
        ctype = headers.get("content-type", "")
        problem = _content_type_problem(ctype)
        if problem:
            return _error(415, problem)
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return _error(400, f"invalid Content-Length {length!r}")
            if int(length) > self.max_body:
                return self.too_large()
        # What a transform sees: the request's headers, less its credentials.
        rest = {k: v for k, v in headers.items() if k not in ("authorization", KEY_HEADER)}
        return Pending(source=src, webhook=self.webhooks.get(src), headers=rest, grant=grant)

    def too_large(self) -> Response:
        return _error(413, f"the body is larger than the limit of {self.max_body} bytes; "
                           "send fewer events per request")

    # -- the body ---------------------------------------------------------------------

    def finish(self, pending: Pending, body: bytes) -> Response:
        """Verify, parse, validate and publish; the answer to send."""
        if len(body) > self.max_body:
            return self.too_large()
        token = None
        if pending.webhook is not None:
            try:
                token = pending.webhook.verify(body, pending.headers)
            except SignatureError as exc:
                return _error(401, str(exc))
        try:
            prepared = self._prepare(pending, body)
        except _BadBody as exc:
            return _error(400, str(exc))
        except EventError as exc:
            return _error(400, str(exc))
        ids = [ev.id or "" for ev, _ in prepared]
        refused = self._limited(pending, [ev.name for ev, _ in prepared])
        if refused is not None:
            return refused
        if token is not None:
            assert pending.webhook is not None
            try:
                fresh = self._seen.remember(token, pending.webhook.replay_window)
            except StoreError as exc:
                return _error(503, f"Redis is unavailable ({exc}); nothing was published")
            if not fresh:
                return _error(401, "this signature was already used: a replayed request")
        try:
            # Through the client, so its middleware (before/after_send_events,
            # encryption) sees these events as it sees any other send.
            self.client.send_sync([ev for ev, _ in prepared])
        except EventError as exc:
            self._forget(token)
            return _error(400, str(exc))
        except MiddlewareError as exc:
            # A hook after the publish may have failed: keep the signature remembered
            # rather than let the same request publish twice.
            log.error("ingest from %s: %s", pending.source, exc)
            return _error(500, str(exc))
        except PublishError as exc:
            self._forget(token)
            log.warning("ingest from %s failed: %s", pending.source, exc)
            return _error(503, f"{exc}; send the request again with these ids", ids=ids)
        log.debug("ingest from %s: %d event(s) %s", pending.source, len(ids), ids[0])
        return Response(202, {"ids": ids, "source": pending.source})

    def _limited(self, pending: Pending, names: list[str]) -> Response | None:
        """403 for an event name outside the key's patterns, 429 over its rate."""
        grant = pending.grant
        if grant is None:
            return None
        lim = grant.limits
        outside = sorted({n for n in names if not lim.allows(n)})
        if outside:
            log.warning("ingest from %s: key %s refused events outside its patterns: %s",
                        pending.source, grant.key_id, ", ".join(outside[:5]))
            return _error(403, f"this key may send only events matching "
                               f"{', '.join(lim.events)}; {', '.join(map(repr, outside[:5]))} "
                               "is outside them (nothing was published)",
                          allowed=list(lim.events))
        if lim.rate is None:
            return None
        limit, window = lim.per_window()
        try:
            got = self._rate.take(grant.key_id, len(names), limit, window)
        except StoreError as exc:
            return _error(503, f"cannot check the key's rate: Redis is unavailable ({exc})")
        if got.allowed:
            return None
        return _error(429, f"this key may send {lim.rate} events; these {len(names)} would "
                           f"make about {got.used:.0f}: retry in {got.retry_after} s (nothing "
                           "was published)", retry_after=got.retry_after, rate=lim.rate)

    def _forget(self, token: str | None) -> None:
        """Un-remember a signature whose request published nothing, so a retry passes."""
        if token is not None:
            try:
                self._seen.forget(token)
            except StoreError:
                pass

    def _prepare(self, pending: Pending, body: bytes) -> list[tuple[Event, str]]:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _BadBody(f"the body is not UTF-8 text ({exc.reason} at byte {exc.start})"
                           ) from None
        if not text.strip():
            raise _BadBody("the body is empty: send a JSON event or a JSON array of events")
        try:
            payload = json.loads(text, parse_constant=_no_constant)
        except json.JSONDecodeError as exc:
            raise _BadBody(f"the body is not valid JSON: {exc.msg} at line {exc.lineno} "
                           f"column {exc.colno}") from None
        except (ValueError, RecursionError) as exc:
            raise _BadBody(f"the body is not valid JSON: {exc}") from None
        hook = pending.webhook
        if hook is not None and hook.transform is not None:
            try:
                payload = hook.transform(payload, pending.headers)
            except EventError:
                raise
            except Exception as exc:  # noqa: BLE001 - the sender learns why, as a 400
                raise _BadBody(f"the webhook transform of source {pending.source!r} refused "
                               f"the body: {type(exc).__name__}: {exc}") from None
        elif isinstance(payload, list):
            for i, item in enumerate(payload):
                if not isinstance(item, dict):
                    raise _BadBody(f"events[{i}] is a JSON {_kind(item)}; each event is an "
                                   'object like {"name": "billing/paid", "data": {}}')
        elif not isinstance(payload, dict):
            raise _BadBody(f"the body is a JSON {_kind(payload)}; send an event object like "
                           '{"name": "billing/paid", "data": {}} or an array of them')
        idem = pending.headers.get(IDEMPOTENCY_HEADER)
        id_for: Callable[[int], str] | None = None
        if idem is not None:
            if not 1 <= len(idem) <= 256:
                raise _BadBody("Idempotency-Key must be 1 to 256 characters")
            source = pending.source

            def id_for(i: int) -> str:
                return _digest_id("http", source, idem, str(i))

        return prepare_batch(payload, id_for=id_for, max_bytes=self.client.max_event_bytes)


class _BadBody(Exception):
    pass


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _kind(value: Any) -> str:
    return {list: "array", dict: "object", str: "string", bool: "boolean",
            type(None): "null"}.get(type(value), "number")


def _key_of(headers: Mapping[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return headers.get(KEY_HEADER) or None


def _content_type_problem(value: str) -> str | None:
    mime, _, params = value.partition(";")
    if mime.strip().lower() != "application/json":
        shown = f"{mime.strip()!r}" if mime.strip() else "none"
        return f"the content type is {shown}; send the body as Content-Type: application/json"
    for param in params.split(";"):
        k, _, v = param.strip().partition("=")
        if k.lower() == "charset" and v.strip().strip('"').lower() not in ("utf-8", "utf8"):
            return f"charset {v.strip()!r} is not accepted; send UTF-8 JSON"
    return None


# -- WSGI --------------------------------------------------------------------------------


class IngestApp:
    """A WSGI application around :class:`Ingest`; ``.asgi`` is the ASGI one."""

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest

    @property
    def asgi(self) -> AsgiIngestApp:
        return AsgiIngestApp(self.ingest)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        resp = self._answer(environ)
        data = resp.encoded()
        start_response(f"{resp.status} {resp.reason}", resp.all_headers(len(data)))
        return [data]

    def _answer(self, environ: Mapping[str, Any]) -> Response:
        known, source = route(str(environ.get("PATH_INFO") or "/"))
        if not known:
            return _error(404, "no such endpoint: POST events to / or /webhooks/<source>")
        headers = wsgi_headers(environ)
        pending = self.ingest.head(str(environ.get("REQUEST_METHOD", "GET")).upper(), source,
                                   headers)
        if isinstance(pending, Response):
            return pending
        stream = environ["wsgi.input"]
        if "content-length" in headers:
            body = stream.read(int(headers["content-length"])) if headers["content-length"] else b""
        elif environ.get("wsgi.input_terminated"):
            body = stream.read(self.ingest.max_body + 1)
        else:
            return _error(411, "send a Content-Length header")
        return self.ingest.finish(pending, body)


def wsgi_headers(environ: Mapping[str, Any]) -> dict[str, str]:
    """Request headers from a WSGI environ, with lower-case names."""
    out = {k[5:].replace("_", "-").lower(): str(v) for k, v in environ.items()
           if k.startswith("HTTP_")}
    if environ.get("CONTENT_TYPE"):
        out["content-type"] = str(environ["CONTENT_TYPE"])
    if environ.get("CONTENT_LENGTH"):
        out["content-length"] = str(environ["CONTENT_LENGTH"])
    return out


# -- ASGI --------------------------------------------------------------------------------


class AsgiIngestApp:
    """An ASGI 3 application around :class:`Ingest` (Redis calls run in a thread)."""

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any],
                       send: Callable[..., Any]) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            raise ValueError(f"the ingest app serves HTTP, not {scope['type']!r}")
        resp = await self._answer(scope, receive)
        data = resp.encoded()
        await send({"type": "http.response.start", "status": resp.status,
                    "headers": [(k.lower().encode("latin-1"), v.encode("latin-1"))
                                for k, v in resp.all_headers(len(data))]})
        await send({"type": "http.response.body", "body": data})

    async def _answer(self, scope: dict[str, Any], receive: Callable[..., Any]) -> Response:
        import asyncio

        path = str(scope.get("path") or "/")
        root = str(scope.get("root_path") or "")
        if root and path.startswith(root):
            path = path[len(root):]
        known, source = route(path)
        if not known:
            return _error(404, "no such endpoint: POST events to / or /webhooks/<source>")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        pending = await asyncio.to_thread(self.ingest.head, str(scope.get("method", "GET")),
                                          source, headers)
        if isinstance(pending, Response):
            return pending
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return _error(400, "the client went away before the body was complete")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.ingest.max_body:
                return self.ingest.too_large()
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return await asyncio.to_thread(self.ingest.finish, pending, b"".join(chunks))
