"""Per-task timeouts, with thread workers and with process workers (``-k process``).

Thread workers: a Python thread cannot be killed, so past its timeout the
consumer stops waiting, records ``TaskTimeout`` (retrying if retries remain),
starts a replacement thread and drops whatever the stuck attempt returns
later. The hung tasks here wait on a ``threading.Event`` that the test sets
when it wants them to end (and that every test sets on the way out).

Process workers: tasks live in an importable module (``proc_tasks``, written
once per test module); each worker thread owns a child interpreter, killed at
the timeout. The last tests measure the per-task cost of process workers
against threads (printed; run with ``-s`` to read it).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import statistics
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import Proc, wait_for

from minique import Minique, TaskError
from minique.consumer import Consumer

StartConsumer = Callable[..., Consumer]


def failure(result: Any, timeout: float = 10.0) -> TaskError:
    with pytest.raises(TaskError) as raised:
        result.get(timeout=timeout)
    return raised.value


# -- thread workers -------------------------------------------------------------------------


def test_attempt_past_its_timeout_fails_with_task_timeout(
        mq: Minique, start_consumer: StartConsumer, gate: threading.Event) -> None:
    # Given a task with a 0.3 s timeout that hangs
    @mq.task(timeout=0.3)
    def hang() -> str:
        gate.wait(10)
        return "finished"

    start_consumer(mq, workers=2)

    # When it runs
    began = time.monotonic()
    result = hang()
    error = failure(result)

    # Then it fails with TaskTimeout, long before the task itself would end
    assert error.error_type == "TaskTimeout"
    assert "0.3 s" in error.message
    assert result.status == "failed"
    assert not gate.is_set()
    assert time.monotonic() - began < 10


def test_timed_out_attempt_is_retried_when_retries_remain(
        mq: Minique, start_consumer: StartConsumer, gate: threading.Event) -> None:
    # Given a task with one retry that hangs on its first attempt only
    attempts: list[int] = []

    @mq.task(timeout=0.3, retries=1, retry_delay=0)
    def flaky() -> str:
        attempts.append(len(attempts) + 1)
        if len(attempts) == 1:
            gate.wait(10)
            return "first"
        return "second"

    start_consumer(mq, workers=2)

    # When it runs
    result = flaky()

    # Then the second attempt's value is the result
    assert result.get(timeout=10) == "second"
    assert attempts == [1, 2]
    assert result.record.attempts == 2


def test_task_that_times_out_on_every_attempt_fails_after_its_retries(
        mq: Minique, start_consumer: StartConsumer, gate: threading.Event) -> None:
    starts: list[float] = []

    @mq.task(timeout=0.3, retries=1, retry_delay=0)
    def hang() -> None:
        starts.append(time.monotonic())
        gate.wait(10)

    start_consumer(mq, workers=2)

    error = failure(hang())

    assert error.error_type == "TaskTimeout"
    assert len(starts) == 2  # tried twice
    assert starts[1] - starts[0] >= 0.3


def test_timed_out_thread_is_replaced_so_other_tasks_still_run(
        mq: Minique, start_consumer: StartConsumer, gate: threading.Event) -> None:
    # Given a consumer of ONE worker thread, stuck in a task past its timeout
    stuck_on: list[threading.Thread] = []

    @mq.task(timeout=0.3)
    def hang() -> None:
        stuck_on.append(threading.current_thread())
        gate.wait(10)

    # (with one thread worker, tasks with a timeout run on a worker thread that
    # the dispatcher watches; the others run on the dispatcher's own thread)
    @mq.task(timeout=5)
    def quick() -> str:
        return threading.current_thread().name

    @mq.task
    def untimed() -> str:
        return threading.current_thread().name

    start_consumer(mq, workers=1)
    assert failure(hang()).error_type == "TaskTimeout"

    # When other tasks are enqueued while that thread is still stuck
    ran_on = quick().get(timeout=10)
    also_ran_on = untimed().get(timeout=10)

    # Then they run, the one with a timeout on a new worker thread
    assert stuck_on[0].is_alive() and not gate.is_set()
    assert ran_on is not None and ran_on.startswith("minique-worker")
    assert ran_on != stuck_on[0].name
    assert also_ran_on == "minique-dispatcher"


def test_stuck_attempt_keeps_running_and_its_outcome_is_ignored(
        mq: Minique, start_consumer: StartConsumer, gate: threading.Event,
        caplog: pytest.LogCaptureFixture) -> None:
    # Given a task that timed out while its thread stayed stuck
    caplog.set_level(logging.WARNING, logger="minique")
    side_effects: list[str] = []

    @mq.task(timeout=0.3)
    def hang() -> str:
        gate.wait(10)
        side_effects.append("wrote after the timeout")
        return "stale value"

    start_consumer(mq, workers=1)
    result = hang()
    assert failure(result).error_type == "TaskTimeout"

    # When the stuck code finally returns
    gate.set()
    wait_for(lambda: "its outcome is ignored" in caplog.text, timeout=10,
             what="the consumer to drop the stale outcome")

    # Then its side effects happened, but the row keeps the timeout
    assert side_effects == ["wrote after the timeout"]
    error = failure(result)
    assert (result.status, error.error_type) == ("failed", "TaskTimeout")


def test_stale_outcome_does_not_replace_the_outcome_of_the_retry(
        mq: Minique, start_consumer: StartConsumer, gate: threading.Event,
        caplog: pytest.LogCaptureFixture) -> None:
    # Given a task whose first attempt hung, and whose retry then finished
    caplog.set_level(logging.WARNING, logger="minique")
    attempts: list[int] = []

    @mq.task(timeout=0.3, retries=1, retry_delay=0)
    def flaky() -> str:
        attempts.append(len(attempts) + 1)
        if len(attempts) == 1:
            gate.wait(10)
            return "stale"
        return "fresh"

    start_consumer(mq, workers=2)
    result = flaky()
    assert result.get(timeout=10) == "fresh"

    # When the first attempt returns at last
    gate.set()
    wait_for(lambda: "its outcome is ignored" in caplog.text, timeout=10,
             what="the consumer to drop the stale outcome")

    # Then the result is still the retry's
    assert result.get(timeout=1) == "fresh"
    assert result.status == "done"


def test_stale_attempt_ending_while_its_retry_runs_does_not_disturb_the_retry(
        mq: Minique, start_consumer: StartConsumer, gate: threading.Event,
        caplog: pytest.LogCaptureFixture) -> None:
    # Given attempt 1 stuck past its timeout, and attempt 2 running on the new thread
    caplog.set_level(logging.WARNING, logger="minique")
    attempts: list[int] = []
    second_started = threading.Event()
    second_gate = threading.Event()
    stale_returned = threading.Event()

    @mq.task(timeout=1.0, retries=1, retry_delay=0)
    def flaky() -> str:
        attempts.append(len(attempts) + 1)
        if len(attempts) == 1:
            gate.wait(10)
            stale_returned.set()
            return "stale"
        second_started.set()
        second_gate.wait(0.8)
        return "fresh"

    @mq.task
    def quick() -> str:
        return "quick"

    start_consumer(mq, workers=1)
    result = flaky()
    assert second_started.wait(10)

    # When attempt 1 returns while attempt 2 still runs, and then attempt 2 ends
    gate.set()
    assert stale_returned.wait(5)
    wait_for(lambda: "ignored" in caplog.text, timeout=5, what="the stale outcome's fate")
    second_gate.set()

    # Then attempt 2's value is the result, and the consumer still has its worker
    assert result.get(timeout=2) == "fresh"
    assert quick().get(timeout=2) == "quick"


# -- process workers ------------------------------------------------------------------------

PROC_TASKS = """
    import os
    import time
    from pathlib import Path

    from minique import Minique

    mq = Minique({db!r})


    @mq.task(name="whoami")
    def whoami():
        return os.getpid()


    @mq.task(name="add")
    def add(a, b):
        return {{"sum": a + b, "pid": os.getpid()}}


    @mq.task(name="noop")
    def noop():
        return None


    @mq.task(name="sleeper", timeout=0.5)
    def sleeper(marker):
        Path(marker).write_text(str(os.getpid()))
        time.sleep(60)


    @mq.task(name="crasher", retries=1, retry_delay=0)
    def crasher(marker):
        with open(marker, "a") as out:
            out.write(f"{{os.getpid()}}\\n")
        os._exit(3)


    @mq.task(name="crash_once", retries=1, retry_delay=0)
    def crash_once(marker):
        if not Path(marker).exists():
            Path(marker).write_text(str(os.getpid()))
            os._exit(3)
        return "survived"
