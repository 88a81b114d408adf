"""``DjangoMinique``: the project's queue, configured from ``settings.MINIQUE``, ORM-safe tasks."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from django.core.exceptions import ImproperlyConfigured
from django.db import connections, transaction

from minique.errors import ConfigurationError
from minique.hooks import Attempt
from minique.task import Task

from ..deferred import DeferredMinique

if TYPE_CHECKING:
    pass

P = ParamSpec("P")
R = TypeVar("R")

EXAMPLE = "MINIQUE = {'database': BASE_DIR / 'minique.db'}"


class DjangoTask(Task[P, R]):
    """A task of the Django queue: a ``Task`` that can also wait for the current transaction."""

    def on_commit(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Enqueue this call once the current transaction of the default database commits.

        Nothing is enqueued if it rolls back; outside ``transaction.atomic()``
        the call is enqueued at once. Raises ``SerializationError`` here, in
        the caller, if the arguments cannot be stored, and ``TypeError`` if
        the function does not take them.
        """
        # Check now: a bad call should fail in the caller, inside its
        # transaction, not after its commit.
        self.mq.encode_call(self, args, kwargs)
        transaction.on_commit(functools.partial(self.mq.enqueue, self, args, kwargs))


class DjangoMinique(DeferredMinique):
    """The project's queue: tasks declared at import, configured when Django starts.

    Each task runs between two closings of stale database connections, as
    Django does around a request.
    """

    task_class = DjangoTask

    unconfigured_hint = (
        "add 'minique.contrib.django' to INSTALLED_APPS and use the queue once Django is set "
        "up (manage.py, your WSGI/ASGI application, or django.setup())")

    def __init__(self) -> None:
        super().__init__()
        self.around_task(fresh_connections)

    def configure_from_settings(self) -> None:
        """Configure the queue from ``settings.MINIQUE``; ``ImproperlyConfigured`` if wrong."""
        from django.conf import settings

        value = getattr(settings, "MINIQUE", None)
        if value is None:
            raise ImproperlyConfigured(
                "settings.MINIQUE is not set; 'minique.contrib.django' is in INSTALLED_APPS and "
                f"reads its queue's database and options from it, e.g. {EXAMPLE}")
        if not isinstance(value, Mapping):
            raise ImproperlyConfigured(
                f"settings.MINIQUE must be a dict such as {EXAMPLE}, not "
                f"{type(value).__name__} {value!r}")
        options = dict(value)
        path = options.pop("database", None)
        if not path:
            raise ImproperlyConfigured(
                f"settings.MINIQUE has no 'database'; give the path of the queue's SQLite "
                f"file, e.g. {EXAMPLE}")
        try:
            self.configure(path, **options)
        except (ConfigurationError, ValueError, TypeError) as exc:
            raise ImproperlyConfigured(f"settings.MINIQUE: {exc}") from exc


@contextmanager
def fresh_connections(attempt: Attempt) -> Iterator[None]:
    """Close broken or expired (``CONN_MAX_AGE``) database connections before and after a task."""
    close_old_connections()
    try:
        yield
    finally:
        close_old_connections()


def close_old_connections() -> None:
    """``django.db.close_old_connections``, except for connections inside an atomic block.

    In immediate mode a task runs in its caller, possibly inside the caller's
    ``transaction.atomic()`` (or a test's): closing that connection would
    break the caller's transaction.
    """
    for conn in connections.all(initialized_only=True):
        if not conn.in_atomic_block:
            conn.close_if_unusable_or_obsolete()
