"""Event routing: id dedupe, two subscribers, wildcards, CEL expression filters,
client.send / send_sync, and publishing failures that raise."""

from __future__ import annotations

import asyncio

import pytest

import fanout
from tests.support import make_app, run_of, wait_for, wait_run

app, client = make_app(__name__)


def _record(ctx: fanout.ContextSync) -> dict[str, object]:
    return {"name": ctx.event.name, "data": ctx.event.data}


@client.create_function(fn_id="sub-a", trigger=fanout.TriggerEvent(event="shop/order.created"))
def sub_a(ctx: fanout.ContextSync) -> dict[str, object]:
    return _record(ctx)


@client.create_function(fn_id="sub-b", trigger=fanout.TriggerEvent(event="shop/order.created"))
def sub_b(ctx: fanout.ContextSync) -> dict[str, object]:
    return _record(ctx)


@client.create_function(fn_id="all-shop", trigger=fanout.TriggerEvent(event="shop/*"))
def all_shop(ctx: fanout.ContextSync) -> dict[str, object]:
    return _record(ctx)


@client.create_function(fn_id="user-events", trigger=fanout.TriggerEvent(event="shop/user.*"))
def user_events(ctx: fanout.ContextSync) -> dict[str, object]:
    return _record(ctx)


@client.create_function(
    fn_id="big-orders",
    trigger=[
        fanout.TriggerEvent(event="shop/order.created", expression="event.data.total > 100"),
        fanout.TriggerEvent(event="shop/vip", expression="has(event.data.tier) && event.data.tier == 'gold'"),
    ],
)
def big_orders(ctx: fanout.ContextSync) -> dict[str, object]:
    return _record(ctx)


def _fns_started_by(eid: str) -> set[str]:
    return {r.fn_id for r in client.list_runs(event_id=eid)}


def test_two_subscribers_wildcard_and_expression(worker: object) -> None:
    small = client.emit("shop/order.created", {"total": 20})
    big = client.emit("shop/order.created", {"total": 500})
    for eid, fn in [(small, "sub-a"), (small, "sub-b"), (big, "big-orders"), (big, "all-shop")]:
        run = wait_run(client, run_of(client, eid, fn))
        assert run.status == "completed"
        assert run.output["name"] == "shop/order.created"
    wait_for(lambda: len(_fns_started_by(big)) == 4)
    assert _fns_started_by(small) == {"sub-a", "sub-b", "all-shop"}
    assert _fns_started_by(big) == {"sub-a", "sub-b", "all-shop", "big-orders"}


def test_wildcards_follow_segments(worker: object) -> None:
    signup = client.emit("shop/user.signup", {"id": 1})
    wait_run(client, run_of(client, signup, "user-events"))
    wait_for(lambda: len(_fns_started_by(signup)) == 2)
    assert _fns_started_by(signup) == {"user-events", "all-shop"}
    # "shop/username" does not match "shop/user.*".
    other = client.emit("shop/username", {"id": 2})
    wait_run(client, run_of(client, other, "all-shop"))
    assert _fns_started_by(other) == {"all-shop"}


def test_expression_on_a_missing_field_does_not_match(worker: object) -> None:
    plain = client.emit("shop/vip", {"name": "no tier"})
    gold = client.emit("shop/vip", {"tier": "gold"})
    wait_run(client, run_of(client, gold, "big-orders"))
    wait_run(client, run_of(client, plain, "all-shop"))
    assert _fns_started_by(plain) == {"all-shop"}
    assert _fns_started_by(gold) == {"all-shop", "big-orders"}


def test_duplicate_event_id_starts_nothing_new(worker: object) -> None:
    ev = fanout.Event(name="shop/order.created", data={"total": 1}, id="order-123")
    assert client.send_sync(ev) == ["order-123"]
    first = wait_run(client, run_of(client, "order-123", "sub-a"))
    # The same id again, with a different payload, in a batch, and concurrently.
    again = fanout.Event(name="shop/order.created", data={"total": 999}, id="order-123")
    assert client.send_sync([again, again]) == ["order-123", "order-123"]
    assert asyncio.run(client.send(again)) == ["order-123"]
    client.emit("shop/order.created", {"total": 5}, id="order-123")
    marker = client.emit("shop/order.created", {"total": 2})
    wait_run(client, run_of(client, marker, "sub-a"))  # the router has moved past the dupes
    runs = client.list_runs(event_id="order-123")
    assert sorted(r.fn_id for r in runs) == ["all-shop", "sub-a", "sub-b"]  # total 1: no big-orders
    again_run = client.get_run(first.run_id)
    assert again_run is not None and again_run.output["data"] == {"total": 1}
    assert again_run.ended_at == first.ended_at


def test_publishing_to_a_dead_redis_raises() -> None:
    from celery import Celery

    other = Celery("dead-app")
    other.config_from_object("celeryconfig")
    other.conf.broker_url = "redis://127.0.0.1:1/0"
    c = fanout.Fanout("dead", celery=other, redis_url="redis://127.0.0.1:1/0")
    with pytest.raises(fanout.PublishError, match="could not store 1 event"):
        c.emit("x/y")


def test_publishing_to_a_dead_broker_raises(clean_db: object) -> None:
    from celery import Celery

    from tests.support import url_for

    other = Celery("dead-broker")
    other.config_from_object("celeryconfig")
    other.conf.broker_url = "redis://127.0.0.1:1/0"
    c = fanout.Fanout("dead-broker", celery=other, redis_url=url_for(__name__))
    with pytest.raises(fanout.PublishError, match="could not publish 1 event id"):
        c.emit("x/y", id="stored-not-published")
    # The event was stored; sending it again with the same id once the broker is
    # back publishes it (the id makes the retry safe).
    assert client.send_sync(fanout.Event(name="shop/user.retry", id="stored-not-published")) == [
        "stored-not-published"
    ]
