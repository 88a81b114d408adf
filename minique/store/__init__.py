"""The only code that speaks SQL: it moves job rows and knows nothing of tasks as functions."""

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

__all__ = [
    "FINISHED", "STATES", "ClaimedJob", "ConsumerInfo", "JobRecord", "NewJob", "Outcome",
    "Reaped", "SqliteStore", "State", "Synchronous",
]
