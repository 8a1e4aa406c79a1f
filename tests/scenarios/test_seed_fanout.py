"""The seed workflow end to end: one loader fans out one event per user (200 users),
each event starts its own run of the email function, with real workers."""

from __future__ import annotations

import asyncio

import fanout
from tests.support import make_app, redis_for, run_of, wait_for, wait_run

app, client = make_app(__name__, app_id="signup-flow")
N_USERS = 200


async def fetch_users() -> list[dict[str, object]]:
    await asyncio.sleep(0)
    redis_for(__name__).incr("side:fetch")
    return [{"id": i, "email": f"user{i}@example.com"} for i in range(N_USERS)]


def load_user_data(user_id: int) -> dict[str, object]:
    return {"user_id": user_id, "activity": user_id % 7}


def send_email(user: dict[str, object], data: dict[str, object]) -> str:
    redis_for(__name__).hincrby("side:emails", str(user["id"]), 1)
    return f"sent to {user['email']}"


@client.create_function(
    fn_id="weekly-activity-load-users",
    trigger=fanout.TriggerEvent(event="app/weekly-load"),
)
async def load_users(ctx: fanout.Context) -> dict[str, int]:
    users = await ctx.step.run("fetch-users", fetch_users)
    events = [
        fanout.Event(name="app/weekly-email-activity.send", data={**u, "user": u}) for u in users
    ]
    await ctx.step.send_event("fan-out-weekly-emails", events)
    return {"count": len(users)}


@client.create_function(
    fn_id="weekly-activity-send-email",
    trigger=fanout.TriggerEvent(event="app/weekly-email-activity.send"),
)
def send_reminder(ctx: fanout.ContextSync) -> None:
    data = ctx.step.run("load-user-data", load_user_data, ctx.event.data["user"]["id"])
    ctx.step.run("email-user", send_email, ctx.event.data["user"], data)


def test_seed_fanout_200_users(worker: object) -> None:
    r = redis_for(__name__)
    eid = client.emit("app/weekly-load")
    loader = wait_run(client, run_of(client, eid, "weekly-activity-load-users"))
    assert loader.status == "completed", loader.error
    assert loader.output == {"count": N_USERS}
    assert [s.step_id for s in loader.steps] == ["fetch-users", "fan-out-weekly-emails"]
    sent_ids = loader.steps[1].output
    assert len(sent_ids) == N_USERS and len(set(sent_ids)) == N_USERS

    def all_done() -> list[fanout.RunInfo] | None:
        runs = client.list_runs(fn_id="weekly-activity-send-email", limit=1000)
        ok = [x for x in runs if x.status == "completed"]
        return runs if len(ok) == N_USERS else None

    runs = wait_for(all_done, timeout=120)
    assert len(runs) == N_USERS
    # Each child run records the run that caused it, and the event that started it.
    assert {x.parent_run_id for x in runs} == {loader.run_id}
    assert sorted(e for x in runs for e in x.event_ids) == sorted(sent_ids)
    child = client.get_run(run_of(client, sent_ids[7], "weekly-activity-send-email"))
    assert child is not None
    assert [s.step_id for s in child.steps] == ["load-user-data", "email-user"]
    assert child.steps[0].output == {"user_id": 7, "activity": 0}
    assert child.steps[1].output == "sent to user7@example.com"
    # Exactly one email per user, one fetch in all.
    emails = {int(k): int(v) for k, v in r.hgetall("side:emails").items()}
    assert emails == {i: 1 for i in range(N_USERS)}
    assert int(r.get("side:fetch") or 0) == 1
    # Runs by event: the loader's event started exactly the loader.
    assert [x.run_id for x in client.list_runs(event_id=eid)] == [loader.run_id]
