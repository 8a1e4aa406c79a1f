"""Durations and the event/function surface read as inngest-py means them (pure; no Redis).

An int duration is milliseconds wherever inngest-py takes one; a float there is
refused with what to write; fanout's own settings keep seconds.
"""

from __future__ import annotations

import datetime as dt
import pickle
import time
from typing import Any

import pytest
from celery import Celery

import fanout
from fanout._core.durations import parse_duration, parse_seconds
from fanout._core.event import prepare_batch
from fanout._core.schedule import parse_jitter
from fanout.testing import run_function

# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(("value", "seconds"), [
    (1000, 1.0), (1500, 1.5), (0, 0.0), (60_000, 60.0), (1, 0.001),
    (dt.timedelta(seconds=1.5), 1.5), (dt.timedelta(hours=2), 7200.0),
    ("1.5s", 1.5), ("500ms", 0.5), ("1h30m", 5400.0), ("1w", 604800.0), ("2d", 172800.0),
])
def test_inngest_durations_read_an_int_as_milliseconds(value: Any, seconds: float) -> None:
    assert parse_duration(value, "sleep duration") == pytest.approx(seconds)


@pytest.mark.parametrize("value", [1.5, 30.0, 0.0])
def test_a_float_is_refused_with_what_to_write(value: float) -> None:
    with pytest.raises(fanout.ConfigError) as info:
        parse_duration(value, "sleep duration")
    text = str(info.value)
    assert "sleep duration" in text and "float" in text and "milliseconds" in text
    assert f"timedelta(seconds={value:g})" in text and f"'{value:g}s'" in text
    assert str(round(value * 1000)) in text


@pytest.mark.parametrize("bad", [True, None, -1, "", "soon", "30x", "400d", [1], float("nan")])
def test_bad_durations_say_what_is_accepted(bad: Any) -> None:
    with pytest.raises(fanout.ConfigError, match="sleep duration"):
        parse_duration(bad, "sleep duration")


def test_fanout_own_settings_read_numbers_as_seconds() -> None:
    assert parse_seconds(30, "x") == 30.0
    assert parse_seconds(1.5, "x") == 1.5
    assert parse_seconds("2m", "x") == 120.0
    assert parse_seconds(dt.timedelta(seconds=3), "x") == 3.0
    with pytest.raises(fanout.ConfigError, match="x must not be negative"):
        parse_seconds(-1, "x")


def test_cron_jitter_takes_strings_and_seconds() -> None:
    assert parse_jitter("30s") == 30.0
    assert parse_jitter("1m") == 60.0
    assert parse_jitter(45) == 45.0  # fanout's own setting: seconds
    assert fanout.TriggerCron(cron="* * * * *", jitter="30s").jitter_seconds == 30.0
    with pytest.raises(fanout.ConfigError, match="between 1 second and 5 minutes"):
        fanout.TriggerCron(cron="* * * * *", jitter="10m")
    with pytest.raises(fanout.ConfigError, match="jitter"):
        fanout.TriggerCron(cron="* * * * *", jitter="soon")


# --------------------------------------------------------------------------- flow control


@pytest.mark.parametrize(("make", "attr", "seconds"), [
    (lambda v: fanout.Throttle(1, v), "period_s", 60.0),
    (lambda v: fanout.RateLimit(1, v), "period_s", 60.0),
    (lambda v: fanout.Debounce(v), "period_s", 60.0),
    (lambda v: fanout.Batch(10, v), "timeout_s", 60.0),
    (lambda v: fanout.Cancel(event="a/b", timeout=v), "timeout_s", 60.0),
    (lambda v: fanout.Timeouts(start=v), "start_s", 60.0),
    (lambda v: fanout.Timeouts(finish=v), "finish_s", 60.0),
])
def test_flow_control_durations_as_inngest_py(make: Any, attr: str, seconds: float) -> None:
    for value in (60_000, dt.timedelta(minutes=1), "1m", "60s"):
        assert getattr(make(value), attr) == seconds
    with pytest.raises(fanout.ConfigError, match="float"):
        make(60.0)


def test_debounce_timeout_in_milliseconds() -> None:
    d = fanout.Debounce(5000, timeout=60_000)
    assert (d.period_s, d.timeout_s) == (5.0, 60.0)


def test_an_int_meant_as_seconds_gets_a_hint() -> None:
    with pytest.raises(fanout.ConfigError) as info:
        fanout.RateLimit(1, 60)
    text = str(info.value)
    assert "60ms" in text and "an int is milliseconds" in text and "'60s'" in text


# --------------------------------------------------------------------------- errors


def test_retry_after_milliseconds_timedelta_datetime() -> None:
    now = dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone.utc)
    assert fanout.RetryAfterError("x", 1000).delay_seconds(now) == 1.0
    assert fanout.RetryAfterError("x", 1500).delay_seconds(now) == 1.5
    assert fanout.RetryAfterError("x", dt.timedelta(seconds=2)).delay_seconds(now) == 2.0
    at = now + dt.timedelta(seconds=9)
    assert fanout.RetryAfterError("x", at).delay_seconds(now) == 9.0


