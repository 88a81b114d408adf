"""The only code that speaks SQL: it moves job rows and knows nothing of tasks as functions.

``open_store`` picks the engine from the location; everything outside this
package sees the ``Store`` and ``Notifier`` protocols of ``base.py``.
"""

from __future__ import annotations

import os

from .base import Listener, Notifier, Store
from .records import (
    FINISHED,
    STATES,
    ClaimedJob,
    ConsumerInfo,
    JobRecord,
    NewJob,
    Outcome,
    Reaped,
    State,
)
from .sqlite import SqliteStore, Synchronous
from .sqlite_files import database_path

__all__ = [
    "FINISHED", "STATES", "ClaimedJob", "ConsumerInfo", "JobRecord", "Listener", "NewJob",
    "Notifier", "Outcome", "Reaped", "SqliteStore", "State", "Store", "Synchronous",
    "is_url", "open_store",
]

_URL_SCHEMES = ("postgresql://", "postgres://")


def is_url(location: object) -> bool:
    """True if ``location`` names a database server rather than a SQLite file."""
    return isinstance(location, str) and location.startswith(_URL_SCHEMES)


def open_store(location: str | os.PathLike[str], *, synchronous: Synchronous = "normal",
               busy_timeout: float = 30.0) -> Store:
    """The store for ``location``: a SQLite file path, or a ``postgresql://`` URL.

    ``synchronous`` and ``busy_timeout`` are SQLite's; a server store refuses
    a ``synchronous`` other than the default (its own settings rule).
    Raises ``ConfigurationError`` when the location cannot be used.
    """
    if is_url(location):
        from .postgres import PostgresStore  # psycopg is an optional extra

        assert isinstance(location, str)
        return PostgresStore(location, synchronous=synchronous)
    return SqliteStore(database_path(location), synchronous=synchronous,
                       busy_timeout=busy_timeout)
