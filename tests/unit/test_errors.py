"""The error tree: one base, ValueError where input is bad, and every error pickles."""

from __future__ import annotations

import datetime as dt
import pickle

import pytest

import fanout


@pytest.mark.parametrize(
    "err",
    [
        fanout.ConfigError("bad option"),
        fanout.EventError("bad event"),
        fanout.ExpressionError("bad expr"),
        fanout.PublishError("redis down"),
        fanout.NonRetriableError("stop"),
        fanout.InvokeError("child failed"),
        fanout.NestedStepError("nested"),
        fanout.NonDeterminismError("changed"),
        fanout.RetryAfterError("later", 30),
        fanout.RetryAfterError("later", dt.timedelta(minutes=1)),
        fanout.StepError("charge", "ValueError", "declined"),
    ],
)
def test_every_error_pickles_with_its_attributes(err: fanout.FanoutError) -> None:
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err)
    assert str(back) == str(err)
    assert back.__dict__ == err.__dict__
    assert isinstance(back, fanout.FanoutError)


def test_tree() -> None:
    for cls in (fanout.ConfigError, fanout.EventError, fanout.ExpressionError):
        assert issubclass(cls, ValueError)
    for cls in (fanout.InvokeError, fanout.NestedStepError, fanout.NonDeterminismError):
        assert issubclass(cls, fanout.NonRetriableError)
    err = fanout.StepError("charge", "ValueError", "declined")
    assert (err.step_id, err.error_type, err.error_message) == ("charge", "ValueError", "declined")
    assert "charge" in str(err) and "declined" in str(err)


def test_retry_after_delay_forms() -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    assert fanout.RetryAfterError("x", 5000).delay_seconds(now) == 5
    assert fanout.RetryAfterError("x", dt.timedelta(seconds=7)).delay_seconds(now) == 7
    later = now + dt.timedelta(seconds=9)
    assert fanout.RetryAfterError("x", later).delay_seconds(now) == 9
    assert fanout.RetryAfterError("x", now - dt.timedelta(seconds=9)).delay_seconds(now) == 0
