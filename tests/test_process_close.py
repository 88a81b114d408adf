"""Process workers closed at the end of the grace period: the attempt is put back, never failed.

``stop()`` closes a worker's child process (``ProcessRunner.close``) from the
stopping thread while the worker thread waits for the child's answer. Whatever
the interleaving, the worker thread must see ``WorkerClosed`` (the consumer
puts the call back, without using an attempt), not an error of its own that
the worker records as ``InternalError``, failing the call for good.
"""

from __future__ import annotations

import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from minique.attempt import WorkerClosed
from minique.consumer.processes import ProcessRunner
from minique.store import ClaimedJob

TASKS = """
    import time

    from minique import Minique

    mq = Minique({db!r})


    @mq.task(name="hang")
    def hang():
        time.sleep(60)


    @mq.task(name="pid")
    def pid():
        import os

        return os.getpid()
"""


@pytest.fixture
def close_tasks(tmp_path: Path) -> Iterator[ModuleType]:
    """The module ``close_tasks``, importable by a worker process (it is on sys.path)."""
    (tmp_path / "close_tasks.py").write_text(
        textwrap.dedent(TASKS).format(db=str(tmp_path / "queue.db")))
    sys.path.insert(0, str(tmp_path))
    try:
        import close_tasks  # type: ignore[import-not-found]

        yield close_tasks
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("close_tasks", None)


@pytest.fixture
def claimed(close_tasks: ModuleType) -> Iterator[tuple[ClaimedJob, ProcessRunner]]:
    """A claimed call of ``hang`` and a started process worker to run it in."""
    mq = close_tasks.mq
    close_tasks.hang()
    [job] = mq.store.claim("consumer-1", mq.lease, time.time(), 1)
    runner = ProcessRunner(mq)
    runner.start()
    yield job, runner
    runner.close()


def test_close_between_the_childs_answer_and_its_reading_puts_the_attempt_back(
        claimed: tuple[ClaimedJob, ProcessRunner]) -> None:
    # Given a process worker's child running a claimed call
    job, runner = claimed
    replies = runner._replies
    assert replies is not None
    real_poll = replies.poll

    def poll_then_closed(timeout: float | None = None) -> bool:
        # The stopping thread's close() runs all the way through just as the
        # worker thread's wait for the answer returns (the child was killed).
        answered = real_poll(0)
        runner.close()
        return answered or True

    replies.poll = poll_then_closed  # type: ignore[method-assign]

    # When the worker thread goes on to read the answer
    # Then it is told that the consumer closed the worker (the call goes back)
    with pytest.raises(WorkerClosed):
        runner.run(job, "consumer-1", None)


def test_the_worker_and_the_stopping_thread_closing_at_once_close_each_pipe_once(
        claimed: tuple[ClaimedJob, ProcessRunner]) -> None:
    # Given a worker thread running a call in its child, which on WorkerClosed
    # closes its runner as Workers does when it leaves
    job, runner = claimed
    child, requests = runner._process, runner._requests
    assert child is not None and requests is not None
    errors: list[BaseException] = []
    sent, worker_closed, main_closed = threading.Event(), threading.Event(), threading.Event()
    closes: list[str] = []
    real_send, real_close = requests.send, requests.close

    def send_then_say(obj: object) -> None:
        real_send(obj)
        sent.set()

    def close_slowly() -> None:
        # Whichever thread closes the pipe first holds on inside the close
        # until the other thread's close() is over: both closing it at once
        # is how CI saw EBADF.
        closes.append(threading.current_thread().name)
        other = main_closed if threading.current_thread() is worker else worker_closed
        other.wait(2)
        real_close()

    requests.send = send_then_say  # type: ignore[method-assign]
    requests.close = close_slowly  # type: ignore[method-assign]

    def work() -> None:
        try:
            runner.run(job, "consumer-1", None)
        except WorkerClosed:
            pass
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        try:
            runner.close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        worker_closed.set()

    worker = threading.Thread(target=work, name="worker")
    worker.start()
    assert sent.wait(10)

    # When the stopping thread closes it while the worker thread leaves
    try:
        runner.close()
    except BaseException as exc:  # noqa: BLE001 - reported below
        errors.append(exc)
    main_closed.set()
    worker.join(10)

    # Then the pipe was closed once, neither thread raised, and the child is gone
    assert not worker.is_alive()
    assert errors == []
    assert len(closes) == 1, closes
    assert child.poll() is not None


@pytest.mark.parametrize("closed_by", ["consumer", "task"])
def test_the_lifeline_watcher_exits_when_the_consumer_hangs_up_only(closed_by: str) -> None:
    # Given a process watching the reading end of a lifeline as worker
    # processes do where the kernel cannot signal them (outside Linux)
    import os
    import subprocess

    read_end, write_end = os.pipe()
    code = ("import os, sys; from minique.consumer.processes import _exit_if_hung_up; "
            "fd = int(sys.argv[1]); "
            "os.close(fd) if sys.argv[2] == 'task' else None; "
            "_exit_if_hung_up(fd, None)")
    watcher = subprocess.Popen([sys.executable, "-c", code, str(read_end), closed_by],
                               pass_fds=(read_end,))
    os.close(read_end)

    # When the consumer's end closes (it died), or a task closed the watcher's
    # descriptor while the consumer lives
    if closed_by == "consumer":
        os.close(write_end)
    try:
        # Then the watcher exits at once for the first, and lets the process go
        # on for the second (here: it returns, and the process ends normally)
        assert watcher.wait(10) == (1 if closed_by == "consumer" else 0)
    finally:
        if closed_by == "task":
            os.close(write_end)
        if watcher.poll() is None:
            watcher.kill()


def test_a_worker_process_that_cannot_be_replaced_is_tried_again_at_the_next_task(
        close_tasks: ModuleType, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    # Given a worker process replaced after each task, whose first replacement
    # cannot start (fork refused: a container's limit on processes)
    import errno

    real_launch = ProcessRunner.launch
    launches: list[int] = []

    def launch(runner: ProcessRunner) -> None:
        launches.append(1)
        if len(launches) == 2:
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
        real_launch(runner)

    monkeypatch.setattr(ProcessRunner, "launch", launch)
    mq = close_tasks.mq
    with mq.consumer(workers=1, worker_type="process", max_tasks=1, periodic=False):
        # When two tasks run, one after the other
        first = close_tasks.pid().get(timeout=10)
        second = close_tasks.pid().get(timeout=10)

    # Then the worker lived on, and started its process at the next task
    assert first != second
    assert len(launches) >= 3  # (and one more after the second task, unless stopping)
    assert "could not start: BlockingIOError" in caplog.text


def test_stopping_while_worker_processes_are_replaced_logs_no_error(
        close_tasks: ModuleType, caplog: pytest.LogCaptureFixture) -> None:
    # Given worker processes replaced after each task
    mq = close_tasks.mq
    with mq.consumer(workers=2, worker_type="process", max_tasks=1, periodic=False):
        # When the consumer stops right after their tasks, as they are replaced
        for result in [close_tasks.pid() for _ in range(2)]:
            result.get(timeout=10)

    # Then it says nothing of processes that could not start
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []
