"""The schema's version, and the statements that bring a database file up to it.

peewee renders the tables from the models in ``models.py``. It is imported
only when a file has to be created or upgraded: a producer or consumer
opening an existing file starts without paying for it.
"""

from __future__ import annotations

# Bump on every change to the tables in models.py and add a step to
# ``_STEPS``; a file written by an older minique is upgraded in place.
SCHEMA_VERSION = 2

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
