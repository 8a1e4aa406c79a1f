"""Bad input gets a clear error that names the problem, and nothing is published."""

from __future__ import annotations

import re
from typing import Any

import pytest
import redis

import fanout
from tests.support import make_app, redis_for

app, client = make_app(__name__)


@client.create_function(fn_id="listener", trigger=fanout.TriggerEvent(event="t/*"))
def listener(ctx: fanout.ContextSync) -> None:
    pass


def _nothing_published(r: redis.Redis) -> None:
    # No event stored, no router message queued.
    assert r.zcard("fanout:idx:events") == 0
    assert not [k for k in r.keys("fanout:ev:*")]
    assert r.llen("fanout.events") == 0


@pytest.mark.parametrize(
    ("send", "message"),
    [
        (lambda: client.emit("t/x", {"when": object()}), "data.when holds a object, which is not JSON-serializable"),
        (lambda: client.emit("t/x", {"f": float("nan")}), "data.f is nan"),
        (lambda: client.emit("t/x", {1: "a"}), "key 1 of type int"),
        (lambda: client.emit("t/x", {"blob": "x" * (2 * 1024 * 1024)}), "the limit is 2097152 bytes (2 MiB), set by Fanout(max_event_bytes=...)"),
        (lambda: client.send_sync([fanout.Event(name="t/x")] * 5001), "5001 events in one send; the limit is 5000"),
        (lambda: client.emit("fanout/function.failed"), "reserved for fanout's own events"),
        (lambda: client.emit(""), "event name is empty"),
        (lambda: client.emit("t/" + "n" * 300), "the limit is 256"),
        (lambda: client.send_sync([]), "the list is empty"),
        (lambda: client.send_sync("t/x"), "not a string"),
        (lambda: client.send_sync([fanout.Event(name="t/ok"), {"name": "t/bad", "data": {"s": {1, 2}}}]), "data.s holds a set"),
        (lambda: client.emit("t/x", [1, 2]), "data: must be a JSON object (a dict), not list"),  # type: ignore[arg-type]
        (lambda: client.emit("t/x", "text"), "data: must be a JSON object (a dict), not str"),  # type: ignore[arg-type]
        (lambda: client.emit("t/x", user=[1]), "user: must be a JSON object (a dict), not list"),  # type: ignore[arg-type]
        (lambda: client.invoke("listener", [1]), "invoke data must be a JSON object (a dict), not list"),  # type: ignore[arg-type]
        (lambda: client.emit("t/a\nb"), "event name contains a newline (U+000A) at position 3"),
        (lambda: client.emit("t/a\rb"), "event name contains a carriage return (U+000D)"),
        (lambda: client.emit("t/\x1b[31mred"), "event name contains a control character (U+001B)"),
        (lambda: client.send_sync([{"name": "t/\x00"}]), "event name contains a NUL (U+0000)"),
        (lambda: client.emit("t/\u2028x"), "event name contains a control character (U+2028)"),
    ],
)
def test_bad_events_raise_event_error(clean_db: redis.Redis, send: Any, message: str) -> None:
    with pytest.raises(fanout.EventError, match=re.escape(message)) as info:
        send()
    assert isinstance(info.value, ValueError)
    _nothing_published(clean_db)


def test_an_error_quotes_at_most_100_characters_of_a_bad_name(clean_db: redis.Redis) -> None:
    for name in ("t/" + "n" * 5000, "fanout/" + "r" * 300, "t/" + "x" * 300 + "\n"):
        with pytest.raises(fanout.EventError) as info:
            client.emit(name)
        message = str(info.value)
        assert len(message) < 300, message
        assert f"... ({len(name)} characters)" in message, message
        assert name[:100] in message and name[:101] not in message, message
    _nothing_published(clean_db)
    with pytest.raises(fanout.ConfigError) as bad_id:
        client.create_function(fn_id="f" * 5000, trigger=fanout.TriggerEvent(event="t/x"))(
            lambda ctx: None)
    assert "... (5000 characters)" in str(bad_id.value) and len(str(bad_id.value)) < 300
    with pytest.raises(fanout.ConfigError) as bad_app:
        fanout.Fanout("a" * 5000, celery=app)
    assert "... (5000 characters)" in str(bad_app.value) and len(str(bad_app.value)) < 400


