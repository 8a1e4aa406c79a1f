"""``Batch(..., if_exp=...)`` batches only the events it is true for; function ids
with any printable characters run (keys and names that need it are encoded); a
deliberate difference fails at declaration naming both spellings."""

from __future__ import annotations

import pytest

import fanout
from tests.support import make_app, redis_for, run_of, wait_for, wait_run

app, client = make_app(__name__)


@client.create_function(
    fn_id="batched", trigger=fanout.TriggerEvent(event="t/batched"),
    batch_events=fanout.Batch(max_size=3, timeout="30s", if_exp="event.data.bulk == true"),
)
def batched(ctx: fanout.ContextSync) -> list[int]:
    return [int(e.data["n"]) for e in ctx.events]


@client.create_function(
    fn_id="batched-async", trigger=fanout.TriggerEvent(event="t/batched-async"),
    batch_events=fanout.Batch(max_size=2, timeout="30s", if_exp="event.data.bulk == true"),
)
async def batched_async(ctx: fanout.Context) -> list[int]:
    return [int(e.data["n"]) for e in ctx.events]


ODD = "Sync {users} | nightly: ünïcode & spaces"


@client.create_function(fn_id=ODD, trigger=fanout.TriggerEvent(event="t/odd"),
                        concurrency=[fanout.Concurrency(limit=1)])
def odd(ctx: fanout.ContextSync) -> str:
    return str(ctx.step.run("s", lambda: ctx.event.data["n"]))


@client.create_function(fn_id="odd async {x}|y", trigger=fanout.TriggerEvent(event="t/odd-async"))
async def odd_async(ctx: fanout.Context) -> str:
    return str(await ctx.step.run("s", lambda: "ok"))


@pytest.mark.parametrize(("fn_id", "size"), [("batched", 3), ("batched-async", 2)])
def test_batch_if_exp(worker: object, fn_id: str, size: int) -> None:
    alone = client.emit(f"t/{fn_id}", {"n": 100, "bulk": False})
    run = wait_run(client, run_of(client, alone, fn_id), timeout=20)  # not held for 30 s
    assert run.status == "completed" and run.output == [100]
    # One send: one router message adds them in order (concurrent routers may race to
    # open a batch, a separate matter).
    client.send_sync([fanout.Event(name=f"t/{fn_id}", data={"n": n, "bulk": True})
                      for n in range(size)])

    def batch_run() -> list[object]:
        return [r.output for r in client.list_runs(fn_id=fn_id)
                if r.status == "completed" and r.output != [100]]

    assert wait_for(batch_run, timeout=20) == [list(range(size))]


def test_function_ids_with_any_printable_characters(worker: object) -> None:
    ids = [client.emit("t/odd", {"n": n}) for n in range(3)]
    runs = [wait_run(client, run_of(client, eid, ODD)) for eid in ids]
    assert [r.status for r in runs] == ["completed"] * 3, [r.error for r in runs]
    assert sorted(r.output for r in runs) == ["0", "1", "2"]
    assert {r.run_id for r in client.list_runs(fn_id=ODD)} == {r.run_id for r in runs}
    arun = wait_run(client, run_of(client, client.emit("t/odd-async"), "odd async {x}|y"))
    assert arun.status == "completed" and arun.output == "ok"
    # The function key is encoded in every index key; "|" then only separates the
    # index's own suffix (an active set, a status, a version, a search attribute).
    keys = [k.decode() for k in redis_for(__name__).keys("fanout:idx:fn:*")]
    fn_parts = [k.split("|", 1)[0] for k in keys]
    assert all("{" not in k and "|" not in k and " " not in k for k in fn_parts), keys
    assert "fanout:idx:fn:tests:odd%20async%20%7Bx%7D%7Cy" in fn_parts, keys


@pytest.mark.parametrize("bad", ["", "   ", "line\nbreak", "tab\there", "x" * 129])
def test_function_ids_that_are_refused(bad: str) -> None:
    with pytest.raises(fanout.ConfigError, match="printable"):
        client.create_function(fn_id=bad, trigger=fanout.TriggerEvent(event="t/x"))(
            lambda ctx: None)


def test_priority_without_concurrency_names_both_spellings() -> None:
    with pytest.raises(fanout.ConfigError) as err:
        client.create_function(fn_id="prio", trigger=fanout.TriggerEvent(event="t/x"),
                               priority=fanout.Priority(run="10"))(lambda ctx: None)
    assert "inngest.Priority" in str(err.value) and "fanout.Concurrency" in str(err.value)
