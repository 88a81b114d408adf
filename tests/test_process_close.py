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
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from minique.attempt import WorkerClosed
from minique.consumer.processes import ProcessRunner

TASKS = """
    import time

    from minique import Minique

    mq = Minique({db!r})


    @mq.task(name="hang")
    def hang():
        time.sleep(60)
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


def test_close_between_the_childs_answer_and_its_reading_puts_the_attempt_back(
        close_tasks: ModuleType) -> None:
    # Given a process worker's child running a claimed call
    mq = close_tasks.mq
    close_tasks.hang()
    [job] = mq.store.claim("consumer-1", mq.lease, time.time(), 1)
    runner = ProcessRunner(mq)
    runner.start()
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
