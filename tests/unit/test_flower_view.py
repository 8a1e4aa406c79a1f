"""What Flower (and `celery events`, and worker logs) show for fanout's tasks:
the task name and the ``argsrepr``/``kwargsrepr`` message headers, captured at
publish time on the in-memory broker."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery import signals

import fanout
from fanout.embedded import embedded_celery

app = embedded_celery("flower-view")
client = fanout.Fanout("shop", celery=app, redis_url="memory://flower-view")


@client.create_function(fn_id="send-receipt", trigger=fanout.TriggerEvent(event="shop/paid"))
def send_receipt(ctx: fanout.ContextSync) -> None:
    ctx.step.run("email", lambda: None)


@pytest.fixture
def published() -> Iterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []

    def grab(sender: Any = None, headers: Any = None, **_: Any) -> None:
        if str(sender).startswith("fanout."):
            seen.append(dict(headers))

    signals.before_task_publish.connect(grab, weak=False, dispatch_uid="flower-view")
    try:
        yield seen
    finally:
        signals.before_task_publish.disconnect(dispatch_uid="flower-view")


def test_route_message_names_its_events(published: list[dict[str, Any]]) -> None:
    eid = client.emit("shop/paid", {"order": 7})
    (h,) = published
    assert h["task"] == "fanout.route"
    assert h["argsrepr"] == f"1 event(s): {eid}"
    assert h["kwargsrepr"] == ""


def test_step_message_names_function_and_run(published: list[dict[str, Any]]) -> None:
    client.runtime.publisher.enqueue("shop:send-receipt", "RUN123", 2)
    (h,) = published
    assert h["task"] == "fanout.step"
    assert h["argsrepr"] == "fn=shop:send-receipt run=RUN123 pass=2"
