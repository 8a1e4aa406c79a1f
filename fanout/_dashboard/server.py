"""The dashboard's server: the WSGI app (:mod:`.app`) served by waitress.

Security model (docs/howto/dashboard.md says the same for users):

* **Where it listens.** 127.0.0.1 by default. Any other address needs at least one
  token; the server refuses to start without one. Without tokens (loopback only) a
  request whose ``Host`` is not a loopback name is refused (DNS rebinding), and
  every request acts as ``local``, an operator.
* **Tokens.** Each has a name, recorded with every action, and a role:
  ``operator`` may act (cancel, replay, rerun, bulk actions, pause and resume, send
  an event, invoke), ``read-only`` may only look; a read-only POST to an action gets
  403. ``--tokens`` / ``FANOUT_DASHBOARD_TOKENS`` (or ``--tokens-file`` /
  ``FANOUT_DASHBOARD_TOKENS_FILE``) give ``name:role:token`` entries, the token or
  its ``sha256:<hex>``; ``--token`` / ``FANOUT_DASHBOARD_TOKEN`` is one operator
  token named ``token``. Only the SHA-256 of a token is held in memory.
* **Signing in** is a POST of the token to ``/login``; a token in a URL
  (``?token=``) is refused with a page that says so. The cookie (``fanout_session``)
  holds a session signed with HMAC-SHA256 under the server's secret
  (``FANOUT_DASHBOARD_SECRET``, else random per process): the token's name, role,
  expiry (12 h by default) and a fingerprint of the token, never the token. It is
  ``HttpOnly``, ``SameSite=Strict``, ``Path=/``, has a ``Max-Age``, and is
  ``Secure`` when the request came over HTTPS: ``X-Forwarded-Proto: https`` counts
  only from an address in ``FANOUT_DASHBOARD_TRUSTED_PROXIES``; or always, with
  ``FANOUT_DASHBOARD_SECURE_COOKIE=1``. Scripts send ``Authorization: Bearer
  <token>`` (or ``X-Fanout-Token``) instead of a cookie.
* **Wrong tokens** (at sign-in or in a header) are throttled per client address:
  after n failures in a row the address waits 2**(n-1) s (up to 15 min) and gets
  429 meanwhile; the first failure of an episode is logged at WARNING, not the rest.
* **Forged requests.** Every POST must carry the session's CSRF value (a hidden
  form field) or a token in a header, and a cross-site ``Origin`` or
  ``Sec-Fetch-Site`` is refused (sign-in included).
* **What a page shows.** Every value is HTML-escaped; pages have a strict
  Content-Security-Policy (no inline script), ``X-Frame-Options: DENY`` and
  ``no-store``. A flash message (``?msg=``, ``?err=``) is shown only with the
  server's signature, so a crafted link cannot put text in the page.
* **Audit.** Every action is recorded with the token's name, its role and the
  client address (``fanout/_redis/audit.py``): on ``/audit``, and on the page of
  the run, event or function it touched.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from .._celery.inspect import fanout_queues, live_workers, queue_depths
from .._errors import ConfigError
from .._http.wsgi_server import Server
from .._ops.locate import Target
from .app import DashboardApp, is_loopback
from .auth import Token, legacy_token, parse_tokens

log = logging.getLogger("fanout.dashboard")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_proxies(text: str | Sequence[str]) -> list[Network]:
    """Trusted proxies: addresses or networks (``10.0.0.0/8``), comma-separated."""
    items = text.replace(",", " ").split() if isinstance(text, str) else list(text)
    out = []
    for item in items:
        try:
            out.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            raise ConfigError(f"FANOUT_DASHBOARD_TRUSTED_PROXIES: {item!r} is not an address "
                              "or a network such as 10.0.0.0/8") from None
    return out


def tokens_from(token: str | None = None, tokens: str | Sequence[Token] | None = None,
                tokens_file: str | None = None) -> list[Token]:
    """Every configured token: the single ``token`` (an operator named ``token``),
    ``name:role:token`` entries, and the entries of ``tokens_file``."""
    out: list[Token] = []
    if token:
        out.append(legacy_token(token))
    if isinstance(tokens, str):
        out.extend(parse_tokens(tokens, what="--tokens / FANOUT_DASHBOARD_TOKENS"))
    elif tokens:
        out.extend(tokens)
    if tokens_file:
        try:
            text = Path(tokens_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read the tokens file {tokens_file}: "
                              f"{exc.strerror or exc}") from None
        out.extend(parse_tokens(text, what=f"tokens file {tokens_file}"))
    from .auth import check_tokens

    return check_tokens(out, what="the dashboard tokens")


def _env_flag(name: str) -> bool | None:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return None
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r}: use 1 or 0")


class DashboardServer:
    """A dashboard for one :class:`~fanout._ops.locate.Target`, served by waitress."""

    def __init__(self, target: Target, *, host: str = "127.0.0.1", port: int = 8289,
                 token: str | None = None, tokens: str | Sequence[Token] | None = None,
                 tokens_file: str | None = None, secret: str | None = None,
                 session_seconds: float | None = None,
                 trusted_proxies: str | Sequence[str] | None = None,
                 secure_cookie: bool | None = None, threads: int = 8) -> None:
        all_tokens = tokens_from(token, tokens, tokens_file)
        if not is_loopback(host) and not all_tokens:
            raise ConfigError(
                f"the dashboard would be reachable from other machines on {host}: it needs an "
                "access token there (--token or FANOUT_DASHBOARD_TOKEN, or named tokens with "
                "--tokens or FANOUT_DASHBOARD_TOKENS), or bind to 127.0.0.1"
            )
        env_secret = os.environ.get("FANOUT_DASHBOARD_SECRET") or None
        ttl = session_seconds
        if ttl is None and os.environ.get("FANOUT_DASHBOARD_SESSION_SECONDS"):
            try:
                ttl = float(os.environ["FANOUT_DASHBOARD_SESSION_SECONDS"])
            except ValueError:
                raise ConfigError("FANOUT_DASHBOARD_SESSION_SECONDS must be a number of "
                                  "seconds") from None
        proxies = parse_proxies(trusted_proxies if trusted_proxies is not None else
                                os.environ.get("FANOUT_DASHBOARD_TRUSTED_PROXIES", ""))
        secure = secure_cookie if secure_cookie is not None else _env_flag(
            "FANOUT_DASHBOARD_SECURE_COOKIE")
        self.app = DashboardApp(target, tokens=all_tokens, secret=secret or env_secret,
                                session_seconds=ttl, trusted_proxies=proxies,
                                secure_cookie=secure, fleet=self.fleet)
        self.tokens = all_tokens
        self.http = Server(self.app, host, port, threads=threads, name="fanout-dashboard")
        self.host = host
        self.port = self.http.port
        self._fleet_lock = threading.Lock()
        self._fleet_at = 0.0
        self._fleet: tuple[dict[str, int | None], list[str] | None] = ({}, None)

    def fleet(self, max_age: float = 10.0) -> tuple[dict[str, int | None], list[str] | None]:
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
    def target(self) -> Target:
        return self.app.target

    @target.setter
    def target(self, value: Target) -> None:
        self.app.target = value

    @property
    def url(self) -> str:
        return self.http.url + "/"

    def serve_forever(self) -> None:
        self.http.serve_forever()

    def start(self) -> DashboardServer:
        self.http.start()
        return self

    def shutdown(self) -> None:
        self.http.stop()


def serve(target: Target, *, host: str = "127.0.0.1", port: int = 8289,
          token: str | None = None, tokens: str | None = None,
          tokens_file: str | None = None) -> None:
    """Serve the dashboard until interrupted."""
    server = DashboardServer(target, host=host, port=port, token=token, tokens=tokens,
                             tokens_file=tokens_file)
    who = ", ".join(f"{t.name} ({t.role})" for t in server.tokens) or "none: loopback only"
    sys.stderr.write(f"fanout dashboard on {server.url} (Ctrl-C to stop); tokens: {who}\n")
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
