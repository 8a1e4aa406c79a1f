"""Found by fanout.django's app config in every process, the worker included."""

from __future__ import annotations

from typing import Any

import redis
from django.conf import settings

import fanout
from fanout.django import client

from .models import Order

fo = client()


def load_order(order_id: int) -> dict[str, Any]:
    # Reading the row proves the worker sees the committed transaction.
    order = Order.objects.get(pk=order_id)
    return {"id": order.pk, "total": str(order.total), "status": order.status}


def mark_confirmed(order_id: int) -> None:
    Order.objects.filter(pk=order_id).update(status="confirmed")


def count_side_effect(event_id: str) -> int:
    r = redis.Redis.from_url(settings.FANOUT["REDIS_URL"])
    return int(r.incr(f"side:confirm:{event_id}"))


@fo.create_function(
    fn_id="confirm-order", trigger=fanout.TriggerEvent(event="shop/order.created")
)
def confirm_order(ctx: fanout.ContextSync) -> dict[str, Any]:
    order_id = ctx.event.data["order_id"]
    order = ctx.step.run("load-order", load_order, order_id)
    ctx.step.run("mark-confirmed", mark_confirmed, order_id)
    ctx.step.run("count", count_side_effect, ctx.event.id)
    return {"order_id": order_id, "total": order["total"]}
