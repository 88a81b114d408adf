"""The schema's version, and the statements that bring a database file up to it.

peewee renders the tables from the models in ``models.py``. It is imported
only when a file has to be created or upgraded: a producer or consumer
opening an existing file starts without paying for it.
"""

from __future__ import annotations

# Bump on every change to the tables in models.py and add a step to
# ``migration``; a file written by an older minique is upgraded in place.
SCHEMA_VERSION = 1


def migration(step: int) -> list[str]:
    """The statements that upgrade a file from schema version ``step - 1`` to ``step``."""
    from .models import create_statements

    # Version 1 is the first released schema: it is created from the models.
    if step == 1:
        return create_statements()
    raise ValueError(f"no migration to schema version {step}")
