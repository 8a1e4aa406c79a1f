from decimal import Decimal, InvalidOperation

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

import fanout.django

from .models import Order


@csrf_exempt  # a JSON API for the example; keep CSRF protection in a real project
@require_POST
def create_order(request: HttpRequest) -> JsonResponse:
    try:
        total = Decimal(request.POST.get("total", ""))
    except InvalidOperation:
        return JsonResponse({"error": "total must be a number"}, status=400)
    email = request.POST.get("email", "")
    if "@" not in email:
        return JsonResponse({"error": "email is required"}, status=400)
    with transaction.atomic():
        order = Order.objects.create(email=email, total=total)
        # Written to the outbox in this transaction, published after the commit.
        # If anything below raised, the order and the event would both vanish.
        order.event_id = fanout.django.emit(
            "app/order.created", {"order_id": order.pk, "email": email, "total": str(total)}
        )
        order.save(update_fields=["event_id"])
    return JsonResponse({"order_id": order.pk, "event_id": order.event_id}, status=201)


@require_GET
def order_detail(request: HttpRequest, order_id: int) -> JsonResponse:
    order = get_object_or_404(Order, pk=order_id)
    runs = fanout.django.client().list_runs(event_id=order.event_id) if order.event_id else []
    return JsonResponse(
        {
            "order_id": order.pk,
            "status": order.status,
            "runs": [{"function": r.fn_id, "status": r.status, "output": r.output} for r in runs],
        }
    )
