"""ctx.step.sleep / sleep_until and wait_for_event, with real workers: a sleeping
run holds no worker, wakes on time from the timer set, and an awaited event is
delivered exactly once to each waiting run."""

from __future__ import annotations

import datetime as dt
import time

import fanout
from tests.support import make_app, redis_for, run_of, wait_for, wait_run

app, client = make_app(__name__)


def now() -> float:
    return time.time()


@client.create_function(fn_id="sleeper", trigger=fanout.TriggerEvent(event="t/sleep"))
def sleeper(ctx: fanout.ContextSync) -> dict[str, float]:
    before = ctx.step.run("before", now)
    ctx.step.sleep("nap", ctx.event.data.get("for", "1s"))
    after = ctx.step.run("after", now)
    return {"slept": after - before}


@client.create_function(fn_id="sleep-until", trigger=fanout.TriggerEvent(event="t/sleep-until"))
async def sleep_until(ctx: fanout.Context) -> float:
    target = dt.datetime.fromtimestamp(ctx.event.data["at"], dt.timezone.utc)
    await ctx.step.sleep_until("until", target)
    return await ctx.step.run("woke", now)


@client.create_function(fn_id="approval", trigger=fanout.TriggerEvent(event="t/order"))
def approval(ctx: fanout.ContextSync) -> dict[str, object]:
    ev = ctx.step.wait_for_event(
        "wait-approval", event="t/approved", timeout=ctx.event.data.get("timeout", "30s"),
        match="data.order_id",
    )
    if ev is None:
        return {"approved": False}
    return {"approved": True, "by": ev.data["by"], "event_id": ev.id}


@client.create_function(fn_id="if-exp", trigger=fanout.TriggerEvent(event="t/big-order"))
async def if_exp(ctx: fanout.Context) -> object:
    ev = await ctx.step.wait_for_event(
        "wait", event="t/paid", timeout="30s",
        if_exp="async.data.order_id == event.data.order_id && async.data.amount >= 100",
    )
    return ev.data["amount"] if ev else None


@client.create_function(fn_id="lookback", trigger=fanout.TriggerEvent(event="t/late-start"))
def lookback(ctx: fanout.ContextSync) -> object:
    ev = ctx.step.wait_for_event("wait", event="t/early-bird", timeout="5s", match="data.k",
                                 lookback="1m")
    return ev.data if ev else None


def test_sleep_holds_no_worker_and_wakes_on_time(worker: object) -> None:
    eid = client.emit("t/sleep", {"for": "2s"})
    rid = run_of(client, eid, "sleeper")
    wait_for(lambda: (r := client.get_run(rid)) is not None and r.status == "sleeping")
    # While it sleeps, the two worker processes are free for other runs.
    quick = [client.emit("t/sleep", {"for": "0s"}) for _ in range(3)]
    for q in quick:
        assert wait_run(client, run_of(client, q, "sleeper"), timeout=10).status == "completed"
    assert client.get_run(rid).status == "sleeping"  # type: ignore[union-attr]
    run = wait_run(client, rid)
    assert run.status == "completed", run.error
    assert run.output["slept"] >= 2.0
    nap = next(s for s in run.steps if s.step_id == "nap")
    assert nap.kind == "sleep" and nap.status == "completed"
    print(f"slept {run.output['slept']:.2f}s for a 2 s sleep")


def test_sleep_until(worker: object) -> None:
    at = time.time() + 1.5
    eid = client.emit("t/sleep-until", {"at": at})
    run = wait_run(client, run_of(client, eid, "sleep-until"))
    assert run.status == "completed", run.error
    assert run.output >= at


def test_wait_for_event_match_and_exactly_once(worker: object) -> None:
    orders = {f"o{i}": client.emit("t/order", {"order_id": f"o{i}"}) for i in range(3)}
    rids = {k: run_of(client, e, "approval") for k, e in orders.items()}
    for rid in rids.values():
        wait_for(lambda rid=rid: (r := client.get_run(rid)) is not None and r.status == "waiting")
    other = client.emit("t/approved", {"order_id": "nope", "by": "x"})
    first = client.emit("t/approved", {"order_id": "o1", "by": "ann"})
    client.emit("t/approved", {"order_id": "o1", "by": "bob"})  # o1 already resolved
    run = wait_run(client, rids["o1"])
    assert run.output == {"approved": True, "by": "ann", "event_id": first}
    assert client.get_run(rids["o0"]).status == "waiting"  # type: ignore[union-attr]
    assert other
    # One event resolves several waiting runs that match it.
    shared = client.emit("t/approved", {"order_id": "o0", "by": "cy"})
    client.emit("t/approved", {"order_id": "o2", "by": "di"})
    assert wait_run(client, rids["o0"]).output["event_id"] == shared
    assert wait_run(client, rids["o2"]).output["by"] == "di"


def test_many_runs_wait_on_one_event(worker: object) -> None:
    eids = [client.emit("t/big-order", {"order_id": "same"}) for _ in range(4)]
    rids = [run_of(client, e, "if-exp") for e in eids]
    for rid in rids:
        wait_for(lambda rid=rid: (r := client.get_run(rid)) is not None and r.status == "waiting")
    client.emit("t/paid", {"order_id": "same", "amount": 5})  # fails the if_exp
    client.emit("t/paid", {"order_id": "same", "amount": 150})
    assert [wait_run(client, r).output for r in rids] == [150] * 4


def test_wait_times_out_to_none(worker: object) -> None:
    eid = client.emit("t/order", {"order_id": "never", "timeout": "1s"})
    run = wait_run(client, run_of(client, eid, "approval"))
    assert run.output == {"approved": False}


def test_lookback_sees_an_event_that_came_first(worker: object) -> None:
    client.emit("t/early-bird", {"k": "abc", "v": 1})
    time.sleep(0.5)  # the awaited event is routed before the wait exists
    eid = client.emit("t/late-start", {"k": "abc"})
    run = wait_run(client, run_of(client, eid, "lookback"))
    assert run.output == {"k": "abc", "v": 1}
    eid2 = client.emit("t/late-start", {"k": "zzz"})
    assert wait_run(client, run_of(client, eid2, "lookback")).output is None
    assert redis_for(__name__).exists("fanout:waits:t/early-bird") == 0
