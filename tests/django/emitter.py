"""A separate process that creates an order and emits its event, then misbehaves.

``python -m tests.django.emitter MODE`` (the test sets DJANGO_SETTINGS_MODULE,
the database and, for outages, the Redis/broker URLs):

* ``crash``: SIGKILLs itself right after the commit, before the event is published
  (its own ``on_commit`` hook is registered first, so it runs first);
* ``outage``: commits while Redis or the broker is unreachable, so the publish fails.

It prints ``{"event_id": ..., "order_id": ...}`` before the commit.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import django


def main(mode: str) -> None:
    django.setup()
    from django.db import transaction

    from fanout.django import emit
    from tests.django.shop.models import Order

    with transaction.atomic():
        order = Order.objects.create(total="9.99")
        if mode == "crash":
            transaction.on_commit(lambda: os.kill(os.getpid(), signal.SIGKILL))
        event_id = emit("shop/order.created", {"order_id": order.pk, "total": "9.99"})
        print(json.dumps({"event_id": event_id, "order_id": order.pk}), flush=True)
    print("committed", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
