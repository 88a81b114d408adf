"""The consumer's housekeeping thread when the database keeps failing: it backs off and logs little.

The database is made to fail for real: another connection holds its write
lock while the queue's ``busy_timeout`` is 0, so every write of the
housekeeping thread (the consumer's heartbeat) fails at once.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
from conftest import wait_for

from minique import Minique
from minique.consumer import Consumer, failures


@contextmanager
def write_lock_held(db_path: Path) -> Iterator[None]:
    """The file's write lock, held by another connection (an open ``sqlite3`` shell, say)."""
    with closing(sqlite3.connect(db_path, isolation_level=None)) as holder:
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")


def housekeeping_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "minique" and r.getMessage().startswith("housekeeping ")]


def test_a_database_that_keeps_failing_is_logged_once_then_counted(
        db_path: Path, start_consumer: Callable[..., Consumer], caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a running consumer whose writes fail at once when the file is locked,
    # and repeats counted every half second (instead of every 30). Its lease
    # is short so that its heartbeat (the write that fails) comes every
    # second: with the default lease it may come only 10 s after the lock.
    monkeypatch.setattr(failures, "REPEAT_EVERY", 0.5)
    caplog.set_level(logging.INFO, logger="minique")
    mq = Minique(db_path, busy_timeout=0, lease=3)
    start_consumer(mq, workers=1, periodic=False)

    # When another connection holds the write lock for a while
    with write_lock_held(db_path):
        wait_for(lambda: any("repeated" in line for line in housekeeping_lines(caplog)),
                 timeout=10, what="a line counting the repeated failures")

        # Then the failure was logged once, and its repeats as one line with their count
        first, repeats = housekeeping_lines(caplog)
        assert first.startswith("housekeeping failed, will try again: ")
        assert "locked" in first
        assert repeats.startswith(first)
        counted = int(repeats.split("(repeated ")[1].split(" times")[0])
        # ...few of them: it waits longer after each failure (it tried ~90 times a second)
        assert 1 <= counted <= 10, repeats

    # And once the lock is released, it says that it works again
    wait_for(lambda: any(line.startswith("housekeeping works again (after ")
                         for line in housekeeping_lines(caplog)),
             timeout=10, what="a line saying that housekeeping works again")
