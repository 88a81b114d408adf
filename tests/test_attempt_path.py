"""One way to run an attempt: immediate mode and a consumer give the same outcome."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest

from minique import Minique, TaskError
from minique.consumer import Consumer
from minique.hooks import Attempt


@pytest.fixture(params=["immediate", "consumer"])
def run_mode(request: pytest.FixtureRequest, mq: Minique,
             start_consumer: Callable[..., Consumer]) -> str:
    """The queue runs calls inline (immediate mode) or on a consumer thread."""
    if request.param == "immediate":
        mq.immediate = True
    else:
        start_consumer(mq, workers=2)
    return str(request.param)


def test_a_return_value_that_cannot_be_stored_fails_without_retrying(
        mq: Minique, run_mode: str) -> None:
    # Given a task with retries that returns a value JSON cannot store
    runs: list[int] = []

    @mq.task(retries=2, retry_delay=0)
    def returns_a_set() -> object:
        runs.append(1)
        return {1, 2}

    # When it runs
    result = returns_a_set()

    # Then it fails at once (a retry would store the same value): one run
    with pytest.raises(TaskError) as info:
        result.get(timeout=10)
    assert info.value.error_type == "SerializationError"
    assert len(runs) == 1


def test_an_error_swallowed_by_a_hook_still_fails_the_attempt(
        mq: Minique, run_mode: str) -> None:
    # Given a hook that suppresses every exception of the task
    @mq.around_task
    def swallow(attempt: Attempt) -> Iterator[None]:
        return contextlib.suppress(Exception)  # type: ignore[return-value]

    @mq.task
    def broken() -> None:
        raise ValueError("the task's own error")

    # When the task raises
    result = broken()

    # Then the call fails with the task's error, not an error of minique's
    with pytest.raises(TaskError) as info:
        result.get(timeout=10)
    assert info.value.error_type == "ValueError"
    assert info.value.message == "the task's own error"
