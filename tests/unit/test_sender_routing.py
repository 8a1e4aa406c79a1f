"""Routing in the sender: when a process may route its own events (the registry of
what the workers declare against its own functions), and the digest behind it."""

from __future__ import annotations

import logging

import pytest
from celery import Celery

import fanout
from fanout._celery.routing import SenderRouting
from fanout._core.function import routing_digest
from fanout._redis.declared import live

app = Celery("sender-routing")
app.config_from_object("fanout.celeryconfig")
client = fanout.Fanout("sr", celery=app, redis_url="memory://sender-routing")


@client.create_function(fn_id="a", trigger=fanout.TriggerEvent(event="sr/a"))
def fn_a(ctx: fanout.ContextSync) -> None:
    return None


@client.create_function(fn_id="b", trigger=fanout.TriggerEvent(event="sr/b"),
                        cancel=[fanout.Cancel(event="sr/stop", match="data.k")])
def fn_b(ctx: fanout.ContextSync) -> None:
    return None


def _sender() -> SenderRouting:
    sender = client._rt.publisher.sender
    assert isinstance(sender, SenderRouting)
    return sender


def test_the_same_entries_route_here() -> None:
    sender = _sender()
    assert sender.refusal(set(sender.entries())) is None
    assert {e.split(" ")[0] for e in sender.entries()} == {"sr:a", "sr:b"}


def test_no_worker_yet() -> None:
    assert _sender().refusal(set()) == "no live worker has registered its functions yet"


def test_a_function_the_sender_lacks_is_named_once_at_info(
        caplog: pytest.LogCaptureFixture) -> None:
    sender = _sender()
    sender._told = False
    declared = {*sender.entries(), "sr:c 0123456789abcdef"}
    with caplog.at_level(logging.INFO, logger="fanout"):
        assert sender.refusal(declared) == "this process does not declare sr:c"
        assert sender.refusal(declared) == "this process does not declare sr:c"
    told = [r for r in caplog.records if "Import the modules" in r.getMessage()]
    assert len(told) == 1 and "sr:c" in told[0].getMessage()


def test_another_version_or_a_function_no_worker_has_goes_to_the_router() -> None:
    sender = _sender()
    mine = sender.entries()
    a = next(e for e in mine if e.startswith("sr:a "))
    other = {*(mine - {a}), "sr:a ffffffffffffffff"}
    assert "sr:a" in (sender.refusal(other) or "")
    assert "sr:b" in (sender.refusal(mine - {e for e in mine if e.startswith("sr:b ")}) or "")


def test_only_small_sends_when_enabled() -> None:
    sender = _sender()
    assert sender.wanted(1) and sender.wanted(50) and not sender.wanted(51)
    assert not sender.wanted(0)


def test_the_digest_follows_what_routing_reads() -> None:
    fa, fb = fn_a.fanout_function, fn_b.fanout_function  # type: ignore[attr-defined]
    assert routing_digest(fa) != routing_digest(fb)
    assert routing_digest(fa) == routing_digest(fa)
    moved = fanout._core.function.build_function(
        app_id="sr", fn_id="a", trigger=fanout.TriggerEvent(event="sr/other"), name=None,
        retries=4, backoff=None, checkpoint=False, handler=fa.handler, version=fa.version)
    assert routing_digest(moved) != routing_digest(fa)


def test_a_reader_takes_every_entry_of_the_hash() -> None:
    # Staleness is the workers' refresh script's job, by the server's clock.
    raw = {b"x d": b"1.0", b"y d": b"junk"}
    assert live(raw) == {"x d", "y d"} and live(None) == set()


def test_the_option_is_checked() -> None:
    with pytest.raises(fanout.ConfigError, match="route_in_sender must be True or False"):
        fanout.Fanout("sr", celery=app, redis_url="memory://sender-routing",
                      route_in_sender=1)  # type: ignore[arg-type]
