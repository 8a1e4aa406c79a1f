"""Who may use the dashboard: named tokens with roles, signed sessions, throttling of
wrong tokens, and signed flash messages.

* A :class:`Token` has a name (recorded with every action), a role (``operator``
  may act, ``read-only`` may only look) and a secret, kept only as its SHA-256.
* Signing in (``POST /login``) sets a cookie holding a :class:`Session`: the name,
  the role, an expiry and a fingerprint of the token, signed with HMAC-SHA256 under
  the server's secret. The token itself is never in the cookie nor in a URL. A
  session dies when it expires, when its token is removed or changed, or when the
  secret changes.
* Wrong tokens are throttled per client address (:class:`Throttle`): after the
  n-th failure in a row the address waits 2**(n-1) seconds (at most 15 minutes)
  before another try is even checked; the first failure is logged, the rest of the
  episode is not.
* Flash messages travel in the redirect's URL with a signature
  (:meth:`Signer.flash_query`), so a crafted link cannot put text in the page.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

from .._errors import ConfigError

log = logging.getLogger("fanout.dashboard")

OPERATOR = "operator"
READ_ONLY = "read-only"
ROLES = (OPERATOR, READ_ONLY)
#: The name given to the single token of ``--token`` / ``FANOUT_DASHBOARD_TOKEN``.
LEGACY_NAME = "token"
#: The name recorded for actions on a dashboard without tokens (loopback only).
LOCAL_NAME = "local"
DEFAULT_SESSION_SECONDS = 12 * 3600
MIN_TOKEN = 8
MIN_SECRET = 32

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def token_hash(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Token:
    """A dashboard token: ``name`` and ``role``; ``digest`` is ``sha256:<hex>`` of it."""

    name: str
    role: str
    digest: str

    @property
    def fingerprint(self) -> str:
        """Changes when the token does: a session of an old token is refused."""
        return hashlib.sha256(self.digest.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Principal:
    """Who is making a request: a token's name and role (or the local user)."""

    name: str
    role: str

    @property
    def can_act(self) -> bool:
        return self.role == OPERATOR


LOCAL = Principal(LOCAL_NAME, OPERATOR)


def parse_tokens(text: str | Iterable[str], *, what: str = "FANOUT_DASHBOARD_TOKENS") -> list[Token]:
    """Tokens from ``name:role:secret`` entries (commas, spaces or new lines between
    them; ``#`` starts a comment line). ``secret`` is the token itself or
    ``sha256:<hex>`` of it (``printf %s "$TOKEN" | sha256sum``)."""
    if isinstance(text, str):
        lines = [ln.split("#", 1)[0] if ln.lstrip().startswith("#") else ln
                 for ln in text.splitlines()]
        entries = [e for ln in lines for e in re.split(r"[,\s]+", ln) if e]
    else:
        entries = [e.strip() for e in text if e.strip()]
    out: list[Token] = []
    for entry in entries:
        name, sep, rest = entry.partition(":")
        role, sep2, secret = rest.partition(":")
        if not sep or not sep2 or not secret:
            raise ConfigError(f"{what}: {_shown(entry)!r} is not name:role:token (for example "
                              "alice:operator:<token> or ci:read-only:sha256:<hex>)")
        if not _NAME.match(name):
            raise ConfigError(f"{what}: invalid token name {name!r}: 1 to 64 letters, digits "
                              "and '. _ @ -', starting with a letter or digit")
        if role not in ROLES:
            raise ConfigError(f"{what}: token {name!r} has the role {role!r}; use "
                              f"{' or '.join(ROLES)}")
        out.append(Token(name, role, _digest_of(secret, f"{what}: token {name!r}")))
    return check_tokens(out, what=what)


def _shown(entry: str) -> str:
    """An entry as an error may show it: never the secret part."""
    parts = entry.split(":")
    return ":".join(parts[:2] + ["..."]) if len(parts) > 2 else entry[:3] + "..."


def _digest_of(secret: str, what: str) -> str:
    if secret.startswith("sha256:"):
        if not _HASH.match(secret):
            raise ConfigError(f"{what}: 'sha256:' must be followed by 64 lower-case hex digits")
        return secret
    if len(secret) < MIN_TOKEN:
        raise ConfigError(f"{what}: the token must be at least {MIN_TOKEN} characters "
                          "(use 'openssl rand -hex 24')")
    return token_hash(secret)


def check_tokens(tokens: Sequence[Token], *, what: str = "tokens") -> list[Token]:
    names: set[str] = set()
    digests: set[str] = set()
    for t in tokens:
        if t.name in names:
            raise ConfigError(f"{what}: the token name {t.name!r} is given twice")
        if t.digest in digests:
            raise ConfigError(f"{what}: token {t.name!r} has the same secret as another token")
        names.add(t.name)
        digests.add(t.digest)
    return list(tokens)


def legacy_token(token: str) -> Token:
    """The single-token form (``--token``): an operator token named ``token``."""
    if len(token) < MIN_TOKEN:
        raise ConfigError(f"the dashboard token must be at least {MIN_TOKEN} characters")
    return Token(LEGACY_NAME, OPERATOR, token_hash(token))


@dataclass(frozen=True)
class Session:
    name: str
    role: str
    expires: float
    fingerprint: str


