"""Nudges between processes: a producer's datagram wakes a sleeping consumer."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import wait_for

from minique import Minique
from minique.store.wakeup import Listener, Nudger


def test_nudge_wakes_a_listener_and_is_consumed(db_path: Path) -> None:
    # Given a consumer listening beside the database
    listener = Listener(db_path, "c" * 32)
    assert listener.open()
    try:
        # When a producer nudges twice
        nudger = Nudger(db_path)
        nudger.nudge()
        nudger.nudge()

        # Then one wait sees them (long bound: it must return because of the
        # nudge, not the timeout) and all of them are consumed at once
        assert listener.wait(5.0) is True
        assert listener.wait(0.0) is False
    finally:
        listener.close()


def test_listener_with_a_path_longer_than_a_unix_socket_allows(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    listener = Listener(deep / "queue.db", "f" * 32)
    assert listener.open()
    try:
        Nudger(deep / "queue.db").nudge()
        assert listener.wait(5.0) is True
    finally:
        listener.close()


def test_stale_socket_of_a_dead_consumer_is_removed_by_the_next_nudge(db_path: Path) -> None:
    listener = Listener(db_path, "a" * 32)
    assert listener.open()
    socket_file = listener.folder / listener.name
    # A consumer that died without closing leaves its socket file behind
    assert listener.sock is not None
    listener.sock.close()
    listener.sock = None
    assert socket_file.exists()

    Nudger(db_path).nudge()

    assert not os.path.exists(socket_file)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_nudges_though_a_thread_held_the_nudgers_lock_at_fork(
        mq: Minique, db_path: Path) -> None:
    # Given a consumer listening, and a producer that has nudged it before
    listener = Listener(db_path, "b" * 32)
    assert listener.open()
    try:
        mq.wake_consumers()
        assert listener.wait(5.0) is True
        # When the producer forks while one of its threads holds the nudger's
        # lock (a thread refreshing the list of consumers), and the child nudges
        with mq.store.notifier._nudger._lock:  # type: ignore[attr-defined]
            pid = os.fork()
            if pid == 0:  # the child: no thread of the parent runs here
                try:
                    mq.wake_consumers()
                finally:
                    os._exit(0)
        # Then the child finished (it did not wait for the parent's thread) and woke the consumer
        deadline = time.monotonic() + 10
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        if done[0] == 0:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung on the lock its parent's thread held")
        assert listener.wait(5.0) is True
    finally:
        listener.close()


def double_in_another_process(db_path: Path, x: int) -> str:
    """Enqueue ``double(x)`` on ``db_path`` from a new Python process; the call's id."""
    script = textwrap.dedent(f"""
        from minique import Minique
        mq = Minique({str(db_path)!r})
        @mq.task(name="double")
        def double(x): ...
        print(double({x}).id)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=True)
    return done.stdout.strip()


def test_a_producer_in_another_process_wakes_a_sleeping_consumer(
        db_path: Path, tmp_path: Path) -> None:
    # Given a consumer asleep with its safety-net poll an hour away
    mq = Minique(db_path)

    @mq.task(name="double")
    def double(x: int) -> int:
        return 2 * x

    mq.counts()  # the tables exist before the consumer looks
    consumer = mq.consumer(workers=2, poll_interval=3600)
    consumer.start()
    try:
        wait_for(lambda: any(p.suffix == ".sock" for p in Path(f"{db_path}-wake").iterdir()),
                 timeout=10, what="the consumer's socket")
        time.sleep(0.1)  # let the dispatcher settle into its sleep

        # When another process enqueues a call
        call_id = double_in_another_process(db_path, 21)

        # Then the consumer runs it: only the producer's nudge could have woken it
        assert mq.result(call_id).get(timeout=10) == 42
    finally:
        consumer.stop(timeout=5)


def test_consumer_in_a_process_with_over_1024_descriptors_sleeps_and_wakes(
        db_path: Path) -> None:
    # Given a process that already holds descriptors numbered past 1,024
    # (select() cannot watch those; a web server under load may hold as many)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        if hard != resource.RLIM_INFINITY and hard < 1200:
            pytest.skip("the hard limit on open files is below 1,200")
        resource.setrlimit(resource.RLIMIT_NOFILE, (1200, hard))
    base = os.open(os.devnull, os.O_RDONLY)
    held = [os.dup(base) for _ in range(1100)]
    mq = Minique(db_path)

    @mq.task(name="double")
    def double(x: int) -> int:
        return 2 * x

    mq.counts()
    looks = []
    changes = mq.store.changes

    def counting() -> int:
        looks.append(1)
        return changes()

    mq.store.changes = counting  # type: ignore[method-assign]
    consumer = mq.consumer(workers=2, poll_interval=0.25)
    consumer.start()
    try:
        # When it is idle for a second
        time.sleep(1.0)

        # Then it slept between its looks at the database (a spinning dispatcher
        # makes tens of thousands), and another process's call still wakes it
        assert len(looks) < 50
        assert mq.result(double_in_another_process(db_path, 21)).get(timeout=10) == 42
    finally:
        consumer.stop(timeout=5)
        for fd in [base, *held]:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
