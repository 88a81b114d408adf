"""A consumer of one thread worker runs its tasks on the dispatcher's own thread.

That saves a hand-off between threads per task; these tests hold it to what a
worker thread guarantees: one task at a time in queue order (tasks with a
timeout still run on a watched worker thread), finished tasks recorded while
a later one runs long, and a stop that puts back a task running past the
grace period.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable

import pytest
from conftest import wait_for

from minique import Minique
from minique.consumer import Consumer

StartConsumer = Callable[..., Consumer]


def test_one_worker_runs_one_task_at_a_time_in_queue_order(
        mq: Minique, start_consumer: StartConsumer) -> None:
    # Given tasks with and without a timeout, queued in one order
    lock = threading.Lock()
    running: list[str] = []
    started: list[str] = []
    overlaps: list[tuple[str, ...]] = []

    def body(label: str) -> str:
        with lock:
            running.append(label)
            started.append(label)
            if len(running) > 1:
                overlaps.append(tuple(running))
        time.sleep(0.001)  # long enough for an overlap to show, were there one
        with lock:
            running.remove(label)
        return threading.current_thread().name

    @mq.task
    def untimed(label: str) -> str:
        return body(label)

    @mq.task(timeout=10)
    def timed(label: str) -> str:
        return body(label)

    calls = [timed if i % 5 == 2 else untimed for i in range(40)]
    results = [call(f"t{i}") for i, call in enumerate(calls)]

    # When a consumer of one worker runs them
    start_consumer(mq, workers=1)
    threads = [r.get(timeout=15) for r in results]

    # Then they ran one at a time, in the order they were queued
    assert overlaps == []
    assert started == [f"t{i}" for i in range(40)]
    # And the ones with a timeout ran on a worker thread (with the untimed ones
    # claimed behind them), the first ones on the dispatcher
    assert {t for t, call in zip(threads, calls, strict=True) if call is timed} \
        == {"minique-worker-1"}
    assert threads[:2] == ["minique-dispatcher"] * 2


def test_a_finished_task_is_recorded_while_the_next_one_runs_long(
        mq: Minique, start_consumer: StartConsumer, gate: threading.Event) -> None:
    # Given short tasks queued ahead of one that blocks, all claimed in one batch
    @mq.task
    def step(block: bool) -> str:
        if block:
            gate.wait(15)
        return "ok"

    short = step.map([(False,)] * 30)
    blocked = step(True)

    # When a consumer of one worker runs them
    start_consumer(mq, workers=1)
    wait_for(lambda: blocked.status == "running", timeout=10, what="the blocking task to start")

    # Then every short task is recorded as done while the blocking one still runs
    wait_for(lambda: all(r.status == "done" for r in short), timeout=5,
             what="the short tasks to be recorded")
    assert not gate.is_set() and blocked.status == "running"
    gate.set()
    assert blocked.get(timeout=10) == "ok"


def test_stop_puts_back_a_task_that_runs_past_the_grace(
        mq: Minique, gate: threading.Event, caplog: pytest.LogCaptureFixture) -> None:
    # Given a consumer of one worker, running a task that does not end
    caplog.set_level(logging.WARNING, logger="minique")
    ended = threading.Event()

    @mq.task
    def stuck() -> str:
        gate.wait(15)
        ended.set()
        return "late"

    consumer = mq.consumer(workers=1)
    consumer.start()
    result = stuck()
    wait_for(lambda: result.status == "running", timeout=10, what="the task to start")

    # When it is stopped with a short grace
    stopper = threading.Thread(target=consumer.stop, kwargs={"timeout": 0.2})
    stopper.start()
    stopper.join(10)

    # Then stop() returns with the task back in the queue, its attempt unused
    assert not stopper.is_alive()
    assert not consumer.running
    assert result.status == "queued"
    assert result.record.attempts == 0

    # And when the task ends after all, its outcome is not written
    gate.set()
    assert ended.wait(10)
    wait_for(lambda: "ran past the grace period" in caplog.text, timeout=10,
             what="the warning that the late outcome is ignored")
    assert result.status == "queued"

    # And the dispatcher, leaving after stop() returned, closed its wake-up pipe
    assert consumer._dispatcher is not None
    consumer._dispatcher.thread.join(10)
    assert (consumer.ledger.wake_r, consumer.ledger.wake_w) == (-1, -1)


def test_a_task_with_a_timeout_waits_for_the_task_before_it(
        mq: Minique, start_consumer: StartConsumer) -> None:
    # Given a task with a timeout queued behind a slower one without, in one batch
    lock = threading.Lock()
    running: list[str] = []
    overlaps: list[tuple[str, ...]] = []

    def body(label: str, pause: float) -> None:
        with lock:
            running.append(label)
            if len(running) > 1:
                overlaps.append(tuple(running))
        time.sleep(pause)
        with lock:
            running.remove(label)

    @mq.task
    def untimed(label: str, pause: float) -> None:
        body(label, pause)

    @mq.task(timeout=10)
    def timed(label: str, pause: float) -> None:
        body(label, pause)

    results = [untimed("u0", 0), untimed("u1", 0), untimed("u2", 0.3), timed("t3", 0.01),
               untimed("u4", 0)]

    # When a consumer of one worker runs them
    start_consumer(mq, workers=1)
    for result in results:
        result.get(timeout=10)

    # Then the one with a timeout did not start before the slow one ended
    assert overlaps == []


def test_stop_past_the_grace_runs_nothing_it_put_back(
        mq: Minique, gate: threading.Event) -> None:
    # Given a consumer of one worker stuck in a task, with a task with a
    # timeout and another one claimed behind it
    ran: list[str] = []

    @mq.task
    def untimed(label: str, block: bool) -> None:
        if block:
            gate.wait(15)
        ran.append(label)

    @mq.task(timeout=30)
    def timed(label: str) -> None:
        ran.append(label)

    results = [untimed("u0", False), untimed("u1", False), untimed("u2", True), timed("t3"),
               untimed("u4", False)]
    consumer = mq.consumer(workers=1)
    consumer.start()
    wait_for(lambda: results[2].status == "running" and results[4].status == "running",
             timeout=10, what="the stuck task to run and the last one to be claimed")

    # When it is stopped past the grace, and the stuck task ends after that
    consumer.stop(timeout=0.2)
    assert [r.status for r in results[2:]] == ["queued"] * 3
    gate.set()
    wait_for(lambda: "u2" in ran, timeout=10, what="the stuck task to end")

    # Then none of the tasks it put back ran in this consumer
    time.sleep(0.2)  # room for a wrongly started task to show
    assert ran == ["u0", "u1", "u2"]


def test_second_signal_before_the_stop_claims_nothing_more(
        mq: Minique, gate: threading.Event, start_consumer: StartConsumer) -> None:
    # Given a consumer running a task, and another task queued
    ran: list[str] = []

    @mq.task
    def blocker() -> None:
        gate.wait(15)

    @mq.task(timeout=30)
    def later() -> None:
        ran.append("later")

    consumer = start_consumer(mq, workers=1)
    first = blocker()
    wait_for(lambda: first.status == "running", timeout=10, what="the first task to start")
    queued = later()

    # When two signals come before run() has begun to stop, and the task ends
    consumer._on_signal(signal.SIGTERM, None)
    consumer._on_signal(signal.SIGTERM, None)
    gate.set()
    wait_for(lambda: first.status == "done", timeout=10, what="the first task to be recorded")

    # Then the queued task was not claimed
    time.sleep(0.2)  # room for a wrongly claimed task to start
    assert ran == [] and queued.status == "queued"