def test_one_bad_event_in_a_batch_publishes_none(clean_db: redis.Redis) -> None:
    batch = [fanout.Event(name="t/ok", data={"i": i}) for i in range(10)]
    batch.append(fanout.Event(name="fanout/nope"))
    with pytest.raises(fanout.EventError, match=r"events\[10\]"):
        client.send_sync(batch)
    _nothing_published(clean_db)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: fanout.TriggerEvent(event="t/x", expression="event.data.x >"), "invalid expression"),
        (lambda: fanout.TriggerEvent(event="t/x", expression="foo.bar == 1"), "undeclared variable 'foo'"),
        (lambda: fanout.TriggerEvent(event="t/*x"), "a wildcard '*' may only come last"),
        (lambda: fanout.TriggerEvent(event="t*"), "right after '/' or '.'"),
        (lambda: fanout.TriggerEvent(event=""), "trigger event is empty"),
    ],
)
def test_bad_triggers_fail_at_declaration(make: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        make()
    assert isinstance(info.value, fanout.FanoutError)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fn_id": "bad\nid", "trigger": fanout.TriggerEvent(event="t/x")}, "invalid fn_id 'bad\\nid'"),
        ({"fn_id": "f", "trigger": []}, "at least one trigger"),
        ({"fn_id": "f", "trigger": [fanout.TriggerEvent(event=f"t/{i}") for i in range(11)]}, "11 triggers; the limit is 10"),
        ({"fn_id": "f", "trigger": "t/x"}, "trigger must be a TriggerEvent"),
        ({"fn_id": "f", "trigger": fanout.TriggerEvent(event="t/x"), "retries": -1}, "retries must be an integer from 0 to 20"),
        ({"fn_id": "f", "trigger": fanout.TriggerEvent(event="t/x"), "backoff": ["soon"]}, "backoff must be a sequence of seconds"),
        ({"fn_id": "listener", "trigger": fanout.TriggerEvent(event="t/x")}, "already declared"),
    ],
)
def test_bad_function_options_fail_at_decoration(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(fanout.ConfigError, match=re.escape(message)):
        client.create_function(**kwargs)(lambda ctx: None)


def test_pickle_app_is_refused() -> None:
    from celery import Celery

    bad = Celery("pickled")
    bad.conf.task_serializer = "pickle"
    bad.conf.accept_content = ["pickle", "json"]
    with pytest.raises(fanout.ConfigError, match="JSON-only serialization"):
        fanout.Fanout("pickled", celery=bad, redis_url=redis_for(__name__).connection_pool.connection_kwargs and "redis://127.0.0.1:1/0")


def test_bad_client_options() -> None:
    with pytest.raises(fanout.ConfigError, match="invalid Redis URL"):
        fanout.Fanout("x", celery=app, redis_url="http://nope")
    with pytest.raises(fanout.ConfigError, match="invalid app_id"):
        fanout.Fanout("", celery=app)


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("fanout_metrics", "yes", "fanout_metrics must be True, False or unset, not 'yes'"),
        ("fanout_metrics_interval", 0, "fanout_metrics_interval must be a number of seconds above 0, not 0"),
        ("fanout_metrics_interval", "1s", "not '1s'"),
        ("fanout_metrics_interval", True, "not True"),
    ],
)
def test_bad_metrics_settings_name_the_setting(setting: str, value: Any, message: str) -> None:
    from celery import Celery

    bad = Celery(f"bad-{setting}")
    bad.config_from_object("celeryconfig")
    setattr(bad.conf, setting, value)
    c = fanout.Fanout("badm", celery=bad, redis_url=f"{_url()}")
    with pytest.raises(fanout.ConfigError, match=re.escape(message)):
        c.runtime.store  # noqa: B018 - the store is built on first use


def _url() -> str:
    kw = redis_for(__name__).connection_pool.connection_kwargs
    return f"redis://{kw['host']}:{kw['port']}/{kw.get('db', 0)}"
