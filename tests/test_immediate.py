"""Immediate mode: calls run in the caller, their outcome is stored as a consumer would store
it, and ``Result`` behaves the same."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from minique import Minique, SerializationError, TaskError
from minique.hooks import Attempt


@pytest.fixture
def immediate(db_path: Path) -> Minique:
    return Minique(db_path, immediate=True)


def test_immediate_option_runs_the_call_in_the_caller(immediate: Minique) -> None:
    threads: list[threading.Thread] = []

    @immediate.task
    def add(a: int, b: int) -> int:
        threads.append(threading.current_thread())
        return a + b

    result = add(2, 3)

    assert threads == [threading.current_thread()]
    assert result.get(blocking=False) == 5


def test_immediate_set_later_runs_the_call_in_the_caller(mq: Minique) -> None:
    threads: list[threading.Thread] = []

    @mq.task
    def add(a: int, b: int) -> int:
        threads.append(threading.current_thread())
        return a + b

    queued = add(1, 1)
    mq.immediate = True
    result = add(2, 3)

    assert threads == [threading.current_thread()]
    assert result.get(blocking=False) == 5
    assert queued.status == "queued"


def test_immediate_result_get_returns_the_value(immediate: Minique) -> None:
    @immediate.task
    def greet(name: str) -> dict[str, Any]:
        return {"hello": name, "pair": (1, 2)}

    assert greet("ada").get() == {"hello": "ada", "pair": (1, 2)}


def test_immediate_success_is_stored_done(immediate: Minique, db_path: Path) -> None:
    @immediate.task
    def work() -> str:
        return "ok"

    result = work()

    assert result.status == "done"
    record = result.record
    assert record.attempts == 1
    assert record.finished_at is not None
    assert immediate.counts()["done"] == 1
    assert Minique(db_path).result(result.id).get(blocking=False) == "ok"


def test_immediate_failure_raises_task_error_from_get(immediate: Minique) -> None:
    @immediate.task(name="billing.charge")
    def charge(amount: int) -> None:
        raise ValueError(f"cannot charge {amount}")

    result = charge(12)  # the call itself does not raise: the failure is in the result

    with pytest.raises(TaskError) as info:
        result.get()
    error = info.value
    assert error.task_name == "billing.charge"
    assert error.error_type == "ValueError"
    assert error.message == "cannot charge 12"
    assert "in charge" in error.traceback


def test_immediate_failure_is_stored_failed(immediate: Minique) -> None:
    @immediate.task
    def work() -> None:
        raise KeyError("missing")

    result = work()

    assert result.status == "failed"
    assert result.record.error_type == "KeyError"
    assert immediate.counts()["failed"] == 1


def test_immediate_unserializable_argument_raises_and_nothing_runs(immediate: Minique) -> None:
    ran: list[object] = []

    @immediate.task
    def work(arg: object) -> None:
        ran.append(arg)

    with pytest.raises(SerializationError):
        work(object())

    assert ran == []
    assert set(immediate.counts().values()) == {0}


def test_immediate_unserializable_return_value_is_stored_failed(immediate: Minique) -> None:
    @immediate.task
    def work() -> set[int]:
        return {1}

    result = work()

    with pytest.raises(TaskError) as info:
        result.get()
    assert info.value.error_type == "SerializationError"
    assert result.status == "failed"


def test_immediate_map_runs_every_call_at_once(immediate: Minique) -> None:
    @immediate.task
    def double(x: int) -> int:
        return 2 * x

    mapped = double.map([1, 2, 3])

    assert [r.get(blocking=False) for r in mapped] == [2, 4, 6]
    assert immediate.counts()["done"] == 3


def test_immediate_runs_through_around_task_hooks(immediate: Minique) -> None:
    events: list[str] = []

    @immediate.around_task
    @contextmanager
    def around(attempt: Attempt) -> Iterator[None]:
        events.append(f"enter #{attempt.number}")
        yield
        events.append("exit")

    @immediate.task
    def work() -> None:
        events.append("run")

    work()

    assert events == ["enter #1", "run", "exit"]


def test_immediate_retries_a_failing_call_at_once(immediate: Minique) -> None:
    attempts: list[int] = []

    @immediate.task(retries=2, retry_delay=60)
    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("not yet")
        return "ok"

    result = flaky()

    assert result.get(timeout=1) == "ok"
    assert len(attempts) == 3
    assert result.record.attempts == 3


def test_immediate_stops_retrying_when_retries_are_spent(immediate: Minique) -> None:
    attempts: list[int] = []

    @immediate.task(retries=1)
    def broken() -> None:
        attempts.append(1)
        raise ValueError("always")

    with pytest.raises(TaskError) as raised:
        broken().get(timeout=1)

    assert raised.value.error_type == "ValueError"
    assert len(attempts) == 2