class Signer:
    """Signs and checks sessions, CSRF values and flash messages under one secret."""

    def __init__(self, tokens: Sequence[Token], secret: str | None = None,
                 session_seconds: float = DEFAULT_SESSION_SECONDS) -> None:
        if secret is not None and len(secret) < MIN_SECRET:
            raise ConfigError(f"the dashboard secret (FANOUT_DASHBOARD_SECRET) must be at least "
                              f"{MIN_SECRET} characters (use 'openssl rand -hex 32')")
        if not 60 <= session_seconds <= 90 * 86400:
            raise ConfigError("the session lifetime must be from 60 seconds to 90 days")
        self.tokens = {t.name: t for t in tokens}
        self._key = (secret or secrets.token_hex(32)).encode()
        self.session_seconds = float(session_seconds)

    def _mac(self, purpose: str, message: str) -> str:
        return _b64(hmac.new(self._key, f"{purpose}|{message}".encode(), hashlib.sha256).digest())

    def verify_token(self, candidate: str | None) -> Token | None:
        """The token ``candidate`` is, compared in constant time with every token."""
        if not candidate:
            return None
        digest = token_hash(candidate)
        found = None
        for t in self.tokens.values():
            if hmac.compare_digest(t.digest, digest):
                found = t
        return found

    # -- sessions -----------------------------------------------------------------------

    def session_cookie_value(self, token: Token, now: float | None = None) -> str:
        now = time.time() if now is None else now
        body = _b64(json.dumps({"n": token.name, "r": token.role,
                                "e": int(now + self.session_seconds),
                                "f": token.fingerprint}, separators=(",", ":")).encode())
        return f"{body}.{self._mac('session', body)}"

    def session(self, value: str | None, now: float | None = None) -> Session | None:
        """The session a cookie holds, if it is signed, unexpired and its token unchanged."""
        if not value or "." not in value:
            return None
        body, _, mac = value.rpartition(".")
        if not hmac.compare_digest(mac, self._mac("session", body)):
            return None
        try:
            data = json.loads(_unb64(body))
            s = Session(str(data["n"]), str(data["r"]), float(data["e"]), str(data["f"]))
        except (ValueError, KeyError, TypeError):
            return None
        now = time.time() if now is None else now
        token = self.tokens.get(s.name)
        if s.expires <= now or token is None or token.role != s.role \
                or token.fingerprint != s.fingerprint:
            return None
        return s

    def csrf_for(self, session_value: str) -> str:
        """A session's CSRF value: tied to the session, so it dies with it."""
        return self._mac("csrf", session_value)[:32]

    # -- flash messages -------------------------------------------------------------------

    def flash_query(self, kind: str, text: str) -> str:
        """``msg=...&sig=...`` (or ``err=``) for a redirect; only this server can make one."""
        text = text[:500]
        return urlencode({kind: text, "sig": self._mac(f"flash-{kind}", text)[:22]})

    def flash(self, query: dict[str, str]) -> dict[str, str]:
        """The flash messages of a request whose signature is right; others are dropped."""
        sig = query.get("sig", "")
        out = {}
        for kind in ("msg", "err"):
            text = query.get(kind)
            if text and sig and hmac.compare_digest(sig, self._mac(f"flash-{kind}", text)[:22]):
                out[kind] = text
        return out


class Throttle:
    """Exponential back-off of wrong tokens, per client address (one process)."""

    def __init__(self, *, cap: float = 900.0, forget_after: float = 3600.0,
                 max_entries: int = 10_000) -> None:
        self.cap = cap
        self.forget_after = forget_after
        self.max_entries = max_entries
        self._lock = threading.Lock()
        # address -> [failures, next allowed at, last failure at]
        self._seen: OrderedDict[str, list[float]] = OrderedDict()

    def wait(self, addr: str, now: float | None = None) -> float:
        """Seconds before ``addr`` may try again (0: it may try now)."""
        now = time.time() if now is None else now
        with self._lock:
            entry = self._seen.get(addr)
            if entry is None:
                return 0.0
            if now - entry[2] > self.forget_after:
                del self._seen[addr]
                return 0.0
            return max(0.0, entry[1] - now)

    def failed(self, addr: str, now: float | None = None) -> float:
        """Count a wrong token from ``addr``; returns the wait it now has."""
        now = time.time() if now is None else now
        with self._lock:
            entry = self._seen.pop(addr, None)
            if entry is None or now - entry[2] > self.forget_after:
                entry = [0.0, now, now]
            entry[0] += 1
            delay = float(min(self.cap, 2.0 ** (entry[0] - 1)))
            entry[1], entry[2] = now + delay, now
            self._seen[addr] = entry
            while len(self._seen) > self.max_entries:
                self._seen.popitem(last=False)
            first = entry[0] == 1
        if first:
            log.warning("fanout dashboard: a wrong token from %s; its next tries wait 1 s, "
                        "2 s, 4 s, ... (up to %.0f min) and are not logged again until it "
                        "signs in or stays quiet for %.0f min", addr, self.cap / 60,
                        self.forget_after / 60, extra={"fanout_client": addr})
        return delay

    def succeeded(self, addr: str) -> None:
        with self._lock:
            self._seen.pop(addr, None)
