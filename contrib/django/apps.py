"""The app that builds ``mq`` from ``settings.MINIQUE`` and finds every installed app's tasks."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core.signals import setting_changed
from django.utils.module_loading import autodiscover_modules


class MiniqueConfig(AppConfig):
    """``"minique.contrib.django"`` in ``INSTALLED_APPS``.

    When Django starts: configure ``minique.contrib.django.mq`` from
    ``settings.MINIQUE`` (``ImproperlyConfigured`` if it is missing or wrong),
    then import the ``tasks`` module of every installed app.
    """

    name = "minique.contrib.django"
    label = "minique"
    verbose_name = "minique"

    def ready(self) -> None:
        from . import mq

        mq.configure_from_settings()
        # Tests change settings.MINIQUE with override_settings (e.g. immediate
        # mode, a database in a temporary folder): follow them.
        setting_changed.connect(_follow_setting, dispatch_uid="minique.contrib.django")
        autodiscover_modules("tasks")


def _follow_setting(*, setting: str, **kwargs: Any) -> None:
    if setting == "MINIQUE":
        from . import mq

        mq.configure_from_settings()
