"""``ctx.patched``: runs begun before a marker take the old branch and runs begun
after it the new one, on every pass, across a worker restart.

Version 1 has no marker. Version 2 declares ``patches=["new-pricing"]`` and asks
``ctx.patched`` on every pass; each answer is logged in Redis.
"""

from __future__ import annotations

from pathlib import Path

import redis

import fanout
from tests.scenarios.versioning_helpers import CODE, counted, executions, wait_status, worker_on
from tests.support import make_app, redis_for, run_of, wait_for, wait_run

app, client = make_app(__name__)
r = redis_for(__name__)


def in_nap2(run_id: str) -> bool:
    info = client.get_run(run_id)
    return info is not None and info.status == "sleeping" and any(
        s.step_id == "nap2" for s in info.steps)


def answers(run_id: str) -> list[str]:
    return [x.decode() for x in r.lrange(f"test:patched:{run_id}", 0, -1)]


if CODE == "1":

    @client.create_function(fn_id="price", trigger=fanout.TriggerEvent(event="t/price"))
    def price(ctx: fanout.ContextSync) -> str:
        counted(r, ctx, "quote", 100)
        ctx.step.sleep("nap", "3s")
        counted(r, ctx, "charge-old", "old")
        ctx.step.sleep("nap2", "6s")
        return "old"

else:

    @client.create_function(fn_id="price", trigger=fanout.TriggerEvent(event="t/price"),
                            patches=["new-pricing"])
    def price(ctx: fanout.ContextSync) -> str:
        new = ctx.patched("new-pricing")
        r.rpush(f"test:patched:{ctx.run_id}", "new" if new else "old")
        counted(r, ctx, "quote", 90 if new else 100)
        ctx.step.sleep("nap", "3s")
        if new:
            counted(r, ctx, "charge-new", "new")
        else:
            counted(r, ctx, "charge-old", "old")
        ctx.step.sleep("nap2", "6s")
        return "new" if new else "old"


def test_marker_keeps_each_run_on_its_branch(clean_db: redis.Redis, log_dir: Path) -> None:
    w1 = worker_on(__name__, "1", log_dir)
    try:
        before = run_of(client, client.emit("t/price"), "price")
        wait_status(client, [before], "sleeping")
    finally:
        w1.stop()
    w2 = worker_on(__name__, "2", log_dir)
    try:
        after = run_of(client, client.emit("t/price"), "price")
        # Both runs pass the first sleep on version 2 and sleep again: restart the worker.
        wait_for(lambda: all(in_nap2(rid) for rid in (before, after)), timeout=30)
        assert answers(after) == ["new", "new"] and answers(before) == ["old"]
    finally:
        w2.stop()
    w3 = worker_on(__name__, "2", log_dir, name="code2-restarted")
    try:
        old_run, new_run = wait_run(client, before), wait_run(client, after)
    finally:
        w3.stop()
    assert old_run.status == new_run.status == "completed", (old_run.error, new_run.error)
    assert old_run.output == "old" and new_run.output == "new"
    assert old_run.markers == [] and new_run.markers == ["new-pricing"]
    # Every pass of each run got the same answer, before and after the restart.
    assert answers(before) == ["old", "old"]
    assert answers(after) == ["new", "new", "new"]
    assert executions(r, before) == {"quote": 1, "charge-old": 1}
    assert executions(r, after) == {"quote": 1, "charge-new": 1}
    assert [s.output for s in new_run.steps if s.step_id == "quote"] == [90]
    assert not new_run.crossed_deploy and old_run.crossed_deploy
