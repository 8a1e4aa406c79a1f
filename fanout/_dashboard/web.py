"""The dashboard's HTTP vocabulary: a request, a reply, the errors that end one, and
the only paths a redirect may go to."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

MAX_BODY = 1 << 20


@dataclass
class Reply:
    status: int
    body: bytes = b""
    ctype: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Redirect(Exception):
    def __init__(self, location: str) -> None:
        self.location = location


class Request:
    """One request: method, path, query, lower-case headers, cookies, client address."""

    def __init__(self, environ: dict[str, Any], trusted: list[Any]) -> None:
        self.environ = environ
        self.method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        self.path = str(environ.get("PATH_INFO") or "/")
        self.query = {k: v[-1] for k, v in parse_qs(str(environ.get("QUERY_STRING", "")),
                                                     keep_blank_values=True).items()}
        self.headers = {k[5:].replace("_", "-").lower(): str(v) for k, v in environ.items()
                        if k.startswith("HTTP_")}
        if environ.get("CONTENT_TYPE"):
            self.headers["content-type"] = str(environ["CONTENT_TYPE"])
        peer = str(environ.get("REMOTE_ADDR") or "")
        self.addr, self.https = peer, environ.get("wsgi.url_scheme") == "https"
        if trusted and _trusted(peer, trusted):
            proto = self.headers.get("x-forwarded-proto", "").split(",")[-1].strip().lower()
            if proto:
                self.https = proto == "https"
            hops = [a.strip() for a in self.headers.get("x-forwarded-for", "").split(",")
                    if a.strip()]
            while hops and _trusted(hops[-1], trusted):
                hops.pop()
            if hops:
                self.addr = hops[-1]

    def cookie(self, name: str) -> str | None:
        for part in self.headers.get("cookie", "").split(";"):
            k, _, v = part.strip().partition("=")
            if k == name:
                return v
        return None

    def bearer(self) -> str | None:
        auth = self.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return self.headers.get("x-fanout-token")

    def form(self) -> tuple[dict[str, str], list[str]]:
        """The urlencoded body: last value of each field, and every ``run_ids`` value."""
        try:
            length = int(self.environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise HttpError(400, "invalid Content-Length") from None
        if length > MAX_BODY:
            raise HttpError(413, "request body too large")
        raw = self.environ["wsgi.input"].read(length).decode("utf-8", "replace") if length else ""
        parsed = parse_qs(raw, keep_blank_values=True)
        return {k: v[-1] for k, v in parsed.items()}, [v for v in parsed.get("run_ids", []) if v]

    @property
    def is_api(self) -> bool:
        return self.path.startswith("/api/") or self.path == "/metrics"


def local_path(value: str, default: str) -> str:
    """``value`` if it is a path on this server (no scheme, host, ``//``, backslash or
    control character: never an open redirect), else ``default``."""
    if (not value.startswith("/") or value.startswith("//") or "\\" in value
            or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value)):
        return default
    parts = urlsplit(value)
    return value if not parts.scheme and not parts.netloc else default


def _trusted(addr: str, nets: list[Any]) -> bool:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return any(ip in n for n in nets)