"""


@pytest.fixture(scope="module")
def proc_tasks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The module ``proc_tasks``, importable by the process workers (it is on sys.path)."""
    root = tmp_path_factory.mktemp("proc_tasks")
    (root / "proc_tasks.py").write_text(
        textwrap.dedent(PROC_TASKS).format(db=str(root / "queue.db")))
    sys.path.insert(0, str(root))
    try:
        import proc_tasks  # type: ignore[import-not-found]

        yield proc_tasks
    finally:
        sys.path.remove(str(root))
        sys.modules.pop("proc_tasks", None)


def pid_alive(pid: int) -> bool:
    """True while a process ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return not stat.parent.parent.exists()  # no /proc: trust os.kill


def parent_of(pid: int) -> int | None:
    """The parent pid of ``pid``, read from /proc (None where there is no /proc)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    except OSError:
        return None


def test_process_worker_returns_task_values(
        proc_tasks: ModuleType, start_consumer: StartConsumer) -> None:
    # Given a consumer with one process worker
    start_consumer(proc_tasks.mq, workers=1, worker_type="process")

    # When tasks run
    added = proc_tasks.add(2, 3).get(timeout=30)
    again = proc_tasks.whoami().get(timeout=10)

    # Then their values come back from a child process, the same one each time
    assert added["sum"] == 5
    assert added["pid"] != os.getpid()
    assert again == added["pid"]
    assert parent_of(added["pid"]) in (os.getpid(), None)


