"""Flow-control options, their validation and arithmetic (pure: no Redis, no Celery)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from celery import Celery

import fanout
from fanout._core.flow import UNEVALUABLE_KEY, as_timestamp, build_flow
from fanout._core.flow_math import (
    bucket,
    concurrency_bucket,
    debounce_due,
    eval_key,
    gcra,
    match_bucket,
    priority_factor,
    wait_score_ms,
)
from fanout._core.function import build_function

# -- option classes --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: fanout.Concurrency(0), "Concurrency limit must be an integer from 1"),
        (lambda: fanout.Concurrency(True), "Concurrency limit"),
        (lambda: fanout.Concurrency(2, scope="account"), "inngest-py's.*scope='app'"),
        (lambda: fanout.Concurrency(2, scope="team"), "scope must be 'fn' or 'app'"),
        (lambda: fanout.Concurrency(2, key="event.data.("), "Concurrency key"),
        (lambda: fanout.Concurrency(2, key="user.id"), "undeclared variable 'user'"),
        (lambda: fanout.Singleton(mode="queue"), "mode must be 'skip' or 'cancel'"),
        (lambda: fanout.Throttle(0, "1m"), "Throttle limit"),
        (lambda: fanout.Throttle(1, "0.5s"), "Throttle period must be from 1s to 7d"),
        (lambda: fanout.Throttle(1, "8d"), "Throttle period"),
        (lambda: fanout.Throttle(1, "1m", burst=0), "Throttle burst"),
        (lambda: fanout.Throttle(1, "soon"), "invalid Throttle period"),
        (lambda: fanout.RateLimit(1, "2d"), "RateLimit period must be from 1s to 1d"),
        (lambda: fanout.RateLimit(-1, "1h"), "RateLimit limit"),
        (lambda: fanout.Debounce("0s"), "Debounce period"),
        (lambda: fanout.Debounce("10s", timeout="5s"), "must not be shorter than its period"),
        (lambda: fanout.Batch(0, "5s"), "Batch max_size"),
        (lambda: fanout.Batch(10_000, "5s"), "Batch max_size"),
        (lambda: fanout.Batch(10, "2h"), "Batch timeout must be from 1s to 1h"),
        (lambda: fanout.Priority(), "Priority needs run="),
        (lambda: fanout.Priority(run="event.data.x +"), "Priority run"),
        (lambda: fanout.Cancel(event="app/*"), "exact event name"),
        (lambda: fanout.Cancel(event="a/b", match="data x"), "field path"),
        (lambda: fanout.Cancel(event="a/b", if_exp="other.x == 1"), "undeclared variable"),
        (lambda: fanout.Timeouts(), "Timeouts needs start=, finish= or both"),
        (lambda: fanout.Timeouts(start=-1), "must not be negative"),
    ],
)
def test_options_check_themselves(make: Any, message: str) -> None:
    with pytest.raises(fanout.ConfigError, match=message):
        make()


def test_options_accept_durations_in_every_form() -> None:
    assert fanout.Throttle(2, "1m").period_s == 60
    assert fanout.Throttle(2, dt.timedelta(seconds=90)).period_s == 90
    assert fanout.RateLimit(5, "30s").period_s == 30
    d = fanout.Debounce("5s", key="event.data.id", timeout="1m")
    assert (d.period_s, d.timeout_s) == (5, 60)
    assert fanout.Batch(10, "2s").timeout_s == 2
    t = fanout.Timeouts(finish="1h")
    assert (t.start_s, t.finish_s) == (None, 3600)
    assert fanout.Cancel(event="a/b", timeout="1d").timeout_s == 86400


# -- combinations ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "other",
    [
        {"debounce": fanout.Debounce("5s")},
        {"cancel": [fanout.Cancel(event="a/stop")]},
        {"idempotency": "event.data.id"},
        {"rate_limit": fanout.RateLimit(1, "1m")},
        {"singleton": fanout.Singleton()},
    ],
)
def test_batching_refuses_per_event_controls(other: dict[str, Any]) -> None:
    name = next(iter(other))
    with pytest.raises(fanout.ConfigError, match=f"batch_events cannot be combined with {name}"):
        build_flow("f", batch_events=fanout.Batch(10, "5s"), **other)


def test_batching_refuses_priority_too() -> None:
    with pytest.raises(fanout.ConfigError, match="cannot be combined with priority"):
        build_flow("f", batch_events=fanout.Batch(10, "5s"),
                   concurrency=fanout.Concurrency(1), priority=fanout.Priority(run="1"))


def test_batching_goes_with_throttle_concurrency_timeouts() -> None:
    spec = build_flow("f", batch_events=fanout.Batch(10, "5s"), throttle=fanout.Throttle(1, "1s"),
                      concurrency=[fanout.Concurrency(2)], timeouts=fanout.Timeouts(finish="1m"))
    assert spec.at_start and spec.at_pass


def test_priority_needs_concurrency() -> None:
    with pytest.raises(fanout.ConfigError, match="priority orders runs waiting for a concurrency"):
        build_flow("f", priority=fanout.Priority(run="event.data.p"))


def test_concurrency_list_rules() -> None:
    one = fanout.Concurrency(1, key="event.data.a")
    two = fanout.Concurrency(5, key="event.data.a", scope="app")
    assert build_flow("f", concurrency=one).concurrency == (one,)
    assert build_flow("f", concurrency=[one, two]).concurrency == (one, two)
    with pytest.raises(fanout.ConfigError, match="at most 2 concurrency limits"):
        build_flow("f", concurrency=[one, two, fanout.Concurrency(1)])
    with pytest.raises(fanout.ConfigError, match="same scope and key"):
        build_flow("f", concurrency=[one, fanout.Concurrency(3, key="event.data.a")])
    with pytest.raises(fanout.ConfigError, match=r"concurrency\[1\] must be a fanout.Concurrency"):
        build_flow("f", concurrency=[one, 3])


def test_wrong_option_types_are_named() -> None:
    with pytest.raises(fanout.ConfigError, match="throttle must be a fanout.Throttle, not RateLimit"):
        build_flow("f", throttle=fanout.RateLimit(1, "1m"))
    with pytest.raises(fanout.ConfigError, match="idempotency of function 'f'"):
        build_flow("f", idempotency="event.data.(")
    with pytest.raises(fanout.ConfigError, match="must be a CEL expression string"):
        build_flow("f", idempotency=42)


def test_no_options_means_no_flow() -> None:
    spec = build_flow("f")
    assert not spec.at_start and not spec.at_pass and spec.describe() == {}


def test_decorator_refuses_at_decoration_time() -> None:
    app = Celery("t", set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json")
    client = fanout.Fanout("unit-flow", celery=app, redis_url="redis://localhost:1/0")
    with pytest.raises(fanout.ConfigError, match="batch_events cannot be combined with debounce"):

        @client.create_function(fn_id="bad", trigger=fanout.TriggerEvent(event="a/b"),
                                batch_events=fanout.Batch(5, "1s"), debounce=fanout.Debounce("2s"))
        def bad(ctx: fanout.ContextSync) -> None: ...

    assert "bad" not in client.functions

    def on_fail(ctx: fanout.ContextSync) -> None: ...

    @client.create_function(fn_id="good", trigger=fanout.TriggerEvent(event="a/b"),
                            concurrency=[fanout.Concurrency(2, key="event.data.user")],
                            on_failure=on_fail)
    def good(ctx: fanout.ContextSync) -> None: ...

    companion = client.functions["good-failure"]
    assert companion.failure_of == "unit-flow:good"
    assert companion.event_triggers[0].event == "fanout/function.failed"
    failed = {"name": "fanout/function.failed",
              "data": {"app_id": "unit-flow", "function_id": "unit-flow-good", "fn_id": "good"}}
    assert companion.event_triggers[0].accepts(failed)
    assert not companion.event_triggers[0].accepts(
        {**failed, "data": {"app_id": "unit-flow", "function_id": "unit-flow-other",
                             "fn_id": "other"}})
    assert client.functions["good"].describe()["concurrency"][0]["limit"] == 2
    with pytest.raises(fanout.ConfigError, match="cancel_runs if_exp"):
        client.cancel_runs("good", if_exp="event.data.(")
    with pytest.raises(fanout.ConfigError, match="started_after"):
        client.cancel_runs("good", started_after="yesterday")
    with pytest.raises(fanout.ConfigError, match="not a function declared"):
        client.cancel_runs("nope")


def test_batching_needs_event_triggers() -> None:
    with pytest.raises(fanout.ConfigError, match="batch_events needs event triggers"):
        build_function(app_id="a", fn_id="f", trigger=fanout.TriggerCron(cron="* * * * *"),
                       name=None, retries=0, backoff=None, checkpoint=False,
                       handler=lambda ctx: None, flow={"batch_events": fanout.Batch(2, "1s")})


# -- keys --------------------------------------------------------------------------------


def test_keys() -> None:
    c = fanout.Concurrency(2, key="event.data.user")
    ev = {"name": "a/b", "data": {"user": "ann"}}
    assert eval_key(None, ev) == ""
    assert eval_key(c._key, ev) == "ann"
    assert eval_key(c._key, {"name": "a/b", "data": {}}) == UNEVALUABLE_KEY
    assert eval_key(fanout.Concurrency(1, key="event.data.n")._key, {"data": {"n": 42}}) == "42"
    fn_b = concurrency_bucket("app", "f1", c, ev)
    assert fn_b == concurrency_bucket("app", "f1", c, ev)
    assert fn_b != concurrency_bucket("app", "f2", c, ev)  # fn scope: per function
    shared = fanout.Concurrency(3, key="event.data.user", scope="app")
    assert concurrency_bucket("app", "f1", shared, ev) == concurrency_bucket("app", "f2", shared, ev)
    assert concurrency_bucket("app", "f1", shared, ev) != concurrency_bucket(
        "app", "f1", shared, {"data": {"user": "bob"}})
    assert len(bucket("x")) == 24


def test_match_bucket() -> None:
    c = fanout.Cancel(event="a/stop", match="data.order.id")
    assert match_bucket(c, {"data": {"order": {"id": 1}}}) == match_bucket(
        c, {"data": {"order": {"id": 1}}, "name": "other"})
    assert match_bucket(c, {"data": {"order": {"id": 1}}}) != match_bucket(
        c, {"data": {"order": {"id": "1"}}})
    assert match_bucket(c, {"data": {}}) is None
    assert match_bucket(fanout.Cancel(event="a/stop"), {}) == "*"


def test_priority_factor_is_clamped() -> None:
    p = fanout.Priority(run="event.data.boost")
    assert priority_factor(p, {"data": {"boost": 30}}) == 30
    assert priority_factor(p, {"data": {"boost": 10_000}}) == 600
    assert priority_factor(p, {"data": {"boost": -10_000}}) == -600
    assert priority_factor(p, {"data": {}}) == 0
    assert priority_factor(p, {"data": {"boost": "high"}}) == 0
    assert priority_factor(None, {}) == 0
    # 60 s of priority beats a run that started waiting 59 s earlier
    assert wait_score_ms(1000.0, 60) < wait_score_ms(941.0, 0)


# -- arithmetic ------------------------------------------------------------------------


def _starts(arrivals: list[float], period: float, limit: int, burst: int) -> list[float]:
    tat, out = 0.0, []
    for now in arrivals:
        start, tat = gcra(tat, now, period, limit, burst)
        out.append(start)
    return out


def test_gcra_spreads_a_burst_evenly() -> None:
    assert _starts([0] * 4, 1000, 1, 1) == [0, 1000, 2000, 3000]
    assert _starts([0] * 4, 1000, 2, 1) == [0, 500, 1000, 1500]


def test_gcra_burst_lets_some_through_at_once() -> None:
    assert _starts([0] * 5, 1000, 1, 3) == [0, 0, 0, 1000, 2000]


def test_gcra_never_exceeds_the_rate_in_any_window() -> None:
    import random

    rnd = random.Random(7)
    arrivals = sorted(rnd.uniform(0, 5000) for _ in range(200))
    period, limit, burst = 1000.0, 3, 2
    starts = sorted(_starts(arrivals, period, limit, burst))
    for i, s in enumerate(starts):  # never more than limit + burst - 1 in one period
        assert sum(1 for t in starts[i:] if t < s + period) <= limit + burst - 1
    assert all(s >= a for s, a in zip(_starts(arrivals, period, limit, burst), arrivals, strict=True))


def test_gcra_idle_time_is_not_banked() -> None:
    start, tat = gcra(0, 100_000, 1000, 1, 1)
    assert (start, tat) == (100_000, 101_000)


def test_debounce_due() -> None:
    assert debounce_due(10, 0, 5, None) == 15
    assert debounce_due(10, 0, 5, 12) == 12
    assert debounce_due(2, 0, 5, 60) == 7


def test_as_timestamp() -> None:
    when = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    assert as_timestamp(when, "x") == when.timestamp()
    assert as_timestamp(5, "x") == 5.0
    assert as_timestamp(None, "x") is None
    with pytest.raises(fanout.ConfigError, match="aware datetime"):
        as_timestamp(dt.datetime(2026, 1, 1), "started_after")
    with pytest.raises(fanout.ConfigError):
        as_timestamp("yesterday", "started_after")
