"""fanout.django.testing: an in-process worker for a project's own Django tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("django", reason="Django is not installed (pip install django)")

import redis
from django.db import transaction
from django.test import Client

import fanout
from fanout.django import client as fanout_client
from fanout.django import emit
from fanout.django.models import OutboxEvent
from fanout.django.testing import (
    FanoutTestWorker,
    fanout_worker,  # noqa: F401 - the fixture under test
    shared_worker,
    worker,
)
from tests.django.shop.models import Order

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def fanout_celery_worker(django_db_setup: None) -> Iterator[Any]:
    """The plugin's session fixture, narrowed to this module: the in-process worker
    must be gone before test_worker.py's subprocess worker is the only consumer."""
    with shared_worker() as app:
        yield app


def test_the_fixture_runs_the_projects_functions(
    fanout_redis: redis.Redis, client: Client, fanout_worker: FanoutTestWorker  # noqa: F811
) -> None:
    body = client.post("/orders/", {"total": "3.00"}).json()
    runs = fanout_worker.wait(body["event_id"])
    assert [(r.fn_id, r.status) for r in runs] == [("confirm-order", "completed")]
    assert runs[0].output == {"order_id": body["order_id"], "total": "3.00"}
    assert Order.objects.get(pk=body["order_id"]).status == "confirmed"


def test_wait_explains_and_flush_outbox_publishes(
    fanout_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = fanout_client().runtime

    def down(*args: Any, **kwargs: Any) -> list[str]:
        raise fanout.PublishError("Redis is down")

    with worker(timeout=0.5) as w:
        monkeypatch.setattr(rt.publisher, "publish", down)
        with transaction.atomic():
            order = Order.objects.create(total="4.00")
            eid = emit("shop/order.created", {"order_id": order.pk, "total": "4.00"})
        with pytest.raises(AssertionError, match="never published"):
            w.wait(eid)
        monkeypatch.undo()
        assert w.flush_outbox() == 1
        assert not OutboxEvent.objects.exists()
        (run,) = w.wait(eid, timeout=30)
        assert run.status == "completed"
        # An event no function listens to is done as soon as it is published.
        assert w.wait(emit("shop/nobody-listens")) == []