def test_process_worker_is_killed_at_the_timeout(
        proc_tasks: ModuleType, start_consumer: StartConsumer, tmp_path: Path) -> None:
    # Given a consumer with one process worker, and a task that sleeps a minute
    # past its 0.5 s timeout (it writes its pid first)
    start_consumer(proc_tasks.mq, workers=1, worker_type="process")
    marker = tmp_path / "sleeper.pid"

    # When it runs
    result = proc_tasks.sleeper(str(marker))
    error = failure(result, timeout=30)

    # Then it ends TaskTimeout and the process that ran it is gone
    assert error.error_type == "TaskTimeout"
    pid = int(marker.read_text())
    wait_for(lambda: not pid_alive(pid), timeout=5, what=f"pid {pid} to be gone")

    # ...and the next task runs in a fresh worker process
    next_pid = proc_tasks.whoami().get(timeout=30)
    assert next_pid != pid
    assert pid_alive(next_pid)


def test_worker_process_that_exits_fails_the_task_with_worker_crashed(
        proc_tasks: ModuleType, start_consumer: StartConsumer, tmp_path: Path) -> None:
    # Given a task (one retry) that calls os._exit(3) every time
    start_consumer(proc_tasks.mq, workers=1, worker_type="process")
    marker = tmp_path / "crasher.pids"

    # When it runs
    result = proc_tasks.crasher(str(marker))
    error = failure(result, timeout=30)

    # Then it was tried twice, in two processes, and failed as WorkerCrashed
    assert error.error_type == "WorkerCrashed"
    assert "exit code 3" in error.message
    pids = marker.read_text().split()
    assert len(pids) == 2 and pids[0] != pids[1]
    assert result.record.attempts == 2


