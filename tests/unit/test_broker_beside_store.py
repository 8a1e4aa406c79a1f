"""The shipped settings never put Celery's broker in the store's Redis database, and
the warning a worker logs when the two share a Redis server (pure: no Redis needed)."""

from __future__ import annotations

import importlib

import pytest
from celery import Celery

import fanout.celeryconfig
from fanout._celery.install import shared_redis_warning
from fanout.celeryconfig import broker_beside


@pytest.mark.parametrize(("store", "broker"), [
    ("redis://localhost:6379/0", "redis://localhost:6379/1"),
    ("redis://:s3cret@cache:6380/4", "redis://:s3cret@cache:6380/5"),
    ("rediss://user:pw@h:6380/15?ssl_cert_reqs=required", "rediss://user:pw@h:6380/14?ssl_cert_reqs=required"),
    ("redis://h", "redis://h/1"),
    ("unix:///run/redis.sock?db=3", "redis+socket:///run/redis.sock?virtual_host=4"),
    ("memory://tests", "memory://"),
])
def test_the_broker_is_the_next_database(store: str, broker: str) -> None:
    assert broker_beside(store) == broker


def test_a_cluster_store_needs_its_own_broker_url() -> None:
    with pytest.raises(ValueError, match="set CELERY_BROKER_URL"):
        broker_beside("redis+cluster://h:7000")


def test_the_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
        monkeypatch.setenv("FANOUT_REDIS_URL", "redis://store:6379/2")
        conf = importlib.reload(fanout.celeryconfig)
        assert (conf.broker_url, conf.fanout_redis_url) == ("redis://store:6379/3",
                                                            "redis://store:6379/2")
        monkeypatch.delenv("FANOUT_REDIS_URL")
        conf = importlib.reload(fanout.celeryconfig)
        assert conf.broker_url == "redis://localhost:6379/1"   # the store defaults to /0
        monkeypatch.setenv("CELERY_BROKER_URL", "amqp://rabbit//")
        assert importlib.reload(fanout.celeryconfig).broker_url == "amqp://rabbit//"
    finally:
        monkeypatch.undo()
        importlib.reload(fanout.celeryconfig)


def _app(broker: str) -> Celery:
    app = Celery("warn")
    app.conf.broker_url = broker
    return app


def test_a_shared_server_is_named_with_passwords_masked() -> None:
    text = shared_redis_warning(_app("redis://:brokerpw@127.0.0.1:6379/1"),
                                "redis://:storepw@localhost:6379/0")
    assert text is not None
    assert "brokerpw" not in text and "storepw" not in text
    assert "(redis://:**@127.0.0.1:6379/1)" in text and "(redis://:**@localhost:6379/0)" in text
    assert "share one Redis server" in text and "docs/howto/deployment.md" in text
    same = shared_redis_warning(_app("redis://h:6379/0"), "redis://h:6379")
    assert same is not None and "share one Redis database" in same


@pytest.mark.parametrize(("broker", "store"), [
    ("redis://h:6379/1", "redis://h:6380/0"),       # another server
    ("redis://a:6379/1", "redis://b:6379/0"),
    ("amqp://guest@h//", "redis://h:6379/0"),       # RabbitMQ
    ("memory://", "memory://x"),
])
def test_separate_servers_give_no_warning(broker: str, store: str) -> None:
    assert shared_redis_warning(_app(broker), store) is None
