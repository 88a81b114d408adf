"""Stopping a consumer: SIGTERM and SIGINT to ``minique consume``, and threads that are not main.

A signalled consumer takes no new task, lets running ones finish within
``--grace``, puts back what still runs after it and exits 0. ``Consumer.run()``
handles signals only on the main thread; ``start()``/``stop()`` work from any
thread and install no handler.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest
from conftest import Proc, wait_for

from minique import Minique
from minique.task import Task

APP = """
    import os
    import time
    from pathlib import Path

    from minique import Minique

    mq = Minique("queue.db")


    def mark(what, arg):
        line = f"{what} {arg} {os.getpid()}\\n"
        fd = os.open("markers.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


    @mq.task(name="work")
    def work(arg):
        mark("started", arg)
        deadline = time.monotonic() + 60
        while Path("hold").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        mark("finished", arg)
        return os.getpid()
"""

SIGNALS = pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT],
                                  ids=["SIGTERM", "SIGINT"])


class App(NamedTuple):
    root: Path
    hold: Path
    mq: Minique
    work: Task[[str], int]


@pytest.fixture
def app(app_dir: Callable[[str, str], Path], db_path: Path) -> App:
    """The jobs module for the consumers, and the test's producer side of the same queue."""
    root = app_dir("jobs", APP)
    mq = Minique(db_path)

    @mq.task(name="work")
    def work(arg: str) -> int:
        raise AssertionError("runs in the consumer")

    return App(root, root / "hold", mq, work)


def marked(app: App, what: str, arg: str) -> list[int]:
    path = app.root / "markers.txt"
    lines = path.read_text().splitlines() if path.exists() else []
    return [int(pid) for w, a, pid in (line.split() for line in lines) if (w, a) == (what, arg)]


def consume(spawn: Callable[..., Proc], *options: str) -> Proc:
    proc = spawn("-m", "minique", "consume", "jobs", "--no-periodic", *options)
    wait_for(lambda: "started on" in proc.output(), timeout=15, what="the consumer's banner")
    return proc


@SIGNALS
def test_signal_stops_claiming_and_lets_the_running_task_finish(
        app: App, spawn: Callable[..., Proc], signum: signal.Signals) -> None:
    # Given a consumer with a free worker, running a task that blocks
    app.hold.touch()
    consumer = consume(spawn, "-w", "2", "--grace", "15")
    running = app.work("running")
    wait_for(lambda: marked(app, "started", "running"), timeout=15,
             what="the task to start")

    # When it is signalled and a task is enqueued afterwards
    consumer.signal(signum)
    wait_for(lambda: "stopping: no new tasks" in consumer.output(), timeout=15,
             what="the consumer to start stopping")
    late = app.work("late")
    app.hold.unlink()

    # Then the running task finishes, the process exits 0 and the late task stays queued
    assert consumer.wait(15) == 0
    assert running.status == "done"
    assert running.get(timeout=1) == consumer.pid
    assert late.status == "queued"
    assert marked(app, "started", "late") == []


@SIGNALS
def test_task_longer_than_grace_is_put_back_without_using_an_attempt(
        app: App, spawn: Callable[..., Proc], signum: signal.Signals) -> None:
    # Given a consumer with a 1 s grace, running a task that blocks longer
    app.hold.touch()
    consumer = consume(spawn, "-w", "1", "--grace", "1")
    result = app.work("long")
    wait_for(lambda: marked(app, "started", "long"), timeout=15, what="the task to start")

    # When it is signalled
    signalled = time.monotonic()
    consumer.signal(signum)

    # Then it exits 0 once the grace is over, and the task is queued again, attempt unused
    assert consumer.wait(15) == 0
    assert time.monotonic() - signalled >= 1.0
    assert "put back 1 task(s) still running after the grace period" in consumer.output()
    assert result.status == "queued"
    assert result.record.attempts == 0

    # And a new consumer runs it to completion (retries=0, yet it still runs)
    app.hold.unlink()
    successor = consume(spawn, "-w", "1")
    assert result.get(timeout=15) == successor.pid
    assert result.record.attempts == 1


def test_second_sigint_skips_the_rest_of_the_grace(
        app: App, spawn: Callable[..., Proc]) -> None:
    # Given a consumer with a long grace, running a task that blocks
    app.hold.touch()
    consumer = consume(spawn, "-w", "1", "--grace", "60")
    result = app.work("long")
    wait_for(lambda: marked(app, "started", "long"), timeout=15, what="the task to start")

    # When it gets SIGINT twice (Ctrl-C, Ctrl-C)
    consumer.signal(signal.SIGINT)
    wait_for(lambda: "stopping: no new tasks" in consumer.output(), timeout=15,
             what="the consumer to start stopping")
    consumer.signal(signal.SIGINT)

    # Then it exits 0 well before the 60 s grace, the task put back
    assert consumer.wait(15) == 0
    assert result.status == "queued"
    assert result.record.attempts == 0


# -- consumers on threads other than the main one ----------------------------------------------


def handlers() -> dict[int, object]:
    return {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}


def test_run_on_a_non_main_thread_installs_no_signal_handler(mq: Minique) -> None:
    # Given a consumer whose run() is called on a thread other than the main one
    @mq.task
    def add(a: int, b: int) -> int:
        return a + b

    before = handlers()
    consumer = mq.consumer(workers=1, periodic=False)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            consumer.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        # When it runs a task
        assert add(2, 3).get(timeout=10) == 5

        # Then the process's signal handlers are untouched
        assert handlers() == before
    finally:
        consumer.request_stop()
        thread.join(15)

    # And request_stop() ends run() cleanly
    assert not thread.is_alive()
    assert errors == []
    assert not consumer.running


def test_start_and_stop_from_a_non_main_thread(mq: Minique) -> None:
    # Given a thread other than the main one
    @mq.task
    def add(a: int, b: int) -> int:
        return a + b

    before = handlers()
    seen: dict[str, object] = {}

    def use_consumer() -> None:
        consumer = mq.consumer(workers=2, periodic=False)
        try:
            # When it starts a consumer, has a task run and stops it
            consumer.start()
            seen["handlers while running"] = handlers()
            seen["result"] = add(1, 2).get(timeout=10)
        except BaseException as exc:
            seen["error"] = exc
        finally:
            consumer.stop(timeout=5)
            seen["running after stop"] = consumer.running

    thread = threading.Thread(target=use_consumer, daemon=True)
    thread.start()
    thread.join(20)

    # Then all of it works from there, and no signal handler was installed
    assert not thread.is_alive()
    assert "error" not in seen, seen
    assert seen == {"handlers while running": before, "result": 3, "running after stop": False}
    assert handlers() == before
