"""Encryption at rest: step outputs, function outputs and an event's
``data["encrypted"]`` field are encrypted before they reach Redis and decrypted in
the worker, with Fernet from the ``cryptography`` library (AES-128-CBC with an
HMAC-SHA256 tag; ``pip install 'celery-fanout[encryption]'``).

``middleware=[EncryptionMiddleware.factory(key)]`` on the client encrypts what the
client sends and what its functions store.  The rest of an event stays readable, so
triggers, ``if`` expressions, ``match=`` and flow-control keys keep working: put only
the secret part under ``data["encrypted"]``.

- Rotation: ``factory(new_key, fallback_decryption_keys=[old_key])`` encrypts with
  the new key and still reads what the old one wrote.
- Moving off: ``factory(key, decrypt_only=True)`` stores plain values from now on
  and still reads the encrypted ones.
- A value that no key opens fails the run with :class:`~fanout.DecryptionError`
  (not retried); the ciphertext stays as it was, so a run replayed after the key is
  fixed reads it.

An encrypted value is stored as ``{"__fanout_encrypted__": "fernet", "data": TOKEN}``;
the CLI and the dashboard show it as encrypted and decrypt it only when given a key.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from ._core.middleware import Middleware, TransformOutputResult
from ._core.sealed import MARKER
from ._errors import ConfigError, DecryptionError

__all__ = ["MARKER", "EncryptionMiddleware", "Keyring", "generate_key", "is_encrypted"]

EVENT_FIELD = "encrypted"


def _fernet() -> Any:
    try:
        from cryptography import fernet
    except ImportError:
        raise ConfigError(
            "fanout.encryption needs the cryptography library: "
            "pip install 'celery-fanout[encryption]'"
        ) from None
    return fernet


def generate_key() -> str:
    """A new random key (url-safe base64 text; keep it with your other secrets)."""
    return str(_fernet().Fernet.generate_key().decode("ascii"))


def is_encrypted(value: Any) -> bool:
    return isinstance(value, Mapping) and value.get(MARKER) == "fernet" and "data" in value


class Keyring:
    """The key that encrypts, and every key that may decrypt (the first one first)."""

    def __init__(self, key: str | bytes, fallback_decryption_keys: Iterable[str | bytes] = ()) -> None:
        fernet = _fernet()
        keys = [key, *fallback_decryption_keys]
        members = []
        for i, k in enumerate(keys):
            try:
                members.append(fernet.Fernet(k.encode() if isinstance(k, str) else k))
            except (ValueError, TypeError):
                which = "key" if i == 0 else f"fallback_decryption_keys[{i - 1}]"
                raise ConfigError(
                    f"encryption {which} is not a Fernet key (32 url-safe base64-encoded "
                    "bytes); make one with fanout.encryption.generate_key()"
                ) from None
        self._multi = fernet.MultiFernet(members)
        self._invalid = fernet.InvalidToken

    def encrypt(self, value: Any) -> dict[str, str]:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        return {MARKER: "fernet", "data": self._multi.encrypt(text.encode()).decode("ascii")}

    def decrypt(self, value: Mapping[str, Any], where: str) -> Any:
        try:
            plain = self._multi.decrypt(str(value["data"]).encode("ascii"))
        except self._invalid:
            raise DecryptionError(
                f"cannot decrypt {where} with the configured keys: a wrong key, or data "
                "written with a key that is not in fallback_decryption_keys"
            ) from None
        return json.loads(plain)

    def open(self, value: Any, where: str) -> Any:
        """``value`` decrypted if it is an encrypted value, else ``value``."""
        return self.decrypt(value, where) if is_encrypted(value) else value


class EncryptionMiddleware(Middleware):
    """Encrypts outputs and ``data["encrypted"]``; build it with :meth:`factory`."""

    keyring: Keyring
    decrypt_only: bool = False
    event_field: str = EVENT_FIELD

    @classmethod
    def factory(
        cls,
        key: str | bytes,
        *,
        fallback_decryption_keys: Iterable[str | bytes] = (),
        decrypt_only: bool = False,
        event_encryption_field: str = EVENT_FIELD,
    ) -> type[EncryptionMiddleware]:
        """A middleware class bound to these keys (for ``middleware=[...]``)."""
        ring = Keyring(key, fallback_decryption_keys)
        return type("EncryptionMiddleware", (cls,), {
            "keyring": ring, "decrypt_only": bool(decrypt_only),
            "event_field": str(event_encryption_field),
        })

    def __init__(self, client: Any, raw_request: Any) -> None:
        if not isinstance(getattr(type(self), "keyring", None), Keyring):
            raise ConfigError("use EncryptionMiddleware.factory(key), not the class itself")
        super().__init__(client, raw_request)

    # -- into the handler ---------------------------------------------------------

    def _open_event(self, event: Any, where: str) -> None:
        data = event.get("data") if isinstance(event, dict) else getattr(event, "data", None)
        if isinstance(data, dict) and is_encrypted(data.get(self.event_field)):
            data[self.event_field] = self.keyring.decrypt(data[self.event_field], where)

    def transform_input(self, ctx: Any, function: Any, steps: Mapping[str, Any]) -> None:
        ring = self.keyring
        for step_id, rec in steps.items():
            if rec.output is None:
                continue
            rec.output = ring.open(rec.output, f"the output of step {step_id!r}")
            if rec.kind in ("wait", "wait_for_event"):
                self._open_event(rec.output, f"the event step {step_id!r} received")
        if ctx is not None:
            self._open_event(ctx.event, "the triggering event's data")
            for i, ev in enumerate(getattr(ctx, "events", None) or []):
                if ev is not ctx.event:
                    self._open_event(ev, f"event {i} of the batch")

    # -- out to the store ----------------------------------------------------------

    def transform_output(self, result: TransformOutputResult) -> None:
        if self.decrypt_only or result.error is not None or result.output is None:
            return
        if not is_encrypted(result.output):
            result.output = self.keyring.encrypt(result.output)

    def before_send_events(self, events: list[Any]) -> None:
        if self.decrypt_only:
            return
        for ev in events:
            data = getattr(ev, "data", None)
            if isinstance(data, dict) and self.event_field in data and not is_encrypted(
                data[self.event_field]
            ):
                data[self.event_field] = self.keyring.encrypt(data[self.event_field])
