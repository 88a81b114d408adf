"""Another program holds the file's write lock; two processes pick colliding ids.

Writers wait for the lock up to ``busy_timeout``, a slice at a time (see
``BUSY_SLICE_MS``), then fail saying what holds it; nothing half-written
stays behind. A producer whose id another process already took retries
with ids past the other's, however many that one took in the millisecond.
"""

from __future__ import annotations

import math
import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
from freezegun import freeze_time

import minique.ids
from minique import Minique
from minique.errors import ConfigurationError, DatabaseError
from minique.store.sqlite import BUSY_SLICE_MS

SLICES = 6  # how long the lock is held, in slices: longer than one, shorter than busy_timeout


@contextmanager
def write_lock_held(db_path: Path) -> Iterator[sqlite3.Connection]:
    """The file's write lock, held by another connection (an open ``sqlite3`` shell, say)."""
    with closing(sqlite3.connect(db_path, isolation_level=None,
                                 check_same_thread=False)) as holder:
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield holder
        finally:
            if holder.in_transaction:
                holder.execute("ROLLBACK")


def release_later(holder: sqlite3.Connection, seconds: float) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(seconds), holder.execute("COMMIT")))
    thread.start()
    return thread


def test_enqueue_on_a_locked_file_fails_after_busy_timeout_saying_so(db_path: Path) -> None:
    # Given a queue that waits 0.4 s for the lock, and the lock held all along
    mq = Minique(db_path, busy_timeout=0.4)

    @mq.task
    def work() -> None: ...

    work()  # the file and its tables exist
    with write_lock_held(db_path):
        # When a call is made, then it fails naming the wait and what to do
        started = time.monotonic()
        with pytest.raises(DatabaseError, match=r"stayed locked for 0\.4 s.*end it and try again"):
            work()
        # And it waited the whole timeout, not a single slice of it
        assert time.monotonic() - started >= 0.4 - BUSY_SLICE_MS / 1000 / 2

    # And nothing of the failed call was stored; the next call goes through
    assert mq.counts()["queued"] == 1
    work()
    assert mq.counts()["queued"] == 2


def test_enqueue_waits_across_slices_until_the_lock_is_released(db_path: Path) -> None:
    # Given the lock held for several of SQLite's busy slices
    mq = Minique(db_path, busy_timeout=30)

    @mq.task
    def work(n: int) -> int:
        return n

    work(0)
    with write_lock_held(db_path) as holder:
        releaser = release_later(holder, SLICES * BUSY_SLICE_MS / 1000)
        # When a call is made meanwhile, then it is stored once the lock is free
        result = work(1)
        releaser.join()
    assert result.status == "queued"
    assert mq.counts()["queued"] == 2


def test_a_claim_waits_across_slices_until_the_lock_is_released(db_path: Path) -> None:
    mq = Minique(db_path, busy_timeout=30)

    @mq.task
    def work() -> None: ...

    queued = work()
    with write_lock_held(db_path) as holder:
        releaser = release_later(holder, SLICES * BUSY_SLICE_MS / 1000)
        claimed = mq.store.claim("me", lease=60, now=time.time(), limit=1)
        releaser.join()
    assert [job.id for job in claimed] == [int(queued.id)]


@pytest.mark.timeout(20)
def test_a_locked_file_fails_after_busy_timeout_even_with_the_clock_frozen(
        db_path: Path) -> None:
    # Given an application whose tests freeze the clock with freezegun
    mq = Minique(db_path, busy_timeout=0.3)

    @mq.task
    def work() -> None: ...

    work()
    # When a call meets a lock that is never released, then it still gives up
    with write_lock_held(db_path), freeze_time("2030-01-01"), \
            pytest.raises(DatabaseError, match="stayed locked"):
        work()


@pytest.mark.parametrize("seconds", [-1, math.inf, math.nan])
def test_busy_timeout_must_be_a_finite_number_of_seconds(db_path: Path, seconds: float) -> None:
    with pytest.raises(ConfigurationError, match="busy_timeout"):
        Minique(db_path, busy_timeout=seconds)


def test_a_zero_busy_timeout_fails_at_once(db_path: Path) -> None:
    mq = Minique(db_path, busy_timeout=0)

    @mq.task
    def work() -> None: ...

    work()
    with write_lock_held(db_path), pytest.raises(DatabaseError, match="stayed locked for 0 s"):
        work()


def test_call_whose_ids_another_process_took_in_a_run_is_stored_on_retry(
        mq: Minique, db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given another process that stored a run of 64 ids in this millisecond,
    # starting where this process's random start will fall
    start = 123_456
    real_bits = random.getrandbits
    monkeypatch.setattr(minique.ids.random, "getrandbits",
                        lambda bits: start if bits == 20 else real_bits(bits))
    monkeypatch.setattr(minique.ids, "_last", 0)  # restored after the test

    @mq.task
    def work() -> str:
        return "mine"

    work()  # the tables exist
    with freeze_time("2031-05-01 12:00:00"):
        millis = time.time_ns() // 1_000_000 - minique.ids._EPOCH_MS
        taken = [(millis << 22) | (start + i) for i in range(64)]
        with closing(sqlite3.connect(db_path)) as other, other:
            other.executemany(
                "INSERT INTO jobs (id, name, queue, priority, state, payload, eta, attempts,"
                " max_attempts, created_at) VALUES (?, 'elsewhere', 'default', 0, 'queued',"
                " '[[], {}]', 0, 0, 1, 0)", [(i,) for i in taken])

        # When this process makes a call in the same millisecond
        result = work()

    # Then it was stored under an id the other did not take (counting up
    # from the collision one at a time walked into the other's run and gave up)
    assert int(result.id) not in taken
    assert mq.counts()["queued"] == 1 + 1 + 64
