"""The orders app's tasks; minique.contrib.django imports this module at startup."""

from __future__ import annotations

import datetime as dt
import time

from django.utils import timezone
from minique.contrib.django import periodic_task, task

from minique import crontab

from .models import Order


@task(retries=3, retry_delay=2)
def confirm_order(order_id: int) -> str:
    """Confirm an order through the ORM (after a pause that stands for a payment check)."""
    time.sleep(1)
    order = Order.objects.get(pk=order_id)
    order.status = "confirmed"
    order.confirmed_at = timezone.now()
    order.save(update_fields=["status", "confirmed_at"])
    return str(order)


@periodic_task(crontab("*/10 * * * *"))
def cancel_stale_orders() -> int:
    """Every ten minutes: cancel orders left pending for more than an hour."""
    stale = timezone.now() - dt.timedelta(hours=1)
    return Order.objects.filter(status="pending", created_at__lt=stale).update(status="cancelled")
