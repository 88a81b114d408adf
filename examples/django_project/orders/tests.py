"""Tests of the orders app with the queue in immediate mode: ``python manage.py test``."""

from __future__ import annotations

import tempfile
from pathlib import Path

from django.test import TestCase, override_settings

from .models import Order

# Immediate mode runs each call inline; a queue file of the tests' own keeps
# the development queue out of it.
TEST_QUEUE = {"database": Path(tempfile.mkdtemp()) / "minique.db", "immediate": True}


@override_settings(MINIQUE=TEST_QUEUE)
class PlaceOrderTests(TestCase):
    def test_order_is_confirmed_once_its_transaction_commits(self) -> None:
        # TestCase never commits; captureOnCommitCallbacks runs the on_commit calls.
        with self.captureOnCommitCallbacks(execute=True):
            response = self.client.post("/orders/", {"item": "tea"},
                                        content_type="application/json")
        order = Order.objects.get(pk=response.json()["id"])
        self.assertEqual(order.status, "confirmed")

    def test_nothing_is_confirmed_before_the_commit(self) -> None:
        with self.captureOnCommitCallbacks(execute=False) as callbacks:
            response = self.client.post("/orders/", {"item": "tea"},
                                        content_type="application/json")
        self.assertEqual(len(callbacks), 1)
        self.assertEqual(Order.objects.get(pk=response.json()["id"]).status, "pending")
