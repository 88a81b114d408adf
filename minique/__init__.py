"""minique: a durable job queue in one SQLite file, inside your Python application."""

from typing import TYPE_CHECKING, Any

from .app import Minique
from .crontab import crontab
from .errors import (
    ConfigurationError,
    DatabaseError,
    ResultTimeout,
    Retry,
    SerializationError,
    TaskError,
    TaskTimeout,
)
from .events import Event
from .result import Result

if TYPE_CHECKING:
    from .job import Job, JobAttempt

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError", "DatabaseError", "Event", "Job", "JobAttempt", "Minique", "Result",
    "ResultTimeout", "Retry",
    "SerializationError", "TaskError", "TaskTimeout", "crontab",
]


def __getattr__(name: str) -> Any:
    """``Job`` and ``JobAttempt``, imported at their first use (PEP 562).

    Only operating calls (``mq.job``, ``mq.jobs``, event handlers) build
    them, and defining the two dataclasses is about 2 ms of the start-up of
    every process that imports minique, consumers included.
    """
    if name in ("Job", "JobAttempt"):
        from . import job

        value = getattr(job, name)
        globals()[name] = value  # found directly from now on
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
