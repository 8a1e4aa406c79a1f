from __future__ import annotations

from decimal import Decimal

from django.db import transaction
from django.http import HttpRequest, JsonResponse

from fanout.django import emit

from .models import Order


def create_order(request: HttpRequest) -> JsonResponse:
    """Create an order and announce it; the event goes out only if the order commits."""
    total = Decimal(request.POST.get("total", "0"))
    with transaction.atomic():
        order = Order.objects.create(total=total)
        event_id = emit("shop/order.created", {"order_id": order.pk, "total": str(total)})
    return JsonResponse({"order_id": order.pk, "event_id": event_id}, status=201)
