"""Crashes with real processes: consumers SIGKILLed or frozen mid-task, producers SIGKILLed.

Each consumer is a ``python -m minique consume jobs`` subprocess on the module
written by ``write_app``. Its tasks append a marker line (what, argument, pid,
time) to ``markers.txt`` so the test can tell who ran what and when. A task
called ``work`` blocks while the file ``hold`` exists, which is how a test
keeps it "mid-run" for as long as it needs.
"""

from __future__ import annotations

import signal
import sqlite3
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import NamedTuple

import pytest
from conftest import Proc, wait_for

from minique import Minique, Result, TaskError
from minique.task import Task

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(),
                                reason="reads process states from /proc")

APP = """
    import os
    import signal
    import time
    from pathlib import Path

    from minique import Minique

    mq = Minique("queue.db", lease={lease})


    def mark(what, arg):
        line = f"{{what}} {{arg}} {{os.getpid()}} {{time.time()!r}}\\n"
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


    @mq.task(name="quick")
    def quick(arg):
        mark("ran", arg)
        return arg


    @mq.task(name="poison", retries={retries})
    def poison(arg):
        mark("started", arg)
        os.kill(os.getpid(), signal.SIGKILL)
"""


class Marker(NamedTuple):
    what: str
    arg: str
    pid: int
    at: float


def markers(root: Path) -> list[Marker]:
    path = root / "markers.txt"
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        what, arg, pid, at = line.split()
        found.append(Marker(what, arg, int(pid), float(at)))
    return found


def seen(root: Path, what: str, arg: str, pid: int | None = None) -> list[Marker]:
    return [m for m in markers(root)
            if m.what == what and m.arg == arg and (pid is None or m.pid == pid)]


class App(NamedTuple):
    """The test's side of the queue: a producer with the same task names and options."""

    root: Path
    mq: Minique
    work: Task[[str], int]
    quick: Task[[str], str]
    poison: Task[[str], None]


@pytest.fixture
def write_app(app_dir: Callable[[str, str], Path], db_path: Path) -> Callable[..., App]:
    def write(lease: float = 60, retries: int = 0) -> App:
        root = app_dir("jobs", APP.format(lease=lease, retries=retries))
        mq = Minique(db_path, lease=lease)

        # Only the names and options matter here: the consumers run the module's functions.
        @mq.task(name="work")
        def work(arg: str) -> int:
            raise AssertionError("runs in the consumer")

        @mq.task(name="quick")
        def quick(arg: str) -> str:
            raise AssertionError("runs in the consumer")

        @mq.task(name="poison", retries=retries)
        def poison(arg: str) -> None:
            raise AssertionError("runs in the consumer")

        return App(root, mq, work, quick, poison)

    return write


def consumer(spawn: Callable[..., Proc], *options: str) -> Proc:
    return spawn("-m", "minique", "consume", "jobs", "--no-periodic", *options)


def wait_started(proc: Proc) -> None:
    wait_for(lambda: "started on" in proc.output(), timeout=15, what="the consumer's banner")


