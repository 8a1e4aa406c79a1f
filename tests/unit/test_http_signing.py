"""Webhook signatures, content types and routes of the ingest endpoint (pure parts)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from fanout._http.endpoint import _content_type_problem, route
from fanout._http.ingest_keys import _KEY, hash_key, new_key
from fanout._http.signing import SignatureError, Webhook, sign

SECRET = "s" * 24
BODY = b'{"name": "a/b"}'


def test_sign_is_hmac_sha256_of_timestamp_dot_body() -> None:
    mac = hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, BODY, timestamp=1700000000) == f"t=1700000000,v1={mac}"


def test_timestamped_verification() -> None:
    hook = Webhook(secret=SECRET, tolerance=60)
    header = sign(SECRET, BODY, timestamp=1000)
    token = hook.verify(BODY, {"fanout-signature": header}, now=1030)
    assert token.startswith("t:") and hook.replay_window == 121
    with pytest.raises(SignatureError, match="outside the 60 s tolerance"):
        hook.verify(BODY, {"fanout-signature": header}, now=1061)
    with pytest.raises(SignatureError, match="does not match"):
        hook.verify(BODY + b"x", {"fanout-signature": header}, now=1000)
    with pytest.raises(SignatureError, match="malformed"):
        hook.verify(BODY, {"fanout-signature": "v1=abc"}, now=1000)
    with pytest.raises(SignatureError, match="missing signature"):
        hook.verify(BODY, {}, now=1000)


def test_rotation_any_secret_verifies() -> None:
    old, new = "o" * 20, "n" * 20
    hook = Webhook(secret=[new, old])
    for secret in (old, new):
        assert hook.verify(BODY, {"fanout-signature": sign(secret, BODY)})
    with pytest.raises(SignatureError):
        Webhook(secret=new).verify(BODY, {"fanout-signature": sign(old, BODY)})


def test_a_custom_header_name() -> None:
    hook = Webhook(secret=SECRET, header="Stripe-Signature")
    assert hook.verify(BODY, {"stripe-signature": sign(SECRET, BODY)})


def test_github_scheme_tokens_by_delivery() -> None:
    hook = Webhook(secret=SECRET, scheme="github", tolerance=600)
    mac = hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    headers = {"x-hub-signature-256": f"sha256={mac}", "x-github-delivery": "d-1"}
    assert hook.verify(BODY, headers) == "gh:" + hashlib.sha256(b"d-1").hexdigest()
    assert hook.verify(BODY, {"x-hub-signature-256": f"sha256={mac}"}) == f"gh:{mac}"
    assert hook.replay_window == 600
    with pytest.raises(SignatureError, match="expected sha256=<hex>"):
        hook.verify(BODY, {"x-hub-signature-256": mac})


def test_secrets_never_show_in_reprs() -> None:
    assert SECRET not in repr(Webhook(secret=SECRET))


def test_content_types() -> None:
    assert _content_type_problem("application/json") is None
    assert _content_type_problem("Application/JSON; charset=utf-8") is None
    assert "charset" in (_content_type_problem("application/json; charset=utf-16") or "")
    assert "'text/json'" in (_content_type_problem("text/json") or "")


def test_routes() -> None:
    assert route("/") == (True, None) and route("/events/") == (True, None)
    assert route("/webhooks/github") == (True, "github")
    assert route("/webhooks") == (False, None) and route("/runs/x/cancel") == (False, None)


def test_keys_have_an_id_and_256_random_bits() -> None:
    key_id, key = new_key()
    m = _KEY.match(key)
    assert m is not None and m.group(1) == key_id and len(m.group(2)) == 64
    assert hash_key(key) == "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    assert new_key() != new_key()
