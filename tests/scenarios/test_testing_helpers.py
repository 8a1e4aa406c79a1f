"""fanout.testing: an in-process worker on the embedded store runs a function to the end."""

from __future__ import annotations

import fanout
from fanout.testing import embedded_celery, run_of, wait_run, worker

app = embedded_celery("testing-helpers")
client = fanout.Fanout("helpers", celery=app, redis_url="memory://testing-helpers")


@client.create_function(fn_id="greet", trigger=fanout.TriggerEvent(event="t/greet"))
async def greet(ctx: fanout.Context) -> str:
    name = await ctx.step.run("name", lambda: ctx.event.data["name"].title())
    await ctx.step.sleep("pause", "200ms")
    return f"hello {name}"


def test_in_process_worker_runs_a_function_to_the_end() -> None:
    with worker(app):
        eid = client.emit("t/greet", {"name": "ada"})
        run = wait_run(client, run_of(client, eid, greet), timeout=30)
    assert run.status == "completed"
    assert run.output == "hello Ada"
    assert [s.step_id for s in run.steps] == ["name", "pause"]
