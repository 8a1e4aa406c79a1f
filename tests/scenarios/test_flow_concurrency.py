"""Concurrency limits and priority with two real workers of 4 processes: under a burst,
no more steps of one key run at once than the limit (measured from the steps' own
start/end times), other keys proceed meanwhile, an app-scoped limit is shared by
two functions, and a prioritized run takes the next free slot."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import fanout
from tests.scenarios.flow_helpers import max_overlap, module_worker, recorder, spans
from tests.support import Worker, make_app, redis_for, run_of, wait_for, wait_run

app, client = make_app(__name__)
span = recorder(__name__)


@client.create_function(
    fn_id="per-user", trigger=fanout.TriggerEvent(event="t/work"),
    concurrency=[fanout.Concurrency(2, key="event.data.user")],
)
def per_user(ctx: fanout.ContextSync) -> str:
    user = ctx.event.data["user"]
    ctx.step.run("one", span, user, ctx.run_id, 0.3)
    ctx.step.run("two", span, user, ctx.run_id, 0.3)
    return user


@client.create_function(
    fn_id="shared-a", trigger=fanout.TriggerEvent(event="t/shared"),
    concurrency=[fanout.Concurrency(1, key="event.data.k", scope="app"),
                 fanout.Concurrency(3)],
)
def shared_a(ctx: fanout.ContextSync) -> None:
    ctx.step.run("s", span, "a:" + ctx.event.data["k"], ctx.run_id, 0.2, "shared")


@client.create_function(
    fn_id="shared-b", trigger=fanout.TriggerEvent(event="t/shared"),
    concurrency=fanout.Concurrency(1, key="event.data.k", scope="app"),
)
async def shared_b(ctx: fanout.Context) -> None:
    await ctx.step.run("s", span, "b:" + ctx.event.data["k"], ctx.run_id, 0.2, "shared")


@client.create_function(
    fn_id="parallel", trigger=fanout.TriggerEvent(event="t/parallel"),
    concurrency=[fanout.Concurrency(2)],
)
def parallel(ctx: fanout.ContextSync) -> int:
    out = ctx.group.parallel([
        (lambda i=i: ctx.step.run(f"b{i}", span, "p", ctx.run_id, 0.3, "parallel"))
        for i in range(5)
    ])
    return len(out)


@client.create_function(
    fn_id="prio", trigger=fanout.TriggerEvent(event="t/prio"),
    concurrency=[fanout.Concurrency(1)],
    priority=fanout.Priority(run="event.data.boost"),
)
def prio(ctx: fanout.ContextSync) -> None:
    ctx.step.run("only", span, ctx.event.data["name"], ctx.run_id,
                 ctx.event.data.get("seconds", 0.1), "prio")


@pytest.fixture(scope="module")
def big_worker(request: pytest.FixtureRequest, clean_db: redis.Redis, log_dir: Path) -> Iterator[Worker]:
    """Two workers (as on two machines), four processes each."""
    second = Worker(__name__, concurrency=4, name="w2", log_dir=log_dir)
    try:
        yield from module_worker(__name__, log_dir, 4, request)
    finally:
        second.stop()


def test_limit_per_key_holds_and_other_keys_proceed(big_worker: Worker) -> None:
    users = ["ann", "bob", "cy"]
    eids = [client.emit("t/work", {"user": u}) for _ in range(4) for u in users]
    runs = [wait_run(client, run_of(client, e, "per-user"), timeout=60) for e in eids]
    assert all(r.status == "completed" for r in runs), [r.error for r in runs]
    recorded = spans(__name__)
    assert len(recorded) == 24
    by_user = collections.defaultdict(list)
    for s in recorded:
        by_user[s["tag"]].append(s)
    for user, items in by_user.items():
        assert max_overlap(items) <= 2, user
        assert max_overlap(items) == 2, user  # the limit is used, not just respected
    assert max_overlap(recorded) > 2  # the users did not wait for each other
    # Nothing is left holding a slot or waiting.
    r = redis_for(__name__)
    for key in r.scan_iter("fanout:fc:cc*"):
        assert r.zcard(key) == 0, key


def test_app_scope_is_shared_by_two_functions(big_worker: Worker) -> None:
    eids = [client.emit("t/shared", {"k": k}) for k in ("x", "y") for _ in range(3)]
    for e in eids:
        for fn in ("shared-a", "shared-b"):
            assert wait_run(client, run_of(client, e, fn)).status == "completed"
    recorded = spans(__name__, "shared")
    assert len(recorded) == 12
    for k in ("x", "y"):  # one step at a time per key, whichever function runs it
        assert max_overlap([s for s in recorded if s["tag"].endswith(":" + k)]) == 1
    assert max_overlap(recorded) == 2  # x and y side by side


def test_parallel_branches_count_as_steps(big_worker: Worker) -> None:
    eid = client.emit("t/parallel")
    run = wait_run(client, run_of(client, eid, "parallel"))
    assert run.status == "completed" and run.output == 5
    assert max_overlap(spans(__name__, "parallel")) == 2


def test_priority_takes_the_next_free_slot(big_worker: Worker) -> None:
    r = redis_for(__name__)
    blocker = client.emit("t/prio", {"name": "blocker", "seconds": 2.0, "boost": 0})
    wait_for(lambda: _slot_taken(r))
    low = [client.emit("t/prio", {"name": f"low{i}", "boost": 0}) for i in range(3)]
    wait_for(lambda: _waiting(r) == 3)
    high = client.emit("t/prio", {"name": "high", "boost": 300})
    wait_for(lambda: _waiting(r) == 4)
    for e in [blocker, *low, high]:
        assert wait_run(client, run_of(client, e, "prio")).status == "completed"
    order = [s["tag"] for s in sorted(spans(__name__, "prio"), key=lambda s: s["start"])]
    assert order[:2] == ["blocker", "high"], order
    assert max_overlap(spans(__name__, "prio")) == 1


def _slot_taken(r: redis.Redis) -> bool:
    return any(r.zcard(k) for k in r.scan_iter("fanout:fc:cc:*"))


def _waiting(r: redis.Redis) -> int:
    return sum(int(r.zcard(k)) for k in r.scan_iter("fanout:fc:ccw:*"))
