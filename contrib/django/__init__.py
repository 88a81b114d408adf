"""Django integration: ``mq`` built from ``settings.MINIQUE``, the ``task`` decorators, commands.

::

    INSTALLED_APPS = [..., "minique.contrib.django"]
    MINIQUE = {"database": BASE_DIR / "minique.db"}

    # myapp/tasks.py (found by autodiscovery, like admin.py)
    from minique.contrib.django import task

    @task(retries=2)
    def send_welcome(user_id): ...

``python manage.py minique_consume`` runs a consumer, ``python manage.py
minique_status`` shows counts. Importing this package does not set up Django.
"""

from __future__ import annotations

from .queue import DjangoMinique, DjangoTask

__all__ = ["DjangoMinique", "DjangoTask", "mq", "periodic_task", "task"]

#: The queue of the project, configured from ``settings.MINIQUE`` when Django starts.
mq = DjangoMinique()

#: ``@task`` or ``@task(retries=2, ...)``: declare a task of ``mq``.
task = mq.task

#: ``@periodic_task(crontab(...), ...)``: declare a task that runs on a crontab.
periodic_task = mq.periodic_task
