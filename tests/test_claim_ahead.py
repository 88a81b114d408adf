"""How many calls a consumer claims ahead of its free workers.

Short tasks are claimed in batches so that claims and finishes share
commits; tiny ones in larger batches (a few milliseconds of work); long ones
not at all, so that an idle consumer elsewhere gets them.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from minique import Minique
from minique.consumer import Consumer
from minique.consumer.ledger import MAX_BUFFER, MIN_BUFFER, Ledger

StartConsumer = Callable[..., Consumer]


@pytest.mark.parametrize(("workers", "avg", "ahead"), [
    (1, None, 0),  # nothing known yet: no buffer
    (1, 0.05, 0),  # long tasks: never claimed ahead
    (1, 0.01, MIN_BUFFER),  # short: the batch of before
    (1, 0.0001, 50),  # 0.1 ms: 5 ms of work
    (1, 0.00001, MAX_BUFFER),  # tiny: as many as the cap
    (1, 0.0, MAX_BUFFER),
    (2, 0.0001, 100),  # 2 run at once: twice as many
    (4, 0.0001, MAX_BUFFER),
    (64, 0.01, 4 * 64),  # many workers: 4 each, past the cap
])
def test_the_buffer_holds_a_few_milliseconds_of_short_tasks(
        mq: Minique, workers: int, avg: float | None, ahead: int) -> None:
    ledger = Ledger(mq, workers, inline=workers == 1)
    ledger.avg_duration = avg

    assert ledger.capacity() == workers + ahead


def test_a_consumer_of_tiny_tasks_holds_more_than_the_fixed_batch(
        mq: Minique, start_consumer: StartConsumer) -> None:
    # Given a queue of tiny tasks, every 100th noting how many calls are
    # running (reading the count is far slower than a tiny task)
    seen: list[int] = []

    @mq.task
    def tiny(n: int) -> None:
        if n % 100 == 99:
            seen.append(mq.counts()["running"])

    results = tiny.map(range(1000))

    # When one worker drains them
    start_consumer(mq, workers=1)
    for result in results:
        result.get(timeout=20)

    # Then once their duration is known it claims past the fixed batch of short tasks
    assert max(seen) > 1 + MIN_BUFFER


def test_a_worker_replacing_its_process_is_not_a_free_worker(mq: Minique) -> None:
    # Given 3 workers, one call running, and one worker starting a fresh process
    ledger = Ledger(mq, 3, inline=False)
    ledger.inflight = 1
    ledger.starting = 1

    # Then a call claimed now starts at once on one worker only: the others
    # are claimed ahead, their attempt counted when they start
    assert ledger.free_workers(0) == 1