def freeze_outside_transaction(proc: Proc, db_path: Path) -> None:
    """SIGSTOP ``proc`` at a moment it holds no write lock on the database.

    A process frozen inside a write transaction would block every other
    writer, which is not the scenario under test: thaw and try again.
    """
    for _ in range(50):
        proc.signal(signal.SIGSTOP)
        wait_for(lambda: _state(proc.pid) == "T", timeout=10, what="the process to stop")
        probe = sqlite3.connect(db_path, timeout=0.2, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:
            proc.signal(signal.SIGCONT)
        finally:
            probe.close()
    raise AssertionError("the consumer held the write lock at every try")


def _state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rpartition(")")[2].split()[0]


def lease_until(db_path: Path, job_id: str) -> float:
    with sqlite3.connect(db_path) as conn:
        (value,) = conn.execute("SELECT lease_until FROM jobs WHERE id = ?", (job_id,)).fetchone()
    assert value is not None
    return float(value)


# -- a consumer SIGKILLed mid-task ---------------------------------------------------------


def test_task_of_killed_consumer_runs_on_a_consumer_started_after(
        write_app: Callable[..., App], spawn: Callable[..., Proc]) -> None:
    # Given a consumer running a task that blocks
    app = write_app()
    hold = app.root / "hold"
    hold.touch()
    first = consumer(spawn, "-w", "2")
    result = app.work("x")
    wait_for(lambda: seen(app.root, "started", "x", first.pid), timeout=15,
             what="the task to start on the first consumer")

    # When that consumer is SIGKILLed and another one starts
    first.kill()
    hold.unlink()
    second = consumer(spawn, "-w", "2")

    # Then the second one runs the task to completion, well inside the 60 s lease
    assert result.get(timeout=15) == second.pid
    assert result.status == "done"
    assert [m.pid for m in seen(app.root, "finished", "x")] == [second.pid]
    assert result.record.attempts == 2
    wait_for(lambda: "is gone; took back 1 task(s)" in second.output(), timeout=10,
             what="the second consumer to report what it took back")


def test_task_of_killed_consumer_runs_on_a_consumer_already_running(
        write_app: Callable[..., App], spawn: Callable[..., Proc]) -> None:
    # Given two consumers, one of them running a task that blocks
    app = write_app()
    hold = app.root / "hold"
    hold.touch()
    first = consumer(spawn, "-w", "2")
    result = app.work("x")
    wait_for(lambda: seen(app.root, "started", "x", first.pid), timeout=15,
             what="the task to start on the first consumer")
    second = consumer(spawn, "-w", "2")
    wait_started(second)

    # When the one running the task is SIGKILLed
    first.kill()
    hold.unlink()

    # Then the live one notices it is dead and runs the task, well inside the lease
    assert result.get(timeout=15) == second.pid
    assert [m.pid for m in seen(app.root, "finished", "x")] == [second.pid]
    assert result.record.attempts == 2


def test_tasks_finished_before_the_kill_do_not_run_again(
        write_app: Callable[..., App], spawn: Callable[..., Proc]) -> None:
    # Given a consumer that finished many tasks while one more task blocks on it
    app = write_app()
    hold = app.root / "hold"
    hold.touch()
    first = consumer(spawn, "-w", "2")
    before = app.quick.map([f"a{i}" for i in range(30)])
    wait_for(lambda: all(r.status == "done" for r in before), timeout=15,
             what="the first batch to be done")
    blocked = app.work("x")
    wait_for(lambda: seen(app.root, "started", "x", first.pid), timeout=15,
             what="the blocking task to start")
    during = app.quick.map([f"b{i}" for i in range(30)])
    wait_for(lambda: all(r.status == "done" for r in during), timeout=15,
             what="the second batch to be done beside the blocking task")

    # When the consumer is SIGKILLed and another one drains the queue
    first.kill()
    hold.unlink()
    second = consumer(spawn, "-w", "2")
    assert blocked.get(timeout=15) == second.pid

    # Then every task that had finished ran exactly once
    ran = Counter(m.arg for m in markers(app.root) if m.what == "ran")
    assert ran == Counter({f"{batch}{i}": 1 for batch in "ab" for i in range(30)})
    assert app.mq.counts()["done"] == 61


def died_or_failed(proc: Proc, result: Result[None]) -> bool:
    return proc.popen.poll() is not None or result.status == "failed"


@pytest.mark.parametrize(("retries", "runs"), [(0, 2), (2, 3)])
def test_task_that_kills_its_consumer_every_time_ends_failed(
        write_app: Callable[..., App], spawn: Callable[..., Proc], retries: int,
        runs: int) -> None:
    # Given a task that SIGKILLs whichever consumer runs it
    app = write_app(retries=retries)
    result = app.poison("p")

    # When a new consumer is started each time the last one dies (a supervisor's job)
    consumers: list[Proc] = []
    for _ in range(runs + 3):
        if result.status == "failed":
            break
        proc = consumer(spawn, "-w", "1")
        consumers.append(proc)
        wait_for(partial(died_or_failed, proc, result), timeout=15,
                 what="the consumer to die or the task to fail")

    # Then the task ends failed as WorkerLost after max(retries + 1, 2) runs, not in a loop
    assert result.status == "failed"
    with pytest.raises(TaskError) as info:
        result.get(timeout=1)
    assert info.value.error_type == "WorkerLost"
    assert len(seen(app.root, "started", "p")) == runs
    assert [p.popen.returncode for p in consumers[:-1]] == [-signal.SIGKILL] * runs
    survivor = consumers[-1]
    assert survivor.popen.poll() is None
    wait_for(lambda: "no attempts left: failed" in survivor.output(), timeout=10,
             what="the surviving consumer to report the failure")


# -- a consumer that cannot be proven dead -------------------------------------------------


def freeze_the_first_of_two(app: App, spawn: Callable[..., Proc],
                            db_path: Path) -> tuple[Proc, Proc, Result[int]]:
    """Two consumers; the first runs ``work("x")`` (blocked on the hold file) and is frozen.

    Frozen, it is alive (so not provably dead) and stops renewing its lease.
    The hold file stays: the test removes it when the task may end.
    """
    (app.root / "hold").touch()
    first = consumer(spawn, "-w", "1")
    result = app.work("x")
    wait_for(lambda: seen(app.root, "started", "x", first.pid), timeout=15,
             what="the task to start on the first consumer")
    second = consumer(spawn, "-w", "1")
    wait_started(second)
    freeze_outside_transaction(first, db_path)
    return first, second, result


def test_frozen_consumer_task_is_taken_back_only_when_its_lease_expires(
        write_app: Callable[..., App], spawn: Callable[..., Proc], db_path: Path) -> None:
    # Given two consumers with a 3 s lease, the first running a task that blocks (a lease
    # long beside the 1 s dead-consumer check, so that taking it back early would show)
    app = write_app(lease=3)

    # When the first is frozen (alive, so not provably dead) and stops renewing its lease
    first, second, result = freeze_the_first_of_two(app, spawn, db_path)
    expiry = lease_until(db_path, result.id)
    (app.root / "hold").unlink()

    # Then the second takes the task back only after the lease has run out
    assert result.get(timeout=15) == second.pid
    (taken_back,) = seen(app.root, "started", "x", second.pid)
    assert taken_back.at > expiry
    assert result.record.attempts == 2
    assert "is gone; took back" not in second.output()


def test_stale_attempt_of_a_thawed_consumer_is_ignored(
        write_app: Callable[..., App], spawn: Callable[..., Proc], db_path: Path) -> None:
    # Given a task taken back from a frozen consumer and completed by another one
    app = write_app(lease=1)
    first, second, result = freeze_the_first_of_two(app, spawn, db_path)
    (app.root / "hold").unlink()
    assert result.get(timeout=15) == second.pid

    # When the frozen consumer wakes up and its stale attempt finishes
    first.signal(signal.SIGCONT)
    wait_for(lambda: seen(app.root, "finished", "x", first.pid), timeout=15,
             what="the stale attempt to finish")
    wait_for(lambda: "ignored, the task had been taken back" in first.output(), timeout=15,
             what="the first consumer to drop its stale outcome")

    # Then the row keeps the second consumer's result
    assert result.status == "done"
    assert result.get(timeout=1) == second.pid
    assert result.record.attempts == 2


# -- a producer SIGKILLed --------------------------------------------------------------------


PRODUCER = """
    import os
    import signal

    from jobs import work

    result = work("durable")
    print(result.id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_call_survives_its_producer_being_killed_right_after_it_returned(
        write_app: Callable[..., App], app_dir: Callable[[str, str], Path],
        spawn: Callable[..., Proc]) -> None:
    # Given a producer that is SIGKILLed right after a task call returned its Result
    app = write_app()
    app_dir("produce", PRODUCER)
    producer = spawn("produce.py")
    assert producer.wait(15) == -signal.SIGKILL
    (task_id,) = producer.output().split()

    # When a consumer starts afterwards
    result = app.mq.result(task_id)
    assert result.status == "queued"
    worker = consumer(spawn, "-w", "1")

    # Then the call was stored and runs
    assert result.get(timeout=15) == worker.pid
    assert [m.pid for m in seen(app.root, "finished", "durable")] == [worker.pid]

