"""Starting and stopping a consumer: its hooks, and a start that fails half-way."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from minique import Minique
from minique.consumer import Consumer


def consumer_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("minique-")
                  and t.name != "minique-checkpointer")


def test_start_and_stop_hooks_run_once_each_around_the_consumer(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    # Given hooks on consumer start and stop, and a task
    seen: list[str] = []
    mq.on_consumer_start(lambda c: seen.append(f"start {c.id == consumer_id()}"))
    mq.on_consumer_stop(lambda c: seen.append(f"stop running={c.running}"))

    @mq.task
    def add(a: int, b: int) -> int:
        seen.append("task")
        return a + b

    consumer = mq.consumer(workers=2)

    def consumer_id() -> str:
        return consumer.id

    # When the consumer starts, runs a task and stops
    consumer.start()
    assert add(1, 2).get(timeout=10) == 3
    consumer.stop(timeout=5)

    # Then the start hook ran before the task, and the stop hook after the consumer stopped
    assert seen == ["start True", "task", "stop running=False"]


def test_a_start_hook_that_raises_leaves_nothing_running_or_registered(mq: Minique) -> None:
    # Given a start hook that fails
    @mq.on_consumer_start
    def broken(consumer: Consumer) -> None:
        raise RuntimeError("the hook failed")

    before = consumer_threads()
    consumer = mq.consumer(workers=2)

    # When the consumer starts
    with pytest.raises(RuntimeError, match="the hook failed"):
        consumer.start()

    # Then nothing of it runs or is registered, and stop() is harmless
    assert consumer_threads() == before
    assert mq.consumers(live_only=False) == []
    assert mq._local_wakers == []
    assert not consumer.running
    consumer.stop(timeout=1)

    # ...and the queue can be reconfigured (no consumer holds it)
    mq.configure(mq.path)  # type: ignore[arg-type]


def test_the_banner_comes_before_the_first_task_line(
        mq: Minique, caplog: pytest.LogCaptureFixture) -> None:
    # Given calls waiting before the consumer starts
    @mq.task
    def work(n: int) -> int:
        return n

    results = work.map(range(20))
    caplog.set_level("INFO", logger="minique")

    # When a consumer starts and runs them
    with mq.consumer(workers=4):
        assert [r.get(timeout=10) for r in results] == list(range(20))

    # Then its banner lines come first
    messages = [r.getMessage() for r in caplog.records]
    first_task = next(i for i, m in enumerate(messages) if " done in " in m)
    banner = next(i for i, m in enumerate(messages) if " tasks: " in m)
    assert banner < first_task


def test_process_workers_that_cannot_find_the_queue_are_refused_at_start(
        db_path: object) -> None:
    # Given a queue built inside a function, which a worker process cannot import
    from minique.errors import ConfigurationError

    mq = Minique(db_path)  # type: ignore[arg-type]

    @mq.task
    def work() -> None: ...

    consumer = mq.consumer(workers=1, worker_type="process")

    # When a consumer with process workers starts
    # Then it refuses at once, saying why and what to do, and leaves nothing behind
    with pytest.raises(ConfigurationError, match="-k process cannot work here.*module level"):
        consumer.start()
    assert mq.consumers(live_only=False) == []
    assert not consumer.running
