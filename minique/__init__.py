"""minique: a durable job queue in one SQLite file, inside your Python application."""

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
from .job import Job, JobAttempt
from .result import Result

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError", "DatabaseError", "Event", "Job", "JobAttempt", "Minique", "Result",
    "ResultTimeout", "Retry",
    "SerializationError", "TaskError", "TaskTimeout", "crontab",
]
