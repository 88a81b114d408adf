"""The first example of the README, end to end in one process."""

from __future__ import annotations

from collections.abc import Callable

from minique import Minique
from minique.consumer import Consumer


def test_task_call_returns_result_that_a_consumer_completes(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    @mq.task
    def add(a: int, b: int) -> int:
        return a + b

    result = add(2, 3)
    assert result.status == "queued"
    start_consumer(mq, workers=2)
    assert result.get(timeout=10) == 5
    assert result.status == "done"
