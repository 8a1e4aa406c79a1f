"""Webhook signatures: HMAC-SHA256 of the request body, the way Stripe and GitHub
sign the webhooks they send.

Two schemes:

* ``"timestamped"`` (the default): a header ``Fanout-Signature: t=<unix seconds>,
  v1=<hex>``, where ``<hex>`` is HMAC-SHA256 of ``<t>.<body>`` under the source's
  secret.  Several ``v1=`` entries may be given (while a secret is rotated).  A
  timestamp further than ``tolerance`` seconds from now is refused, and a signature
  already accepted within the window is refused as a replay.
* ``"github"``: a header ``X-Hub-Signature-256: sha256=<hex>`` over the body alone.
  There is no timestamp, so a replay is refused only while the delivery id
  (``X-GitHub-Delivery``, else the signature) is remembered: ``tolerance`` seconds.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._errors import ConfigError

SCHEMES = ("timestamped", "github")
_HEADERS = {"timestamped": "fanout-signature", "github": "x-hub-signature-256"}


class SignatureError(Exception):
    """A request whose signature is missing, malformed, stale or wrong."""


def _digest(secret: bytes, message: bytes) -> str:
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def sign(secret: str | bytes, body: bytes, *, timestamp: int | None = None) -> str:
    """The ``Fanout-Signature`` header value for ``body`` (timestamped scheme)."""
    key = secret.encode() if isinstance(secret, str) else secret
    t = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={t},v1={_digest(key, str(t).encode() + b'.' + body)}"


@dataclass(frozen=True)
class Webhook:
    """Signature checking for one source.

    ``secret`` is the shared secret, or a list of them (the first signs, any
    verifies: add the new one first while rotating).  ``transform(payload,
    headers)`` turns a third-party body (a Stripe or GitHub event) into fanout
    events (an ``Event``, a dict, or a list of them); without it the body must be
    fanout events, as on the key-authenticated endpoint.
    """

    secret: str | bytes | Sequence[str | bytes] = field(repr=False)
    scheme: str = "timestamped"
    tolerance: float = 300.0
    header: str | None = None
    transform: Callable[[Any, Mapping[str, str]], Any] | None = None
    _secrets: tuple[bytes, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        raw = [self.secret] if isinstance(self.secret, (str, bytes)) else list(self.secret)
        secrets = tuple(s.encode() if isinstance(s, str) else s for s in raw)
        if not secrets or any(not isinstance(s, bytes) or len(s) < 16 for s in secrets):
            raise ConfigError("a webhook secret must be at least 16 characters (use "
                              "secrets.token_hex(32) or the provider's signing secret)")
        if self.scheme not in SCHEMES:
            raise ConfigError(f"unknown signature scheme {self.scheme!r}; use one of {SCHEMES}")
        if not (isinstance(self.tolerance, (int, float)) and 1 <= self.tolerance <= 86400):
            raise ConfigError("tolerance must be from 1 to 86400 seconds")
        if self.transform is not None and not callable(self.transform):
            raise ConfigError("transform must be a callable (payload, headers) -> events")
        object.__setattr__(self, "_secrets", secrets)

    @property
    def header_name(self) -> str:
        return (self.header or _HEADERS[self.scheme]).lower()

    def verify(self, body: bytes, headers: Mapping[str, str], now: float | None = None) -> str:
        """Check the signature; return the replay token to remember. Raises SignatureError."""
        value = headers.get(self.header_name)
        if not value:
            raise SignatureError(f"missing signature: this source requires a "
                                 f"{self.header_name} header")
        if self.scheme == "github":
            return self._verify_github(body, value, headers)
        return self._verify_timestamped(body, value, time.time() if now is None else now)

    def _verify_timestamped(self, body: bytes, value: str, now: float) -> str:
        t: str | None = None
        sigs: list[str] = []
        for part in value.split(","):
            k, _, v = part.strip().partition("=")
            if k == "t":
                t = v
            elif k == "v1":
                sigs.append(v.lower())
        if t is None or not t.isdigit() or not sigs:
            raise SignatureError(f"malformed {self.header_name} header: expected "
                                 "t=<unix seconds>,v1=<hex HMAC-SHA256 of '<t>.<body>'>")
        if abs(now - int(t)) > self.tolerance:
            raise SignatureError(f"signature timestamp is outside the {self.tolerance:g} s "
                                 "tolerance (a stale or replayed request, or a skewed clock)")
        message = t.encode() + b"." + body
        for secret in self._secrets:
            expected = _digest(secret, message)
            for sig in sigs:
                if hmac.compare_digest(expected, sig):
                    return f"t:{expected}"
        raise SignatureError("signature does not match the body under this source's secret")

    def _verify_github(self, body: bytes, value: str, headers: Mapping[str, str]) -> str:
        algo, _, sig = value.partition("=")
        if algo != "sha256" or not sig:
            raise SignatureError(f"malformed {self.header_name} header: expected sha256=<hex>")
        for secret in self._secrets:
            expected = _digest(secret, body)
            if hmac.compare_digest(expected, sig.lower()):
                delivery = headers.get("x-github-delivery", "")
                if delivery and len(delivery) <= 128:
                    return "gh:" + hashlib.sha256(delivery.encode()).hexdigest()
                return f"gh:{expected}"
        raise SignatureError("signature does not match the body under this source's secret")

    @property
    def replay_window(self) -> int:
        """How long an accepted signature is remembered (seconds)."""
        return int(self.tolerance * 2) + 1 if self.scheme == "timestamped" else int(self.tolerance)
