"""Place an order (its confirmation is enqueued when the order is committed) and show it."""

from __future__ import annotations

import json

from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from .models import Order
from .tasks import confirm_order


@csrf_exempt  # an API for curl in this example; keep CSRF protection in a real site
@require_POST
def place_order(request: HttpRequest) -> HttpResponse:
    data = json.loads(request.body or b"{}")
    with transaction.atomic():
        order = Order.objects.create(item=data.get("item", "tea"),
                                     quantity=int(data.get("quantity", 1)))
        # Enqueued only if this transaction commits: the consumer never looks
        # for an order that a rollback removed.
        confirm_order.on_commit(order.pk)
    return JsonResponse({"id": order.pk, "status": order.status}, status=202)


@require_GET
def show_order(request: HttpRequest, order_id: int) -> HttpResponse:
    order = get_object_or_404(Order, pk=order_id)
    confirmed = order.confirmed_at.isoformat() if order.confirmed_at else None
    return JsonResponse({"id": order.pk, "item": order.item, "quantity": order.quantity,
                         "status": order.status, "confirmed_at": confirmed})
