"""Events: ``@mq.on(name)`` handlers run once the change is committed, in the producer for
``enqueued`` and ``revoked``, in a consumer thread of their own for the rest; a handler that
raises is logged and changes nothing. Every test runs on a real SQLite file and on a fresh
PostgreSQL schema (the ``pg_dsn`` fixture of conftest.py; skipped without a server, outside
CI), with real consumer threads."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import wait_for

from minique import Minique, TaskError
from minique.consumer import Consumer
from minique.events import Event


@pytest.fixture
def mq(location: str) -> Minique:
    """A queue on a fresh database of each engine: a SQLite file, or a PostgreSQL schema."""
    return Minique(location)


class Seen:
    """What the handlers saw: (event name, call id, status read, error type, thread name)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, str | None, str]] = []
        self.lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self.lock:
            self.events.append((event.name, event.job.id, event.job.status,
                                None if event.error is None else event.error.error_type,
                                threading.current_thread().name))

    def names(self, job_id: str) -> list[str]:
        with self.lock:
            return [e[0] for e in self.events if e[1] == job_id]


def listen(mq: Minique, *names: str) -> Seen:
    seen = Seen()
    for name in names:
        mq.on(name)(seen)
    return seen


def test_a_call_that_fails_tells_retrying_then_failed_with_its_error(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    @mq.task(name="boom", retries=1, retry_delay=0)
    def boom() -> None:
        raise ValueError("no luck")

    seen = listen(mq, "started", "retrying", "failed", "done")
    start_consumer(mq)
    call = boom()
    with pytest.raises(TaskError):
        call.get(timeout=10)

    wait_for(lambda: "failed" in seen.names(call.id), what="the failed event")
    assert seen.names(call.id) == ["started", "retrying", "started", "failed"]
    failed = [e for e in seen.events if e[0] == "failed"][0]
    assert failed[2:4] == ("failed", "ValueError")
    assert failed[4] == "minique-events"  # never in the consumer's own threads


def test_a_call_that_is_done_tells_done_with_its_result(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    @mq.task(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    results: list[Any] = []
    mq.on("done")(lambda event: results.append((event.job.result, event.error)))
    start_consumer(mq)

    assert add(2, 3).get(timeout=10) == 5
    wait_for(lambda: results, what="the done event")
    assert results == [(5, None)]


def test_enqueued_runs_in_the_producer_before_the_call_returns(mq: Minique) -> None:
    @mq.task(name="noop")
    def noop(i: int) -> None: ...

    seen = listen(mq, "enqueued")

    one = noop(1)
    many = noop.map([2, 3])

    assert [e[1] for e in seen.events] == [one.id, many[0].id, many[1].id]
    assert {e[2] for e in seen.events} == {"queued"}
    assert {e[4] for e in seen.events} == {threading.current_thread().name}


def test_revoked_runs_where_the_call_is_revoked_once(mq: Minique) -> None:
    @mq.task(name="noop")
    def noop() -> None: ...

    seen = listen(mq, "revoked")
    call = noop()

    assert call.revoke()
    assert call.revoke()  # already revoked: no second event

    assert seen.events == [("revoked", call.id, "revoked", "Revoked",
                            threading.current_thread().name)]


def test_a_lost_attempt_tells_lost(mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    @mq.task(name="work")
    def work() -> str:
        return "ok"

    seen = listen(mq, "lost")
    # Given a call whose attempt started on a consumer whose lease then ran out
    call = work()
    mq.store.claim("frozen-consumer", 0.01, time.time(), 1)

    # When a live consumer takes it back (its housekeeping reaps expired leases)
    start_consumer(mq)

    assert call.get(timeout=10) == "ok"
    wait_for(lambda: seen.events, what="the lost event")
    assert seen.events[0][0] == "lost" and seen.events[0][3] == "WorkerLost"


def test_a_handler_that_raises_is_logged_and_changes_nothing(
        mq: Minique, start_consumer: Callable[..., Consumer],
        caplog: pytest.LogCaptureFixture) -> None:
    @mq.task(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    @mq.on("done")
    def broken(event: Event) -> None:
        raise RuntimeError("the tracker is down")

    seen = listen(mq, "done")
    start_consumer(mq)

    with caplog.at_level(logging.ERROR, logger="minique"):
        call = add(1, 1)
        assert call.get(timeout=10) == 2
        wait_for(lambda: seen.events, what="the second handler")

    assert call.status == "done"
    assert "the 'done' event handler" in caplog.text and "the tracker is down" in caplog.text


def test_a_stopping_consumer_waits_for_the_handlers_of_its_events(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    @mq.task(name="noop")
    def noop() -> None: ...

    handled: list[str] = []

    @mq.on("done")
    def slow(event: Event) -> None:
        time.sleep(0.2)
        handled.append(event.job.id)

    consumer = start_consumer(mq)
    call = noop()
    call.get(timeout=10)
    consumer.stop(timeout=10)

    assert handled == [call.id]


def test_immediate_mode_runs_every_event_in_the_caller(mq: Minique) -> None:
    mq.immediate = True

    @mq.task(name="twice", retries=1)
    def twice() -> None:
        raise ValueError("no")

    seen = listen(mq, "enqueued", "retrying", "failed")
    call = twice()

    assert seen.names(call.id) == ["enqueued", "retrying", "failed"]


def test_an_event_that_does_not_exist_is_refused(mq: Minique) -> None:
    with pytest.raises(ValueError, match="'finished' is not an event; the events are enqueued"):
        mq.on("finished")


def test_a_call_that_fails_for_good_by_losing_its_attempts_tells_lost_then_failed(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    # Given handlers for lost and failed, and a call whose last attempt is lost
    # (its consumer's lease ran out twice; no attempt remains)
    @mq.task(name="work")
    def work() -> None: ...

    seen = listen(mq, "lost", "failed")
    call = work()
    for owner in ("gone-1", "gone-2"):
        mq.store.claim(owner, -1.0, time.time(), 1)
        if owner == "gone-1":
            mq.store.reap_expired(time.time())

    # When a consumer takes it back
    start_consumer(mq)

    # Then lost comes, then failed, both with the WorkerLost error and the reason
    wait_for(lambda: "failed" in seen.names(call.id), what="the failed event")
    assert seen.names(call.id) == ["lost", "failed"]
    assert [e[3] for e in seen.events if e[1] == call.id] == ["WorkerLost", "WorkerLost"]
