"""``pass_budget``: checked where it is given, with a message naming the option; the
client's value is each function's default; the test harness goes on in-process as a
worker does and still counts every pass."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest

import fanout
from fanout.testing import embedded_celery, run_function

app = embedded_celery()
client = fanout.Fanout("pass-budget", celery=app, redis_url="memory://pass-budget")


@pytest.mark.parametrize("value", [True, False, -0.01, 300.5, math.nan, math.inf, "0.1",
                                   None, [0.1]])
def test_the_client_refuses_a_bad_budget(value: Any) -> None:
    message = ("pass_budget must be a number of seconds from 0 to 300 (0: one fanout.step "
               f"task per step), not {value!r}")
    with pytest.raises(fanout.ConfigError, match=re.escape(message)):
        fanout.Fanout("pass-budget-bad", celery=app, redis_url="memory://pass-budget",
                      pass_budget=value)


@pytest.mark.parametrize("value", [True, -1, 301, "fast", math.nan])
def test_create_function_refuses_a_bad_budget(value: Any) -> None:
    message = (f"function 'bad': pass_budget must be a number of seconds from 0 to 300 "
               f"(0: one fanout.step task per step), not {value!r}")
    with pytest.raises(fanout.ConfigError, match=re.escape(message)):
        client.create_function(fn_id="bad", trigger=fanout.TriggerEvent(event="pb/bad"),
                               pass_budget=value)


def test_the_budget_defaults_to_the_clients() -> None:
    other = fanout.Fanout("pass-budget-0", celery=embedded_celery(),
                          redis_url="memory://pass-budget-0", pass_budget=0)

    @other.create_function(fn_id="inherits", trigger=fanout.TriggerEvent(event="pb/x"))
    def inherits(ctx: fanout.ContextSync) -> None:
        pass

    @other.create_function(fn_id="own", trigger=fanout.TriggerEvent(event="pb/x"),
                           pass_budget=300)
    def own(ctx: fanout.ContextSync) -> None:
        pass

    @client.create_function(fn_id="default", trigger=fanout.TriggerEvent(event="pb/x"))
    def default(ctx: fanout.ContextSync) -> None:
        pass

    assert inherits.fanout_function.pass_budget == 0.0  # type: ignore[attr-defined]
    assert own.fanout_function.pass_budget == 300.0  # type: ignore[attr-defined]
    assert default.fanout_function.pass_budget == 0.05  # type: ignore[attr-defined]
    assert own.fanout_function.describe()["pass_budget"] == 300.0  # type: ignore[attr-defined]
    assert "pass_budget" not in default.fanout_function.describe()  # type: ignore[attr-defined]


def _three(ctx: fanout.ContextSync) -> list[int]:
    return [ctx.step.run(s, lambda n=n: n) for n, s in enumerate("abc")]


def test_the_harness_goes_on_and_counts_every_pass() -> None:
    chained = client.create_function(fn_id="chained", trigger=fanout.TriggerEvent(event="pb/c"),
                                     pass_budget=300)(_three)
    result = run_function(chained, fanout.Event(name="pb/c"))
    assert result.status == "completed" and result.output == [0, 1, 2]
    assert result.passes == 3
