"""Results: getting values and errors, rebuilding handles by id, every status a call can
show, revoking and expiring calls that have not started."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
from conftest import wait_for
from freezegun import freeze_time

from minique import Minique, Result, ResultTimeout, TaskError
from minique.consumer import Consumer
from minique.task import TaskOptions

# -- get ------------------------------------------------------------------------------


def test_get_returns_the_value(mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    @mq.task
    def add(a: int, b: int) -> int:
        return a + b

    result = add(2, b=40)
    start_consumer(mq, workers=1)

    assert result.get(timeout=10) == 42


def test_get_with_timeout_raises_result_timeout_when_no_consumer_runs(mq: Minique) -> None:
    @mq.task
    def add(a: int, b: int) -> int:
        return a + b

    result = add(1, 2)

    with pytest.raises(ResultTimeout) as info:
        result.get(timeout=0.05)
    assert isinstance(info.value, TimeoutError)
    assert result.status == "queued"


@pytest.mark.timeout(20)
def test_get_with_timeout_ends_even_when_the_test_froze_the_clock(mq: Minique) -> None:
    # Given an application's test that freezes time with freezegun
    @mq.task
    def add(a: int, b: int) -> int:
        return a + b

    with freeze_time("2030-01-01"):
        result = add(1, 2)
        # When it waits for a call no consumer runs, then the wait still ends
        with pytest.raises(ResultTimeout):
            result.get(timeout=0.2)


def test_get_not_blocking_returns_none_while_unfinished(mq: Minique) -> None:
    @mq.task
    def add(a: int, b: int) -> int:
        return a + b

    result = add(1, 2)

    assert result.get(blocking=False) is None


def test_failing_task_raises_task_error_with_its_details(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    @mq.task(name="billing.charge")
    def charge(amount: int) -> None:
        raise ValueError(f"cannot charge {amount}")

    result = charge(12)
    start_consumer(mq, workers=1)

    with pytest.raises(TaskError) as info:
        result.get(timeout=10)
    error = info.value
    assert error.task_name == "billing.charge"
    assert error.error_type == "ValueError"
    assert error.message == "cannot charge 12"
    assert "Traceback" in error.traceback
    assert "in charge" in error.traceback
    assert 'raise ValueError(f"cannot charge {amount}")' in error.traceback


def test_result_by_id_rebuilds_a_working_handle(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    @mq.task
    def add(a: int, b: int) -> int:
        return a + b

    job_id = add(20, 22).id
    start_consumer(mq, workers=1)

    again = mq.result(job_id)
    assert again.get(timeout=10) == 42
    assert again.status == "done"
    assert again.name == add.name


def test_result_by_id_works_from_another_minique_on_the_same_file(
        mq: Minique, db_path: Path, start_consumer: Callable[..., Consumer]) -> None:
    @mq.task
    def add(a: int, b: int) -> int:
        return a + b

    job_id = add(20, 22).id
    elsewhere = Minique(db_path)  # stands in for another process: it declares no tasks
    assert elsewhere.result(job_id).status == "queued"

    start_consumer(mq, workers=1)

    assert elsewhere.result(job_id).get(timeout=10) == 42
    assert elsewhere.result(job_id).status == "done"


def test_result_of_an_unknown_id_raises_lookup_error(mq: Minique) -> None:
    with pytest.raises(LookupError, match="no task with id"):
        mq.result("0" * 32).status  # noqa: B018 - the property read is the call under test


# -- statuses -------------------------------------------------------------------------


def test_status_is_queued_before_a_consumer_takes_it(mq: Minique) -> None:
    @mq.task
    def work() -> None: ...

    assert work().status == "queued"
    assert mq.counts()["queued"] == 1


def test_status_is_scheduled_while_waiting_for_its_time(mq: Minique) -> None:
    @mq.task
    def work() -> None: ...

    result = work.schedule(delay=3600)

    assert result.status == "scheduled"
    assert mq.counts()["scheduled"] == 1


@contextmanager
def running_call(mq: Minique, start_consumer: Callable[..., Consumer]) -> Iterator[Result[str]]:
    """A call running in a consumer of one worker; it returns "finished" once the block ends."""
    started = threading.Event()
    release = threading.Event()

    @mq.task
    def work() -> str:
        started.set()
        release.wait(10)
        return "finished"

    result = work()
    start_consumer(mq, workers=1)
    assert started.wait(10)
    try:
        yield result
    finally:
        release.set()


def test_status_is_running_while_the_task_runs(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    with running_call(mq, start_consumer) as result:
        assert result.status == "running"
        assert mq.counts()["running"] == 1
    assert result.get(timeout=10) == "finished"


def test_status_is_done_after_success(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    @mq.task
    def work() -> int:
        return 1

    result = work()
    start_consumer(mq, workers=1)
    result.get(timeout=10)

    assert result.status == "done"
    record = result.record
    assert record.attempts == 1
    assert record.started_at is not None and record.finished_at is not None
    assert record.created_at <= record.started_at <= record.finished_at


def test_status_is_failed_after_a_failure(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    @mq.task
    def work() -> None:
        raise RuntimeError("no")

    result = work()
    start_consumer(mq, workers=1)
    wait_for(lambda: result.status == "failed", what="the task to fail")

    record = result.record
    assert record.error_type == "RuntimeError"
    assert record.error_message == "no"
    assert mq.counts()["failed"] == 1


def test_status_is_revoked_after_revoke(mq: Minique) -> None:
    @mq.task
    def work() -> None: ...

    result = work()
    result.revoke()

    assert result.status == "revoked"
    assert mq.counts()["revoked"] == 1


def test_status_is_expired_when_not_started_in_time(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    ran: list[str] = []

    @mq.task(expires=0.05)
    def work() -> None:
        ran.append("work")

    result = work()
    _wait_past(result.record.created_at + 0.05)
    start_consumer(mq, workers=1)
    # (it reads as expired at once; wait for the consumer to write it down,
    # or the counts below could catch it claimed, as running, on its way)
    wait_for(lambda: result.record.finished_at is not None,
             what="the consumer to record the task as expired")

    assert result.status == "expired"
    assert ran == []
    assert mq.counts()["expired"] == 1


# -- revoke -----------------------------------------------------------------------------


def test_revoke_of_a_call_not_started_returns_true_and_it_never_runs(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    ran: list[str] = []

    @mq.task
    def work(label: str) -> None:
        ran.append(label)

    revoked = work("revoked")
    marker = work("marker")  # FIFO: the revoked call would have run before this one

    assert revoked.revoke() is True
    start_consumer(mq, workers=1)
    marker.get(timeout=10)

    assert ran == ["marker"]
    assert revoked.status == "revoked"
    with pytest.raises(TaskError) as info:
        revoked.get(timeout=10)
    assert info.value.error_type == "Revoked"


def test_revoke_of_a_scheduled_call_returns_true(mq: Minique) -> None:
    @mq.task
    def work() -> None: ...

    result = work.schedule(delay=3600)

    assert result.revoke() is True
    assert result.status == "revoked"


def test_revoke_of_a_finished_call_returns_false(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    @mq.task
    def work() -> str:
        return "done"

    result = work()
    start_consumer(mq, workers=1)
    result.get(timeout=10)

    assert result.revoke() is False
    assert result.status == "done"
    assert result.get() == "done"


def test_revoke_of_a_running_call_returns_false_and_it_finishes(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    with running_call(mq, start_consumer) as result:
        assert result.revoke() is False

    assert result.get(timeout=10) == "finished"


def test_revoke_twice_still_returns_true(mq: Minique) -> None:
    @mq.task
    def work() -> None: ...

    result = work()

    assert result.revoke() is True
    assert result.revoke() is True


# -- expires -------------------------------------------------------------------------------


def _wait_past(deadline: float) -> None:
    wait_for(lambda: time.time() > deadline, what=f"the clock to pass {deadline}")


@pytest.mark.parametrize("expires", [
    0.05,
    dt.timedelta(milliseconds=50),
], ids=["seconds", "timedelta"])
def test_call_not_started_before_relative_expiry_ends_expired_and_never_runs(
        mq: Minique, start_consumer: Callable[..., Consumer],
        expires: float | dt.timedelta) -> None:
    ran: list[str] = []

    @mq.task(expires=expires)
    def work(label: str) -> None:
        ran.append(label)

    @mq.task
    def marker() -> None:
        ran.append("marker")

    late = work("late")
    after = marker()  # FIFO: the late call would have run before this one
    _wait_past(late.record.created_at + 0.05)
    start_consumer(mq, workers=1)
    after.get(timeout=10)

    assert ran == ["marker"]
    assert late.status == "expired"
    with pytest.raises(TaskError) as info:
        late.get(timeout=10)
    assert info.value.error_type == "Expired"


def test_call_not_started_before_absolute_expiry_ends_expired_and_never_runs(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    ran: list[str] = []
    deadline = dt.datetime.now() + dt.timedelta(milliseconds=50)  # naive: local time

    @mq.task(expires=deadline)
    def work(label: str) -> None:
        ran.append(label)

    @mq.task
    def marker() -> None:
        ran.append("marker")

    late = work("late")
    after = marker()
    _wait_past(deadline.timestamp())
    start_consumer(mq, workers=1)
    after.get(timeout=10)

    assert ran == ["marker"]
    assert late.status == "expired"


def test_call_started_before_expiry_runs(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    @mq.task(expires=3600)
    def work() -> str:
        return "ran"

    result = work()
    start_consumer(mq, workers=1)

    assert result.get(timeout=10) == "ran"


def test_expiry_in_seconds_counts_from_the_enqueue() -> None:
    options = TaskOptions(name="t", expires=30)

    assert options.expires_at(1_000.0) == 1_030.0


def test_expiry_as_timedelta_counts_from_the_enqueue() -> None:
    options = TaskOptions(name="t", expires=dt.timedelta(minutes=2))

    assert options.expires_at(1_000.0) == 1_120.0


def test_expiry_as_aware_datetime_is_that_instant() -> None:
    deadline = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
    options = TaskOptions(name="t", expires=deadline)

    assert options.expires_at(1_000.0) == deadline.timestamp()


def test_expiry_as_naive_datetime_is_local_time() -> None:
    deadline = dt.datetime(2030, 1, 1, 12, 0)
    options = TaskOptions(name="t", expires=deadline)

    assert options.expires_at(1_000.0) == deadline.astimezone().timestamp()


def test_enqueued_call_stores_its_expiry_from_the_enqueue_time(
        mq: Minique, db_path: Path) -> None:
    @mq.task(expires=dt.timedelta(hours=1))
    def work() -> None: ...

    with freeze_time("2030-01-01 12:00:00"):
        result = work()
        enqueued_at = time.time()

    with closing(sqlite3.connect(db_path)) as db:
        (stored,) = db.execute("SELECT expires FROM jobs WHERE id = ?", (result.id,)).fetchone()
    assert stored == enqueued_at + 3600
