"""Tasks that read and write notes through the ORM."""

from __future__ import annotations

import os

from django.db import connection
from minique.contrib.django import task

from .models import Note


@task
def write_note(text: str) -> int:
    """Store a note, recording which process wrote it; its id."""
    return Note.objects.create(text=text, written_by_pid=os.getpid()).pk


@task
def connection_was_closed() -> bool:
    """Whether this thread had no open database connection when the task began; then query."""
    closed = connection.connection is None
    Note.objects.count()
    return closed
