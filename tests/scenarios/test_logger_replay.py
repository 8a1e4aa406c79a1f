"""``ctx.logger`` stays silent while memoized code replays, read from a real worker's
log: each line is logged once, on the pass that first runs the code around it,
including the code after a sleep, after a wait its event resolved and after a
parallel group (the pass that saved those stopped there). A line before a raise
outside steps is logged again by the pass that retries it, and by no later pass."""

from __future__ import annotations

from pathlib import Path

import redis

import fanout
from tests.support import Worker, make_app, redis_for, run_of, wait_for, wait_run

app, client = make_app(__name__)
LINES = ("start", "after a", "after b", "after nap", "after wait", "after group", "end")


@client.create_function(fn_id="chatty", trigger=fanout.TriggerEvent(event="t/chatty"))
def chatty(ctx: fanout.ContextSync) -> str:
    tag = ctx.event.data["tag"]
    ctx.logger.info(f"{tag}: start")
    ctx.step.run("a", lambda: 1)
    ctx.logger.info(f"{tag}: after a")
    ctx.step.run("b", lambda: 2)
    ctx.logger.info(f"{tag}: after b")
    ctx.step.sleep("nap", "1s")
    ctx.logger.info(f"{tag}: after nap")
    ctx.step.wait_for_event("w", event="t/chatty-go", timeout="1m",
                            if_exp="async.data.tag == event.data.tag")
    ctx.logger.info(f"{tag}: after wait")
    ctx.group.parallel([lambda: ctx.step.run("x", lambda: 3),
                        lambda: ctx.step.run("y", lambda: 4)])
    ctx.logger.info(f"{tag}: after group")
    ctx.step.run("c", lambda: 5)
    ctx.logger.info(f"{tag}: end")
    return "done"


@client.create_function(fn_id="chatty-async", trigger=fanout.TriggerEvent(event="t/chatty-a"))
async def chatty_async(ctx: fanout.Context) -> str:
    tag = ctx.event.data["tag"]
    ctx.logger.info(f"{tag}: start")
    await ctx.step.run("a", lambda: 1)
    ctx.logger.info(f"{tag}: after a")
    await ctx.step.run("b", lambda: 2)
    ctx.logger.info(f"{tag}: after b")
    await ctx.step.sleep("nap", "1s")
    ctx.logger.info(f"{tag}: after nap")
    await ctx.step.wait_for_event("w", event="t/chatty-go", timeout="1m",
                                  if_exp="async.data.tag == event.data.tag")
    ctx.logger.info(f"{tag}: after wait")
    await ctx.group.parallel((lambda: ctx.step.run("x", lambda: 3),
                              lambda: ctx.step.run("y", lambda: 4)))
    ctx.logger.info(f"{tag}: after group")
    await ctx.step.run("c", lambda: 5)
    ctx.logger.info(f"{tag}: end")
    return "done"


@client.create_function(fn_id="stumbles", trigger=fanout.TriggerEvent(event="t/stumbles"),
                        retries=2)
def stumbles(ctx: fanout.ContextSync) -> str:
    ctx.step.run("a", lambda: 1)
    ctx.logger.info("stumbles: after a")
    if redis_for(__name__).incr(f"tries:{ctx.run_id}") == 1:
        raise RuntimeError("once, outside any step")
    ctx.step.run("b", lambda: 2)
    ctx.logger.info("stumbles: after b")
    ctx.step.run("c", lambda: 3)
    ctx.logger.info("stumbles: after c")
    ctx.step.run("d", lambda: 4)
    ctx.logger.info("stumbles: end")
    return "done"


def test_each_line_once_in_the_worker_log(clean_db: redis.Redis, log_dir: Path) -> None:
    w = Worker(__name__, log_dir=log_dir)
    try:
        runs = {}
        for fn_id, name, tag in (("chatty", "t/chatty", "sync"),
                                 ("chatty-async", "t/chatty-a", "async")):
            runs[tag] = run_of(client, client.emit(name, {"tag": tag}), fn_id)
        wait_for(lambda: all((i := client.get_run(r)) is not None and i.status == "waiting"
                             for r in runs.values()), timeout=60)
        for tag in runs:
            client.emit("t/chatty-go", {"tag": tag})
        runs["stumbles"] = run_of(client, client.emit("t/stumbles"), "stumbles")
        for rid in runs.values():
            run = wait_run(client, rid)
            assert run.status == "completed", run.error
        log = w.log()
    finally:
        w.stop()
    for tag, rid in runs.items():
        mine = [ln.split(f"{rid}] ", 1)[1] for ln in log.splitlines() if f"{rid}] {tag}: " in ln]
        if tag == "stumbles":  # 'after a' again on the retry, then each line once
            assert mine == [f"stumbles: {x}" for x in
                            ("after a", "after a", "after b", "after c", "end")], mine
            continue
        assert mine == [f"{tag}: {line}" for line in LINES], (tag, mine)
