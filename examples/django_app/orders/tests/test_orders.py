"""Testing fanout functions in a Django test suite (pytest-django).

``-p fanout.django.testing`` in pytest.ini provides the ``fanout_worker``
fixture: a worker inside the test process, on the in-memory store and broker
configured in proj/settings_test.py.
"""

import pytest
from django.core import mail
from django.db import transaction

import fanout.django
from orders.models import Order


@pytest.mark.django_db(transaction=True)
def test_a_new_order_is_confirmed(client, fanout_worker):
    response = client.post("/orders/", {"email": "ada@example.com", "total": "12.50"})
    assert response.status_code == 201
    body = response.json()

    (run,) = fanout_worker.wait(body["event_id"])

    assert run.fn_id == "send-order-confirmation"
    assert run.status == "completed", run.error
    assert run.output == {"emailed": "ada@example.com"}
    assert Order.objects.get(pk=body["order_id"]).status == "confirmed"
    assert [m.to for m in mail.outbox] == [["ada@example.com"]]
    detail = client.get(f"/orders/{body['order_id']}/").json()
    assert detail["runs"][0]["status"] == "completed"


@pytest.mark.django_db(transaction=True)
def test_a_failed_order_sends_nothing(fanout_worker):
    with pytest.raises(RuntimeError), transaction.atomic():
        order = Order.objects.create(email="bob@example.com", total="1.00")
        event_id = fanout.django.emit("app/order.created", {"order_id": order.pk})
        raise RuntimeError("payment declined")

    # Nothing was published: the event left with the rolled-back transaction.
    with pytest.raises(AssertionError, match="never published"):
        fanout_worker.wait(event_id, timeout=0.5)
    assert mail.outbox == []
