"""Retries: the wait arithmetic of ``TaskOptions.retry_wait``, and a real consumer retrying
failed calls (``retries``, delays, backoff, cap, ``retry_on``, ``raise Retry``)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import wait_for

from minique import Minique, Result, Retry, TaskError
from minique.consumer import Consumer
from minique.task import TaskOptions

# Float noise of an eta stored as epoch seconds (~1e9) through SQLite REAL.
EPS = 1e-5

# -- the arithmetic --------------------------------------------------------------------


def test_first_retry_waits_retry_delay() -> None:
    options = TaskOptions(name="t", retry_delay=1.5, retry_jitter=0)

    assert options.retry_wait(1) == 1.5


def test_each_further_retry_waits_backoff_times_longer() -> None:
    options = TaskOptions(name="t", retry_delay=1.5, retry_backoff=3.0, retry_jitter=0)

    assert [options.retry_wait(k) for k in (1, 2, 3, 4)] == [1.5, 4.5, 13.5, 40.5]


def test_retry_wait_is_capped_at_retry_max_delay() -> None:
    options = TaskOptions(name="t", retry_delay=1.0, retry_backoff=10.0, retry_max_delay=50.0,
                          retry_jitter=0)

    assert [options.retry_wait(k) for k in (1, 2, 3, 4)] == [1.0, 10.0, 50.0, 50.0]


def test_backoff_of_one_waits_the_same_every_time() -> None:
    options = TaskOptions(name="t", retry_delay=2.0, retry_backoff=1.0, retry_jitter=0)

    assert [options.retry_wait(k) for k in (1, 2, 10)] == [2.0, 2.0, 2.0]


def test_default_retry_wait_doubles_from_one_second_with_jitter() -> None:
    options = TaskOptions(name="t")

    for k, base in ((1, 1.0), (2, 2.0), (3, 4.0)):
        assert base * 0.9 <= options.retry_wait(k) <= base * 1.1


def test_jittered_waits_stay_within_the_jitter_bounds() -> None:
    options = TaskOptions(name="t", retry_delay=10.0, retry_backoff=2.0, retry_jitter=0.25)

    first = [options.retry_wait(1) for _ in range(300)]
    third = [options.retry_wait(3) for _ in range(300)]

    assert all(7.5 <= w <= 12.5 for w in first)
    assert all(30.0 <= w <= 50.0 for w in third)
    assert len(set(first)) > 1, "jitter should vary the wait"


def test_jitter_multiplies_the_wait_by_a_factor_drawn_around_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        drawn.append((low, high))
        return high

    monkeypatch.setattr(random, "uniform", uniform)
    options = TaskOptions(name="t", retry_delay=4.0, retry_jitter=0.5)

    assert options.retry_wait(1) == 6.0
    assert drawn == [(0.5, 1.5)]


# -- a consumer retrying ------------------------------------------------------------------


@dataclass
class Attempt:
    started: float  # when the task function began
    eta: float  # the row's eta as the task saw it: when this attempt was allowed to run
    raised: float  # when the task function raised (or returned)


class Flaky:
    """A task body that fails ``failures`` times, then returns ``"ok"``; it notes each attempt."""

    def __init__(self, mq: Minique, failures: int, error: Callable[[int], BaseException]) -> None:
        self.mq = mq
        self.failures = failures
        self.error = error
        self.attempts: list[Attempt] = []
        self.job_id = ""

    def __call__(self) -> str:
        started = time.time()
        eta = self.mq.result(self.job_id).record.eta
        self.attempts.append(Attempt(started, eta, time.time()))
        if len(self.attempts) <= self.failures:
            raise self.error(len(self.attempts))
        return "ok"

    def waits(self) -> list[tuple[float, float]]:
        """Bounds of each retry wait the consumer chose: it was computed after the attempt
        raised and before the next one started, and added to that moment to give the eta."""
        return [(nxt.eta - nxt.started, nxt.eta - prev.raised)
                for prev, nxt in zip(self.attempts, self.attempts[1:], strict=False)]


def _flaky_task(mq: Minique, failures: int, error: Callable[[int], BaseException],
                **options: Any) -> tuple[Flaky, Callable[[], Result[str]]]:
    body = Flaky(mq, failures, error)

    def flaky() -> str:
        return body()

    task = mq.task(name="flaky", **options)(flaky)

    def enqueue() -> Result[str]:
        result = task()
        body.job_id = result.id
        return result

    return body, enqueue


def test_failed_call_is_tried_again_up_to_retries_times(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    body, enqueue = _flaky_task(mq, 2, lambda n: ValueError(f"attempt {n}"),
                                retries=2, retry_delay=0.01, retry_jitter=0)
    result = enqueue()
    start_consumer(mq, workers=1)

    assert result.get(timeout=10) == "ok"
    assert len(body.attempts) == 3
    assert result.record.attempts == 3


def test_retry_with_no_wait_runs_again_at_once(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    body, enqueue = _flaky_task(mq, 30, lambda n: ValueError(f"attempt {n}"),
                                retries=30, retry_delay=0, retry_jitter=0)
    result = enqueue()
    start_consumer(mq, workers=1)

    assert result.get(timeout=1) == "ok"
    assert len(body.attempts) == 31


def test_retry_waits_follow_delay_backoff_and_cap(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    # 0.05 s, then 0.05*4 = 0.2 capped to 0.1, then 0.8 capped to 0.1
    body, enqueue = _flaky_task(mq, 3, lambda n: ValueError(f"attempt {n}"),
                                retries=3, retry_delay=0.05, retry_backoff=4.0,
                                retry_max_delay=0.1, retry_jitter=0)
    result = enqueue()
    start_consumer(mq, workers=1)

    assert result.get(timeout=10) == "ok"
    waits = body.waits()
    assert len(waits) == 3
    for expected, (low, high) in zip([0.05, 0.1, 0.1], waits, strict=True):
        assert low - EPS <= expected <= high + EPS, (expected, low, high)


def test_retried_call_does_not_run_before_its_time(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    body, enqueue = _flaky_task(mq, 2, lambda n: ValueError(f"attempt {n}"),
                                retries=2, retry_delay=0.05, retry_jitter=0)
    result = enqueue()
    start_consumer(mq, workers=1)

    assert result.get(timeout=10) == "ok"
    for attempt in body.attempts[1:]:
        assert attempt.started >= attempt.eta - EPS


def test_retried_call_is_scheduled_until_its_time(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    body, enqueue = _flaky_task(mq, 1, lambda n: ValueError(f"attempt {n}"),
                                retries=1, retry_delay=3600, retry_jitter=0)
    result = enqueue()
    start_consumer(mq, workers=1)

    wait_for(lambda: result.status == "scheduled", what="the first attempt to fail")
    observed = time.time()
    record = result.record
    assert record.attempts == 1
    assert body.attempts[0].raised + 3600 - EPS <= record.eta <= observed + 3600 + EPS
    assert record.error_type == "ValueError"
    assert record.error_message == "attempt 1"
    assert result.get(blocking=False) is None
    assert mq.counts()["scheduled"] == 1


def test_exception_not_in_retry_on_fails_at_once(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    body, enqueue = _flaky_task(mq, 3, lambda n: KeyError(f"attempt {n}"),
                                retries=3, retry_delay=0.01, retry_jitter=0, retry_on=(ValueError,))
    result = enqueue()
    start_consumer(mq, workers=1)

    with pytest.raises(TaskError) as info:
        result.get(timeout=10)
    assert info.value.error_type == "KeyError"
    assert len(body.attempts) == 1
    assert result.record.attempts == 1


def test_exception_in_retry_on_is_retried(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    body, enqueue = _flaky_task(mq, 1, lambda n: UnicodeError(f"attempt {n}"),
                                retries=3, retry_delay=0.01, retry_jitter=0, retry_on=(ValueError,))
    result = enqueue()
    start_consumer(mq, workers=1)

    assert result.get(timeout=10) == "ok"
    assert len(body.attempts) == 2


def test_raise_retry_uses_a_retry_with_its_own_delay(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    # the task's own delay is an hour: only Retry's delay can make the second attempt soon
    body, enqueue = _flaky_task(mq, 1, lambda n: Retry(delay=0.05),
                                retries=1, retry_delay=3600, retry_jitter=0)
    result = enqueue()
    start_consumer(mq, workers=1)

    assert result.get(timeout=10) == "ok"
    ((low, high),) = body.waits()
    assert low - EPS <= 0.05 <= high + EPS
    assert result.record.attempts == 2


def test_raise_retry_without_retries_left_fails(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    body, enqueue = _flaky_task(mq, 5, lambda n: Retry(delay=0.01), retries=1, retry_jitter=0)
    result = enqueue()
    start_consumer(mq, workers=1)

    with pytest.raises(TaskError) as info:
        result.get(timeout=10)
    assert info.value.error_type == "Retry"
    assert len(body.attempts) == 2


def test_raise_retry_counts_as_a_retry_even_when_retry_on_excludes_it(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    body, enqueue = _flaky_task(mq, 1, lambda n: Retry(delay=0.01), retries=1, retry_jitter=0,
                                retry_on=(KeyError,))
    result = enqueue()
    start_consumer(mq, workers=1)

    assert result.get(timeout=10) == "ok"
    assert len(body.attempts) == 2


def test_task_that_fails_for_good_keeps_its_last_error(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    body, enqueue = _flaky_task(mq, 99, lambda n: ValueError(f"attempt {n}"),
                                retries=2, retry_delay=0.01, retry_jitter=0)
    result = enqueue()
    start_consumer(mq, workers=1)

    with pytest.raises(TaskError) as info:
        result.get(timeout=10)
    error = info.value
    assert error.task_name == "flaky"
    assert error.error_type == "ValueError"
    assert error.message == "attempt 3"
    assert "raise self.error(len(self.attempts))" in error.traceback
    record = result.record
    assert record.state == "failed"
    assert record.attempts == 3
    assert record.error_type == "ValueError"
    assert record.error_message == "attempt 3"
    assert record.traceback == error.traceback
    assert len(body.attempts) == 3
