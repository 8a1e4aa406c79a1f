"""The arithmetic of flow control in Python (``fanout._core.flow``) and in the Lua
scripts that decide for real, on the same inputs: ``gcra`` against
``fc_throttle.lua``, ``debounce_due`` against ``fc_debounce.lua``, on a real Redis and
on the embedded store."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fanout._core.flow_math import debounce_due, gcra
from fanout._redis.memory import memory_redis
from fanout._redis.scripts import Scripts
from tests.support import redis_for

KEY = "t:fc:diff:{b}"
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module", params=["redis", "fakeredis"])
def scripts(request: pytest.FixtureRequest, clean_db: redis.Redis) -> Iterator[Scripts]:
    if request.param == "redis":
        client = redis_for(__name__)
    else:
        client = memory_redis(f"memory://flow-diff-{uuid.uuid4().hex}")
    yield Scripts(client)


@SETTINGS
@given(
    period=st.integers(1, 10**6),
    limit=st.integers(1, 100),
    burst=st.integers(1, 20),
    gaps=st.lists(st.integers(0, 10**5), min_size=1, max_size=25),
)
def test_throttle_starts_as_gcra_says(scripts: Scripts, period: int, limit: int, burst: int,
                                      gaps: list[int]) -> None:
    scripts.client.delete(KEY)
    tat, now = 0.0, 1_000_000
    for i, gap in enumerate(gaps):
        now += gap
        start, tat = gcra(tat, now, period, limit, burst)
        got = scripts.run("fc_throttle", [KEY], [f"r{i}", now, period, limit, burst])
        assert got.decode() == f"{start:.3f}", (i, now)


@SETTINGS
@given(
    period=st.integers(1, 10**6),
    timeout=st.one_of(st.none(), st.integers(1, 10**6)),
    gaps=st.lists(st.integers(0, 10**5), min_size=1, max_size=25),
)
def test_debounce_is_due_as_debounce_due_says(scripts: Scripts, period: int,
                                              timeout: int | None, gaps: list[int]) -> None:
    scripts.client.delete(KEY)
    now, first, due = 1_000_000, None, 0.0
    for i, gap in enumerate(gaps):
        now += gap
        run, got, head = (v.decode() for v in scripts.run(
            "fc_debounce", [KEY], [f"r{i}", now, period, timeout or 0, ""]))
        if first is None:
            first, due = now, now + period
            assert (run, head) == ("r0", "new")
        else:
            # The script never moves a pending run's start earlier.
            due = max(due, debounce_due(now, first, period, timeout))
            assert (run, head) == ("r0", "pending")
        assert got == f"{due:.3f}", (i, now)
