"""minique: a durable job queue in one SQLite file, inside your Python application."""

from .app import Minique
from .crontab import crontab
from .errors import ResultTimeout, Retry, SerializationError, TaskError
from .result import Result

__version__ = "0.1.0"

__all__ = [
    "Minique", "Result", "ResultTimeout", "Retry", "SerializationError", "TaskError", "crontab",
]