def test_retry_after_refuses_a_float() -> None:
    with pytest.raises(fanout.ConfigError) as info:
        fanout.RetryAfterError("x", 1.5)
    assert "timedelta(seconds=1.5)" in str(info.value) and "1500" in str(info.value)
    with pytest.raises(fanout.ConfigError, match="must not be negative"):
        fanout.RetryAfterError("x", -5)
    with pytest.raises(fanout.ConfigError, match="int of milliseconds"):
        fanout.RetryAfterError("x", "1s")  # type: ignore[arg-type]


@pytest.fixture
def paris(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Local time is Europe/Paris (never UTC), so local and UTC readings differ."""
    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_naive_datetimes_are_local_time(paris: None) -> None:
    assert dt.datetime.now().astimezone().utcoffset() != dt.timedelta(0)
    naive = dt.datetime.now() + dt.timedelta(seconds=30)  # local wall clock
    now = dt.datetime.now(dt.timezone.utc)
    assert fanout.RetryAfterError("x", naive).delay_seconds(now) == pytest.approx(30, abs=1)


def test_sleep_until_reads_a_naive_datetime_as_local_time(paris: None) -> None:
    client = _client()
    target = dt.datetime.now() + dt.timedelta(minutes=5)  # naive, local

    @client.create_function(fn_id="until", trigger=fanout.TriggerEvent(event="a/until"))
    def until(ctx: fanout.ContextSync) -> None:
        ctx.step.sleep_until("z", target)

    result = run_function(until, fanout.Event(name="a/until"))
    assert result.status == "completed", result.error
    assert result.skipped_seconds == pytest.approx(300, abs=5)


def test_quiet_and_the_step_error_names() -> None:
    assert fanout.NonRetriableError("stop", quiet=True).quiet is True
    assert fanout.NonRetriableError("stop").quiet is False
    assert fanout.RetryAfterError("later", 1000, quiet=True).quiet is True
    err = fanout.StepError("charge", "ValueError", "declined", "Traceback ...")
    assert (err.name, err.message, err.stack) == ("ValueError", "declined", "Traceback ...")
    assert (err.error_type, err.error_message) == ("ValueError", "declined")
    inv = fanout.InvokeError("failed", step_id="call", name="KeyError", error_message="k",
                             stack="tb")
    assert isinstance(inv, fanout.StepError) and isinstance(inv, fanout.NonRetriableError)
    assert (inv.name, inv.message, inv.stack, inv.step_id) == ("KeyError", "k", "tb", "call")
    for e in (err, inv, fanout.NonRetriableError("q", quiet=True),
              fanout.RetryAfterError("q", 5, quiet=True)):
        back = pickle.loads(pickle.dumps(e))
        assert type(back) is type(e) and back.__dict__ == e.__dict__ and str(back) == str(e)


# --------------------------------------------------------------------------- events, functions


def _client(**options: Any) -> fanout.Fanout:
    app = Celery("porting-unit", broker="memory://", backend=None)
    app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])
    return fanout.Fanout("shop", celery=app, redis_url="memory://porting-unit", **options)


def test_event_id_and_ts_defaults_mean_not_given() -> None:
    ev = fanout.Event(name="a/b", id="", ts=0)
    assert ev.id is None and ev.ts is None
    ((sent, _),) = prepare_batch(ev)
    assert sent.id and sent.ts and abs(sent.ts - time.time() * 1000) < 60_000


def test_create_function_returns_the_handler_with_a_qualified_id() -> None:
    client = _client()

    @client.create_function(fn_id="greet", trigger=fanout.TriggerEvent(event="a/greet"))
    def greet(ctx: Any) -> str:
        return "hi"

    assert greet.id == "shop-greet"  # type: ignore[attr-defined]
    assert greet(None) == "hi"


def test_event_size_limit_is_an_option() -> None:
    blob = {"msg": "a" * 1024 * 1024}  # inngest-py's batch case sends 1 MiB events
    assert len(prepare_batch(fanout.Event(name="a/b", data=blob))) == 1
    small = _client(max_event_bytes=4096)
    with pytest.raises(fanout.EventError, match=r"Fanout\(max_event_bytes=\.\.\.\)"):
        small.emit("a/b", {"msg": "a" * 5000})
    with pytest.raises(fanout.ConfigError, match="max_event_bytes"):
        _client(max_event_bytes=1.5)


# --------------------------------------------------------------------------- the harness's clock


def test_the_harness_clock_reads_milliseconds() -> None:
    client = _client()

    @client.create_function(fn_id="nap", trigger=fanout.TriggerEvent(event="a/nap"))
    def nap(ctx: fanout.ContextSync) -> str:
        ctx.step.sleep("z", 1500)
        ctx.step.wait_for_event("w", event="a/never", timeout=2000)
        return "up"

    result = run_function(nap, fanout.Event(name="a/nap"))
    assert result.status == "completed"
    assert result.skipped_seconds == pytest.approx(3.5, abs=0.1)
