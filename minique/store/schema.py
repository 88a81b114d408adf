"""The schema's version, and the statements that bring a database file up to it.

peewee renders the tables from the models in ``models.py``. It is imported
only when a file has to be created or upgraded: a producer or consumer
opening an existing file starts without paying for it.
"""

from __future__ import annotations

# Bump on every change to the tables in models.py and add a step to
# ``_STEPS``; a file written by an older minique is upgraded in place.
SCHEMA_VERSION = 3

# The index of the operators' queries for failed calls (mq.jobs(status=
# "failed"), mq.retry_failed, mq.purge), so that they stay fast with a million
# rows. Partial: a call that runs fine never enters it, and enqueueing never
# writes to it. What was measured (docs/operations.md): an index on the queue
# or the task of every row costs each enqueue a page more to write (about a
# sixth of its time), and a partial index whose condition is an IN list or
# an OR costs every claim and finish a quarter more CPU (SQLite evaluates it
# on each change of state); one on an equality costs nothing measurable.
# Listing by queue, task or another status scans the table from the newest row.
ADMIN_INDEXES = (
    "CREATE INDEX IF NOT EXISTS jobs_failed ON jobs (id) WHERE state = 'failed'",
)

# Each step upgrades a file from version N-1 to N.
_STEPS: dict[int, list[str]] = {
    # 2: leases on the monotonic clock; attempts count from a recorded start.
    2: [
        "ALTER TABLE jobs ADD COLUMN lease_boot TEXT",
        "ALTER TABLE jobs ADD COLUMN lease_mono REAL",
        "ALTER TABLE jobs ADD COLUMN started INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE jobs ADD COLUMN suspect INTEGER NOT NULL DEFAULT 0",
        # rows running under version 1 had their attempt counted at claim
        "UPDATE jobs SET started = 1 WHERE state = 'running'",
    ],
    # 3: operating the queue: attempt history, paused queues, retries by
    # hand, and the indexes of the admin queries. (The same DDL as the models
    # render for a new file; tests/test_operations.py compares the two.)
    3: [
        "ALTER TABLE jobs ADD COLUMN earlier_attempts INTEGER NOT NULL DEFAULT 0",
        'CREATE TABLE IF NOT EXISTS "history" ("job_id" INTEGER NOT NULL, "number" INTEGER'
        ' NOT NULL, "started_at" REAL, "finished_at" REAL NOT NULL, "outcome" TEXT NOT NULL,'
        ' "error_type" TEXT, "error_message" TEXT, "traceback" TEXT, "consumer" TEXT,'
        ' PRIMARY KEY ("job_id", "number"))',
        'CREATE TABLE IF NOT EXISTS "paused_queues" ("queue" TEXT NOT NULL PRIMARY KEY,'
        ' "paused_at" REAL NOT NULL)',
        *ADMIN_INDEXES,
    ],
}


def upgrade(version: int) -> list[str]:
    """The statements that bring a file from schema ``version`` to ``SCHEMA_VERSION``.

    A new file (version 0) is created from the models as they are now.
    """
    if version == 0:
        from .models import create_statements

        return create_statements()
    statements: list[str] = []
    for step in range(version + 1, SCHEMA_VERSION + 1):
        statements.extend(_STEPS[step])
    return statements
