"""Regressions found in review: the consumer keeps working and stays cheap when things go wrong."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
from conftest import wait_for
from freezegun import freeze_time

from minique import Minique, SerializationError, TaskError
from minique.consumer import Consumer
from minique.ids import new_ids
from minique.store.sqlite import BUSY_SLICE_MS


def test_value_json_cannot_hold_fails_the_task_and_the_worker_goes_on(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    # Given a task whose result the JSON encoder refuses (an int of 5,001 digits)
    @mq.task
    def huge() -> int:
        return 10**5000

    @mq.task
    def small() -> int:
        return 1

    failed, after = huge(), small()

    # When the only worker runs both
    start_consumer(mq, workers=1)

    # Then the first fails with a clear error and the second still runs
    with pytest.raises(TaskError) as raised:
        failed.get(timeout=10)
    assert raised.value.error_type == "SerializationError"
    assert after.get(timeout=10) == 1


def test_argument_json_cannot_hold_raises_serialization_error(mq: Minique) -> None:
    @mq.task
    def work(n: int) -> None: ...

    with pytest.raises(SerializationError):
        work(10**5000)
    assert sum(mq.counts().values()) == 0


def test_scheduled_job_does_not_wait_behind_a_backlog(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    order: list[str] = []

    @mq.task
    def routine(n: int) -> None:
        order.append("routine")

    @mq.task
    def urgent() -> None:
        order.append("urgent")

    # Given a long backlog, and an urgent call due very soon
    routine.map(range(3000))
    urgent.schedule(delay=0.05, priority=100)

    # When one worker drains them
    start_consumer(mq, workers=1)
    wait_for(lambda: mq.counts()["done"] == 3001, timeout=60, what="everything done")

    # Then the urgent call ran as soon as it was due, not after the backlog
    assert order.index("urgent") < len(order) - 1


def test_idle_dispatcher_does_not_spin_while_its_workers_are_busy(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    release = threading.Event()

    @mq.task
    def busy() -> None:
        release.wait(10)

    @mq.task
    def later() -> None: ...

    # Given the only worker busy, and a scheduled job whose time has come
    start_consumer(mq, workers=1)
    busy()
    wait_for(lambda: mq.counts()["running"] == 1, what="the busy task to start")
    later.schedule(delay=0.01)
    time.sleep(0.05)

    # When a second passes with nothing claimable
    cpu, wall = time.process_time(), time.monotonic()
    time.sleep(1.0)
    used = (time.process_time() - cpu) / (time.monotonic() - wall)
    release.set()

    # Then the process used far less than a core (a busy loop uses all of one)
    assert used < 0.5, f"the process used {used:.0%} of a core while idle"


@pytest.mark.timeout(20)
def test_checkpoint_gives_up_quickly_when_a_reader_holds_the_wal(
        mq: Minique, db_path: Path) -> None:
    @mq.task
    def work(blob: str) -> None: ...

    # Given a WAL past the restart threshold, and a reader holding a snapshot
    work.map(["x" * 2000] * 10_000)
    with closing(sqlite3.connect(db_path)) as reader:
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM jobs").fetchall()

        # When the store checkpoints, then it returns (it does not wait 30 s)
        mq.store.checkpoint()

        # And writers are not held back either
        work("y")
        reader.execute("ROLLBACK")
    # And the connection waits for locks as before (a slice at a time)
    conn = mq.store._conn()
    assert conn.execute("PRAGMA busy_timeout").fetchall() == [(BUSY_SLICE_MS,)]


def test_result_id_out_of_range_is_a_lookup_error(mq: Minique) -> None:
    with pytest.raises(LookupError):
        _ = mq.result(str(2**70)).status


def test_priority_out_of_range_is_refused(mq: Minique) -> None:
    with pytest.raises(ValueError, match="priority"):
        @mq.task(priority=2**64)
        def work() -> None: ...


def test_ids_stay_positive_and_distinct_with_a_clock_before_2026() -> None:
    with freeze_time("2020-01-01"):
        both = [*new_ids(3), *new_ids(3)]
    assert all(i > 0 for i in both)
    assert len(set(both)) == 6