def test_task_that_crashed_its_worker_process_once_succeeds_on_retry(
        proc_tasks: ModuleType, start_consumer: StartConsumer, tmp_path: Path) -> None:
    start_consumer(proc_tasks.mq, workers=1, worker_type="process")

    result = proc_tasks.crash_once(str(tmp_path / "crashed.pid"))

    assert result.get(timeout=30) == "survived"
    assert result.record.attempts == 2


def test_cli_worker_type_process_runs_tasks_in_children_killed_at_timeout(
        app_dir: Callable[[str, str], Path], spawn: Callable[..., Proc], db_path: Path) -> None:
    # Given `minique consume -k process` on a module of tasks
    root = app_dir("jobs", PROC_TASKS.format(db="queue.db"))
    consumer = spawn("-m", "minique", "consume", "jobs", "-k", "process", "-w", "1",
                     "--no-periodic")
    # (the banner is several log lines: wait for the one that names the workers)
    wait_for(lambda: "workers: 1 processes" in consumer.output(), timeout=15,
             what="a banner naming 1 worker process")
    mq = Minique(db_path)

    @mq.task(name="whoami")
    def whoami() -> int:
        raise AssertionError("runs in the consumer")

    @mq.task(name="sleeper", timeout=0.5)
    def sleeper(marker: str) -> None:
        raise AssertionError("runs in the consumer")

    # When a task runs, then one that hangs past its timeout
    child = whoami().get(timeout=30)
    assert child is not None
    error = failure(sleeper(str(root / "sleeper.pid")), timeout=30)

    # Then the first ran in a child of the consumer, and the hung child was killed
    assert child != consumer.pid
    assert error.error_type == "TaskTimeout"
    wait_for(lambda: not pid_alive(child), timeout=5, what="the hung child to be gone")
    assert int((root / "sleeper.pid").read_text()) == child


def test_per_task_cost_of_process_workers_against_threads(
        proc_tasks: ModuleType, start_consumer: StartConsumer) -> None:
    # Given 300 no-op tasks, run by one worker of each type (printed; never asserted)
    mq: Minique = proc_tasks.mq
    # The module's queue is shared with the other process-worker tests: calls
    # they left waiting (retries of crashing or hanging tasks) must not run here.
    with sqlite3.connect(mq.path) as db:
        db.execute("UPDATE jobs SET state = 'revoked' WHERE state IN ('queued', 'scheduled')")
    n = 300
    figures: dict[str, tuple[float, float]] = {}
    ran: list[Any] = []
    for kind in ("thread", "process"):
        began = time.perf_counter()
        consumer = start_consumer(mq, workers=1, worker_type=kind)
        proc_tasks.noop().get(timeout=30)  # the first task pays the start-up
        startup = time.perf_counter() - began
        per_task = []
        for _ in range(3):
            results = proc_tasks.noop.map([() for _ in range(n)])
            began = time.perf_counter()
            for result in results:
                result.get(timeout=60)
            per_task.append((time.perf_counter() - began) / n)
            ran.extend(results)
        consumer.stop(timeout=10)
        figures[kind] = (startup, statistics.median(per_task))

    # Then both ran everything; the figures are for the docs
    assert {r.status for r in ran} == {"done"}
    thread_cost, process_cost = figures["thread"][1], figures["process"][1]
    print(f"\n{n} no-op tasks, 1 worker: threads {thread_cost * 1e3:.3f} ms/task, "
          f"processes {process_cost * 1e3:.3f} ms/task "
          f"(+{(process_cost - thread_cost) * 1e3:.3f} ms/task); first task after start: "
          f"threads {figures['thread'][0] * 1e3:.0f} ms, "
          f"processes {figures['process'][0] * 1e3:.0f} ms")
