"""`kill -9` of a worker mid-step: the run resumes on another worker, completed
steps never run again, the interrupted step runs again (at-least-once)."""

from __future__ import annotations

import time
from pathlib import Path

import fanout
from tests.support import Worker, make_app, redis_for, run_of, wait_for, wait_run

# A short recovery timeout keeps the test quick; the default is 60 s.
app, client = make_app(__name__, recovery_timeout=4)


def count(name: str) -> int:
    return int(redis_for(__name__).incr(f"side:{name}"))


def slow_step() -> str:
    count("slow-started")
    time.sleep(3)
    count("slow-finished")
    return "slow done"


@client.create_function(fn_id="three-steps", trigger=fanout.TriggerEvent(event="t/crash"))
def three_steps(ctx: fanout.ContextSync) -> dict[str, object]:
    first = ctx.step.run("first", count, "first")
    slow = ctx.step.run("slow", slow_step)
    last = ctx.step.run("last", count, "last")
    return {"first": first, "slow": slow, "last": last}


def test_kill_9_mid_step(clean_db: object, log_dir: Path) -> None:
    r = redis_for(__name__)
    w1 = Worker(__name__, name="victim", log_dir=log_dir)
    try:
        eid = client.emit("t/crash")
        rid = run_of(client, eid, "three-steps")
        wait_for(lambda: r.get("side:slow-started"), timeout=30)
        w1.kill()
        killed_at = time.monotonic()
    finally:
        w1.stop()
    assert r.get("side:slow-finished") is None  # it really died mid-step
    w2 = Worker(__name__, name="rescuer", log_dir=log_dir)
    try:
        run = wait_run(client, rid, timeout=60)
        recovered_in = time.monotonic() - killed_at
    finally:
        w2.stop()
    assert run.status == "completed", run.error
    assert run.output == {"first": 1, "slow": "slow done", "last": 1}
    assert int(r.get("side:first")) == 1  # completed before the crash: never again
    assert int(r.get("side:slow-started")) == 2  # the interrupted step ran again
    assert int(r.get("side:slow-finished")) == 1
    assert int(r.get("side:last")) == 1
    steps = {s.step_id: s for s in run.steps}
    assert steps["first"].attempts == 1 and steps["slow"].attempts == 1
    print(f"recovered and completed {recovered_in:.1f}s after kill -9")
