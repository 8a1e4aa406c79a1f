"""The dashboard's tokens, sessions, flash signatures and throttle, as pure units
(the browser scenarios in tests/scenarios/test_dashboard_access.py drive them end
to end)."""

from __future__ import annotations

import json
import logging

import pytest

from fanout import ConfigError
from fanout._dashboard.auth import (
    OPERATOR,
    READ_ONLY,
    Signer,
    Throttle,
    Token,
    _unb64,
    legacy_token,
    parse_tokens,
    token_hash,
)

ALICE = "alice-token-0123456789"
BOB = "bob-token-0123456789ab"


def _tokens() -> list[Token]:
    return parse_tokens(f"alice:operator:{ALICE}, bob:read-only:{token_hash(BOB)}")


def test_token_entries_parse_with_names_roles_and_hashes() -> None:
    alice, bob = _tokens()
    assert (alice.name, alice.role, bob.name, bob.role) == ("alice", OPERATOR, "bob", READ_ONLY)
    assert alice.digest == token_hash(ALICE) and bob.digest == token_hash(BOB)
    text = f"# the team\nalice:operator:{ALICE}\n\nbob:read-only:{BOB}\n"
    assert parse_tokens(text) == _tokens()
    assert legacy_token(ALICE) == Token("token", OPERATOR, token_hash(ALICE))


@pytest.mark.parametrize("entry, message", [
    ("alice", "is not name:role:token"),
    ("alice:admin:" + ALICE, "use operator or read-only"),
    ("al/ice:operator:" + ALICE, "invalid token name"),
    ("alice:operator:short", "at least 8 characters"),
    ("alice:operator:sha256:abc", "64 lower-case hex digits"),
    (f"alice:operator:{ALICE},alice:read-only:{BOB}", "given twice"),
    (f"alice:operator:{ALICE},bob:read-only:{ALICE}", "same secret"),
])
def test_bad_entries_name_the_problem_never_the_secret(entry: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        parse_tokens(entry)
    assert ALICE not in str(err.value) and BOB not in str(err.value)


def test_a_session_is_signed_expires_and_dies_with_its_token() -> None:
    signer = Signer(_tokens(), "s" * 40, session_seconds=3600)
    alice = signer.verify_token(ALICE)
    assert alice is not None and signer.verify_token("nope-nope-nope") is None
    value = signer.session_cookie_value(alice, now=1000.0)
    assert ALICE not in value and token_hash(ALICE) not in value
    body = json.loads(_unb64(value.split(".")[0]))
    assert body["n"] == "alice" and body["r"] == OPERATOR and body["e"] == 4600
    s = signer.session(value, now=1001.0)
    assert s is not None and (s.name, s.role) == ("alice", OPERATOR)
    assert signer.session(value, now=4601.0) is None  # expired
    # Tampering (a role raised, a name changed) breaks the signature.
    forged = value.split(".")[0].replace("b", "c") + "." + value.split(".")[1]
    assert signer.session(forged, now=1001.0) is None
    # Another secret (a restart without FANOUT_DASHBOARD_SECRET) refuses it.
    assert Signer(_tokens(), "t" * 40).session(value, now=1001.0) is None
    # The same name with a new token refuses the old sessions.
    rotated = Signer(parse_tokens("alice:operator:a-brand-new-token"), "s" * 40)
    assert rotated.session(value, now=1001.0) is None
    # A removed name, or a changed role, too.
    demoted = Signer(parse_tokens(f"alice:read-only:{ALICE}"), "s" * 40)
    assert demoted.session(value, now=1001.0) is None


def test_flash_messages_need_the_servers_signature() -> None:
    signer = Signer(_tokens(), "s" * 40)
    from urllib.parse import parse_qsl

    q = dict(parse_qsl(signer.flash_query("msg", "Run cancelled.")))
    assert signer.flash(q) == {"msg": "Run cancelled."}
    assert signer.flash({"msg": "<b>your account is locked, call +1 555</b>"}) == {}
    assert signer.flash({**q, "msg": "something else"}) == {}
    assert signer.flash({**q, "err": "Run cancelled."}) == {"msg": "Run cancelled."}


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ConfigError, match="at least 32 characters"):
        Signer(_tokens(), "short")


def test_wrong_tokens_back_off_exponentially_and_log_once(
        caplog: pytest.LogCaptureFixture) -> None:
    th = Throttle(cap=900.0, forget_after=3600.0)
    caplog.set_level(logging.WARNING, logger="fanout.dashboard")
    assert th.wait("10.0.0.1", now=0.0) == 0.0
    waits = [th.failed("10.0.0.1", now=t) for t in (0.0, 1.0, 3.0, 7.0, 15.0)]
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert th.wait("10.0.0.1", now=20.0) == 11.0
    assert th.wait("10.0.0.2", now=20.0) == 0.0  # per address
    for n in range(20):
        th.failed("10.0.0.1", now=100.0 + n)
    assert th.wait("10.0.0.1", now=119.0) == 900.0  # capped at 15 min
    logged = [r for r in caplog.records if "wrong token" in r.getMessage()]
    assert len(logged) == 1 and "10.0.0.1" in logged[0].getMessage()
    th.succeeded("10.0.0.1")
    assert th.wait("10.0.0.1", now=120.0) == 0.0
    th.failed("10.0.0.3", now=0.0)
    assert th.wait("10.0.0.3", now=3601.0) == 0.0  # a quiet hour forgets


@pytest.mark.parametrize("value, expected", [
    ("/runs?status=failed", "/runs?status=failed"),
    ("//evil.example/x", "/overview"),
    ("/\\evil.example", "/overview"),
    ("https://evil.example/", "/overview"),
    ("/x\r\nSet-Cookie: a=b", "/overview"),
    ("", "/overview"),
])
def test_where_sign_in_returns_to_stays_on_this_server(value: str, expected: str) -> None:
    from fanout._dashboard.web import local_path

    assert local_path(value, "/overview") == expected
