"""The seed workflow: a loader fans out one event per user, and each event
starts its own run of the email function.

Run it with ``python -m examples.weekly_email`` (embedded, nothing to install),
or run a real worker against Redis::

    FANOUT_REDIS_URL=redis://localhost:6379/0 CELERY_BROKER_URL=redis://localhost:6379/1 \
        celery -A examples.weekly_email.app worker

fanout's state and the broker's queues live in separate Redis databases, as
docs/howto/deployment.md advises: without ``CELERY_BROKER_URL`` the broker is the
database after the store's on the same server (1 for a store on 0).
"""

from __future__ import annotations

import asyncio
import os
from urllib.parse import urlsplit

from celery import Celery

import fanout


def broker_beside(store_url: str) -> str:
    """The store's Redis server, one database along: the broker's own database."""
    parts = urlsplit(store_url)
    if parts.scheme not in ("redis", "rediss"):
        raise SystemExit(f"FANOUT_REDIS_URL={store_url}: set CELERY_BROKER_URL to the broker too")
    db = int(parts.path.strip("/") or 0)
    return parts._replace(path=f"/{db + 1 if db < 15 else db - 1}").geturl()


if os.environ.get("FANOUT_REDIS_URL"):
    REDIS_URL = os.environ["FANOUT_REDIS_URL"]
    app = Celery("weekly_email")
    app.config_from_object("fanout.celeryconfig")
    app.conf.broker_url = broker_beside(REDIS_URL)  # CELERY_BROKER_URL, when set, wins
else:
    from fanout.embedded import embedded_celery

    app = embedded_celery("weekly_email")
    REDIS_URL = "memory://weekly-email"

client = fanout.Fanout(app_id="signup-flow", celery=app, redis_url=REDIS_URL)

USERS = [
    {"id": 1, "name": "Ada", "email": "ada@example.com"},
    {"id": 2, "name": "Grace", "email": "grace@example.com"},
    {"id": 3, "name": "Edsger", "email": "edsger@example.com"},
]


async def fetch_users() -> list[dict[str, object]]:
    await asyncio.sleep(0.01)  # stands in for a database query
    return USERS


def load_user_data(user_id: int) -> dict[str, object]:
    return {"user_id": user_id, "logins_this_week": user_id * 3}


def send_email(user: dict[str, object], data: dict[str, object]) -> dict[str, object]:
    return {"to": user["email"], "subject": f"{data['logins_this_week']} logins this week"}


@client.create_function(
    fn_id="weekly-activity-load-users",
    trigger=fanout.TriggerCron(cron="0 12 * * 5"),
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
