"""No views: the test project is driven by its commands and its tasks."""

from __future__ import annotations

urlpatterns: list[object] = []
