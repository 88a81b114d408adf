"""Recycling consumers: after N tasks or past a memory limit, a fresh one takes over."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Proc, wait_for

from minique import Minique

APP = """
    import os

    from minique import Minique

    mq = Minique("queue.db")


    @mq.task(name="pid")
    def pid(n):
        return os.getpid()
"""


@pytest.fixture
def app(app_dir: Callable[[str, str], Path], db_path: Path) -> Minique:
    """The module ``jobs`` (a task returning the pid that ran it), and a producer of it."""
    app_dir("jobs", APP)
    mq = Minique(db_path)

    @mq.task(name="pid")
    def pid(n: int) -> int:
        raise AssertionError("runs in the consumer")

    return mq


def test_a_consumer_stops_after_max_tasks_leaving_the_rest_queued(mq: Minique) -> None:
    # Given 25 short calls and a consumer that may run 10
    @mq.task
    def work(n: int) -> int:
        return n

    results = work.map(range(25))
    consumer = mq.consumer(workers=4, max_tasks=10)

    # When it runs
    runner = threading.Thread(target=consumer.run)
    runner.start()
    try:
        runner.join(30)
    finally:
        consumer.request_stop()
        runner.join(10)

    # Then it stopped by itself after exactly 10, and the others wait for the next one
    assert not consumer.running
    statuses = [r.status for r in results]
    assert statuses.count("done") == 10
    assert statuses.count("queued") == 15
    assert mq.counts()["running"] == 0


def test_minique_consume_exits_0_after_max_tasks(app: Minique, spawn: Callable[..., Proc]) -> None:
    results = app.tasks["pid"].map(range(8))

    proc = spawn("-m", "minique", "consume", "jobs", "-w", "2", "--max-tasks", "5")

    assert proc.wait(30) == 0
    assert [r.status for r in results].count("done") == 5
    assert "ran its --max-tasks" in proc.output()


def test_minique_consume_exits_0_past_max_memory(app: Minique, spawn: Callable[..., Proc]) -> None:
    # Given a limit below what any Python process uses
    proc = spawn("-m", "minique", "consume", "jobs", "--max-memory", "1")

    # Then the consumer stops by itself, as after SIGTERM, for its supervisor to restart it
    assert proc.wait(30) == 0
    assert "passed --max-memory 1 MB" in proc.output()


def test_process_workers_are_replaced_after_max_tasks(
        app: Minique, spawn: Callable[..., Proc]) -> None:
    # Given a consumer with one worker process, replaced every 2 tasks
    proc = spawn("-m", "minique", "consume", "jobs", "-w", "1", "-k", "process",
                 "--max-tasks", "2")

    # When 6 tasks run, one after another
    pids = [app.tasks["pid"](n).get(timeout=60) for n in range(6)]

    # Then they ran in 3 worker processes, 2 each, and the consumer goes on
    assert [pids.count(p) for p in dict.fromkeys(pids)] == [2, 2, 2]
    assert proc.popen.poll() is None


def test_a_worn_out_worker_process_is_replaced_before_the_next_call_comes(
        app: Minique, spawn: Callable[..., Proc]) -> None:
    # Given a consumer whose one worker process is replaced after each task
    proc = spawn("-m", "minique", "consume", "jobs", "-w", "1", "-k", "process",
                 "--max-tasks", "1")

    # When a task has run, and no other is queued
    first = app.tasks["pid"](0).get(timeout=60)

    # Then a fresh worker process is started at once, rather than when the
    # next call is claimed (its attempt counted while its worker was not ready)
    wait_for(lambda: proc.children() and first not in proc.children(), timeout=30,
             what="a fresh worker process")
    [fresh] = proc.children()
    assert app.tasks["pid"](1).get(timeout=60) == fresh


def test_process_workers_are_replaced_past_max_memory(
        app: Minique, spawn: Callable[..., Proc]) -> None:
    proc = spawn("-m", "minique", "consume", "jobs", "-w", "1", "-k", "process",
                 "--max-memory", "1")

    pids = [app.tasks["pid"](n).get(timeout=60) for n in range(3)]

    assert len(set(pids)) == 3
    wait_for(lambda: "uses" in proc.output(), what="the log line of a replaced worker")
    assert proc.popen.poll() is None
