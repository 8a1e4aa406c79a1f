"""The HTTP ingest endpoint as a Django view: Django's test client in front, a real
Redis and a real `celery -A tests.django.testproj worker` behind."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("django", reason="Django is not installed (pip install django)")

import redis
from django.test import Client

from fanout.django import client as fanout_client
from fanout.http import IngestKeys, sign
from tests.django.ingest_urls import SECRET
from tests.django.shop.models import Order
from tests.support import Worker, run_of, wait_run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls("tests.django.ingest_urls")]


@pytest.fixture()
def key(fanout_redis: redis.Redis) -> str:
    return IngestKeys(fanout_client()).create("shop-frontend").key


def test_a_posted_event_starts_a_run(key: str, django_worker: Worker) -> None:
    order = Order.objects.create(total=42)
    body = {"name": "shop/order.created", "data": {"order_id": order.pk}}
    resp = Client().post("/fanout/events", json.dumps(body), content_type="application/json",
                         HTTP_AUTHORIZATION=f"Bearer {key}")
    assert resp.status_code == 202, resp.content
    (eid,) = resp.json()["ids"]
    run = wait_run(fanout_client(), run_of(fanout_client(), eid, "confirm-order"))
    assert run.status == "completed" and run.output == {"order_id": order.pk, "total": "42.00"}


def test_the_view_refuses_what_the_endpoint_refuses(key: str,
                                                   fanout_redis: redis.Redis) -> None:
    c = Client(enforce_csrf_checks=True)  # a key, not a session: no CSRF token needed
    before = fanout_redis.zcard("fanout:idx:events")
    assert c.post("/fanout/events", "{}", content_type="application/json").status_code == 401
    bad = c.post("/fanout/events", "[1]", content_type="application/json",
                 HTTP_AUTHORIZATION=f"Bearer {key}")
    assert bad.status_code == 400 and "events[0] is a JSON number" in bad.json()["error"]
    assert c.post("/fanout/events", "{}", content_type="text/plain",
                  HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 415
    assert c.get("/fanout/events", HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 405
    big = json.dumps({"name": "shop/x", "data": {"b": "x" * (1024 * 1024)}})
    assert c.post("/fanout/events", big, content_type="application/json",
                  HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 413
    assert fanout_redis.zcard("fanout:idx:events") == before


def test_a_signed_webhook_through_the_view(fanout_redis: redis.Redis) -> None:
    raw = json.dumps({"name": "shop/partner.ping", "id": "partner-1"}).encode()
    header = sign(SECRET, raw)
    c = Client()
    ok = c.post("/fanout/webhooks/partner", raw, content_type="application/json",
                HTTP_FANOUT_SIGNATURE=header)
    assert (ok.status_code, ok.json()["ids"]) == (202, ["partner-1"])
    again = c.post("/fanout/webhooks/partner", raw, content_type="application/json",
                   HTTP_FANOUT_SIGNATURE=header)
    assert again.status_code == 401 and "replayed" in again.json()["error"]
    wrong = c.post("/fanout/webhooks/partner", raw, content_type="application/json",
                   HTTP_FANOUT_SIGNATURE=sign("not-the-partner-secret", raw))
    assert wrong.status_code == 401
