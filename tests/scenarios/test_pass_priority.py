"""Runs under way go before runs not yet started (Redis broker).

A run's first pass is published below the default priority, so on a Redis broker
the worker takes the next pass of a run already under way, or a wake-up, before
the first passes still queued by a large send.  Without it a sleep that comes due
during a burst waits behind the whole backlog.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import fanout
from fanout._celery.publisher import FIRST_PASS_PRIORITY
from tests.support import Worker, make_app, redis_for, run_of, wait_run

app, client = make_app(__name__)
ORDER = "prio:order"
N = 20


def note(tag: str) -> str:
    redis_for(__name__).rpush(ORDER, tag)
    return tag


@client.create_function(fn_id="two", trigger=fanout.TriggerEvent(event="prio/two"))
def two(ctx: fanout.ContextSync) -> list[str]:
    i = ctx.event.data["i"]
    return [ctx.step.run("a", note, f"a{i}"), ctx.step.run("b", note, f"b{i}")]


pytestmark = pytest.mark.skipif(
    not str(app.conf.broker_url).startswith("redis"), reason="broker priorities: Redis only"
)


@pytest.fixture()
def one_process(clean_db: redis.Redis, log_dir: Path) -> Iterator[Worker]:
    w = Worker(__name__, concurrency=1, log_dir=log_dir)
    yield w
    w.stop()


def test_first_passes_go_below_the_default_priority(clean_db: redis.Redis) -> None:
    rt = client._rt
    assert rt.publisher.first_pass_priority == FIRST_PASS_PRIORITY
    queue = app.conf.task_default_queue
    low = f"{queue}\x06\x16{FIRST_PASS_PRIORITY}"
    rt.publisher.enqueue("tests:two", "r-first", 0)
    rt.publisher.enqueue("tests:two", "r-next", 1)
    rt.publisher.enqueue("tests:two", "r-woken", None)
    assert clean_db.llen(low) == 1
    assert clean_db.llen(queue) == 2
    clean_db.delete(low, queue)


def test_runs_under_way_finish_before_new_runs_start(one_process: Worker) -> None:
    """One worker process, prefetch 1: after a run's first pass, its second pass is
    taken before the first passes of the other runs of the same send."""
    r = redis_for(__name__)
    events = [fanout.Event(name="prio/two", data={"i": i}) for i in range(N)]
    ids = client.send_sync(events)
    for eid in ids:
        assert wait_run(client, run_of(client, eid, "two")).status == "completed"
    order = [v.decode() for v in r.lrange(ORDER, 0, -1)]
    assert sorted(order) == sorted([f"a{i}" for i in range(N)] + [f"b{i}" for i in range(N)])
    # FIFO would give a0 a1 ... a19 b0 ... b19. Depth first gives each b right after
    # its a (one message may already be reserved by the worker when a b is published).
    late = [o for o in order if o.startswith("b")
            and order.index(o) > order.index("a" + o[1:]) + 2]
    assert not late, order


def test_the_priority_can_be_set_or_turned_off() -> None:
    for value, want in ((None, None), (6, 6)):
        other, other_client = make_app(f"{__name__}_{value}")
        other.conf.fanout_first_pass_priority = value
        assert other_client._rt.publisher.first_pass_priority == want
    bad, bad_client = make_app(f"{__name__}_bad")
    bad.conf.fanout_first_pass_priority = "high"
    with pytest.raises(fanout.ConfigError, match="fanout_first_pass_priority"):
        _ = bad_client._rt.publisher.first_pass_priority
