"""fanout functions of the orders app, loaded by every process (the worker too)."""

from typing import Any

from django.core.mail import send_mail

import fanout
from fanout.django import client

from .models import Order

fo = client()


def load_order(order_id: int) -> dict[str, Any]:
    order = Order.objects.get(pk=order_id)
    return {"id": order.pk, "email": order.email, "total": str(order.total)}


def send_confirmation(order: dict[str, Any]) -> str:
    send_mail(
        subject=f"Order {order['id']} confirmed",
        message=f"Thanks! We received your order of {order['total']}.",
        from_email=None,
        recipient_list=[order["email"]],
    )
    return order["email"]


def mark_confirmed(order_id: int) -> None:
    Order.objects.filter(pk=order_id).update(status="confirmed")


@fo.create_function(
    fn_id="send-order-confirmation",
    trigger=fanout.TriggerEvent(event="app/order.created"),
)
def send_order_confirmation(ctx: fanout.ContextSync) -> dict[str, Any]:
    # Each step runs once; if the worker dies after the email, the retry skips it.
    order = ctx.step.run("load-order", load_order, ctx.event.data["order_id"])
    emailed = ctx.step.run("send-confirmation", send_confirmation, order)
    ctx.step.run("mark-confirmed", mark_confirmed, order["id"])
    return {"emailed": emailed}
