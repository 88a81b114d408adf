"""An attempt counts only once it has started, and a completed attempt is never lost.

Store-level stories on a real file, then real consumer processes: calls claimed
ahead by a consumer that dies, a step of the wall clock, a task that holds the
GIL past its lease, process workers at the end of the grace period, and rows
written around minique's checks.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Proc, wait_for

from minique import Minique, TaskError
from minique.consumer import Consumer
from minique.store import FINISHED, Outcome

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(),
                                reason="reads process states from /proc")


def sql(db_path: Path, statement: str, *params: object) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        return conn.execute(statement, params).fetchall()
    finally:
        conn.close()


@pytest.fixture
def work(mq: Minique) -> Callable[..., object]:
    @mq.task(name="work")
    def work(n: int = 0) -> int:
        return n

    return work


# -- the store: claims, starts, reaping ----------------------------------------------------


def test_calls_claimed_ahead_and_never_started_lose_no_attempt(
        mq: Minique, work: Callable[..., object]) -> None:
    # Given five calls, claimed by a consumer with one free worker (four ahead)
    results = [work(n) for n in range(5)]
    claimed = mq.store.claim("dead", lease=-1.0, now=time.time(), limit=5, start_now=1)
    assert [job.counted for job in claimed] == [True, False, False, False, False]

    # When that consumer's lease runs out
    reaped = mq.store.reap_expired(time.time())

    # Then only the call that started used an attempt; the others are queued as new
    attempts = {str(job_id): n for job_id, n in sql(mq.path, "SELECT id, attempts FROM jobs")}
    assert [attempts[r.id] for r in results] == [1, 0, 0, 0, 0]
    assert [r.status for r in results] == ["queued"] * 5
    assert sorted(job.started for job in reaped) == [False] * 4 + [True]


def test_a_start_recorded_by_renewal_counts_the_attempt(
        mq: Minique, work: Callable[..., object]) -> None:
    # Given a call claimed ahead that then started
    result = work()
    (job,) = mq.store.claim("me", lease=60, now=time.time(), limit=1, start_now=0)
    assert not job.counted

    # When the consumer renews its lease, recording the start
    mq.store.renew("me", 60, time.time(), [(job.id, job.attempt, time.time())])

    # Then the attempt counts, and the outcome of that attempt is still written
    assert result.record.attempts == 1
    assert mq.store.finish([Outcome(job.id, "me", job.attempt, "done", time.time(),
                                    result="1")]) == [True]
    assert result.get(timeout=1) == 1
    assert result.record.attempts == 1


def test_a_call_lost_before_its_start_was_recorded_records_it_before_running_again(
        mq: Minique, work: Callable[..., object]) -> None:
    # Given a call claimed ahead by a consumer that died (it may have started)
    result = work()
    mq.store.claim("dead", lease=-1.0, now=time.time(), limit=1, start_now=0)
    mq.store.reap_expired(time.time())

    # When another consumer claims it ahead
    (job,) = mq.store.claim("me", lease=60, now=time.time(), limit=1, start_now=0)

    # Then it is suspect: its start must be recorded first, which counts the attempt
    assert job.suspect and not job.counted
    assert mq.store.record_start("me", job.id, job.attempt, time.time()) == ([], True)
    assert result.record.attempts == 1
    assert mq.store.record_start("other", job.id, job.attempt, time.time()) == ([], False)


def test_a_lease_held_on_this_boot_is_read_on_the_monotonic_clock(
        mq: Minique, work: Callable[..., object]) -> None:
    # Given a running call whose lease, on the wall clock, ended an hour ago
    # (the wall clock stepped forward, as NTP or a resumed VM do)
    result = work()
    mq.store.claim("other", lease=60, now=time.time(), limit=1)
    sql(mq.path, "UPDATE jobs SET lease_until = ?", time.time() - 3600)

    # When a consumer on this boot looks for expired leases
    reaped = mq.store.reap_expired(time.time())

    # Then nothing is taken back: the lease has a minute to go on the monotonic clock
    assert reaped == []
    assert result.status == "running"

    # ...while a lease held on another boot (another host) is read on the wall clock
    sql(mq.path, "UPDATE jobs SET lease_boot = 'another-boot'")
    assert [str(job.id) for job in mq.store.reap_expired(time.time())] == [result.id]


def test_a_consumer_never_reaps_its_own_calls(
        mq: Minique, work: Callable[..., object]) -> None:
    result = work()
    mq.store.claim("me", lease=-1.0, now=time.time(), limit=1)

    assert mq.store.reap_expired(time.time(), mine=("me",)) == []
    assert result.status == "running"


def test_an_attempt_that_completed_after_its_lease_was_taken_back_is_kept(
        mq: Minique, work: Callable[..., object]) -> None:
    # Given a call taken back twice, out of attempts (failed WorkerLost)...
    failed = work(2)
    for attempt in (1, 2):
        (job,) = mq.store.claim(f"slow{attempt}", lease=-1.0, now=time.time(), limit=1)
        mq.store.reap_expired(time.time())
    assert failed.status == "failed"
    # ...and one whose lease ran out and was taken back (queued again)
    requeued = work(1)
    (first,) = mq.store.claim("slow", lease=-1.0, now=time.time(), limit=1)
    mq.store.reap_expired(time.time())

    # When the slow attempts finish after all
    written = mq.store.finish([
        Outcome(first.id, "slow", 1, "done", time.time(), result="1"),
        Outcome(job.id, "slow2", 2, "done", time.time(), result="2"),
    ])

    # Then their results stand: the calls are done and will not run again
    assert written == [True, True]
    assert requeued.get(timeout=1) == 1
    assert failed.get(timeout=1) == 2


def test_a_late_attempt_that_completed_first_wins_over_one_running_elsewhere(
        mq: Minique, work: Callable[..., object]) -> None:
    # Given a call taken back from a frozen consumer and running on another
    result = work(1)
    (stale,) = mq.store.claim("frozen", lease=-1.0, now=time.time(), limit=1)
    mq.store.reap_expired(time.time())
    (rerun,) = mq.store.claim("alive", lease=60, now=time.time(), limit=1)

    # When the frozen one's attempt completes first, then the other's
    first = mq.store.finish([Outcome(stale.id, "frozen", 1, "done", time.time(), result="1")])
    second = mq.store.finish([Outcome(rerun.id, "alive", 2, "done", time.time(), result="2")])

    # Then the first completion is the call's result; the second is ignored
    assert (first, second) == ([True], [False])
    assert result.get(timeout=1) == 1


def test_a_late_failure_does_not_overwrite_a_call_taken_back(
        mq: Minique, work: Callable[..., object]) -> None:
    result = work(1)
    (stale,) = mq.store.claim("frozen", lease=-1.0, now=time.time(), limit=1)
    mq.store.reap_expired(time.time())

    written = mq.store.finish([Outcome(stale.id, "frozen", 1, "failed", time.time(),
                                       error_type="ValueError", error_message="late")])

    assert written == [False]
    assert result.status == "queued"


# -- rows written around minique's checks --------------------------------------------------


def test_a_corrupt_row_fails_with_its_reason_and_the_consumer_goes_on(
        mq: Minique, work: Callable[..., object],
        start_consumer: Callable[..., Consumer]) -> None:
    # Given a call whose priority was written as text by hand, before good calls
    bad = work(0)
    sql(mq.path, "UPDATE jobs SET priority = 'high' WHERE id = ?", bad.id)

    # When a consumer runs
    start_consumer(mq, workers=2)
    good = [work(n) for n in range(1, 4)]

    # Then the bad call fails, saying why, and every later call runs
    assert [r.get(timeout=10) for r in good] == [1, 2, 3]
    with pytest.raises(TaskError) as info:
        bad.get(timeout=10)
    assert info.value.error_type == "CorruptJob"
    assert "'high' is not an integer" in info.value.message


class _RaiseOnce(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.raised = False

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.raised and "done in" in record.getMessage():
            self.raised = True
            raise RuntimeError("a log filter with a bug")
        return True


@pytest.fixture
def buggy_log_filter() -> Iterator[_RaiseOnce]:
    logger = logging.getLogger("minique")
    bug = _RaiseOnce()
    logger.addFilter(bug)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield bug
    logger.removeFilter(bug)
    logger.setLevel(level)


@pytest.mark.parametrize("workers", [1, 4])
def test_an_unexpected_error_does_not_leave_the_consumer_idle(
        mq: Minique, work: Callable[..., object], start_consumer: Callable[..., Consumer],
        buggy_log_filter: _RaiseOnce, workers: int) -> None:
    # Given a consumer whose dispatcher meets an error it did not expect
    consumer = start_consumer(mq, workers=workers)
    first = work(1)
    assert first.get(timeout=10) == 1
    wait_for(lambda: buggy_log_filter.raised, what="the log filter to raise")

    # When more calls come
    later = [work(n) for n in range(2, 6)]

    # Then they run: the dispatcher logged the error and went on
    assert [r.get(timeout=10) for r in later] == [2, 3, 4, 5]
    assert consumer.running and not consumer.failed


# -- real consumer processes ---------------------------------------------------------------


APP = """
    import ctypes
    import os
    import signal
    import subprocess
    import time
    from pathlib import Path

    from minique import Minique

    mq = Minique("queue.db", lease={lease})


    def mark(what, arg):
        line = f"{{what}} {{arg}} {{os.getpid()}}\\n"
        fd = os.open("markers.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


    @mq.task(name="quick")
    def quick(arg):
        mark("ran", arg)
        return arg


    @mq.task(name="poison")
    def poison(arg):
        mark("started", arg)
        os.kill(os.getpid(), signal.SIGKILL)


    @mq.task(name="hold_gil")
    def hold_gil(arg, seconds):
        mark("started", arg)
        # libc's sleep through PyDLL keeps the GIL: no other thread of this
        # process runs, as in a long C call that does not release it
        ctypes.PyDLL(None).sleep(seconds)
        mark("finished", arg)
        return arg


    @mq.task(name="slow")
    def slow(arg):
        mark("started", arg)
        while not Path("release").exists():
            time.sleep(0.01)
        mark("finished", arg)
        return arg


    @mq.task(name="terminate")
    def terminate(how):
        if how == "exec":
            program = subprocess.Popen(["sleep", "30"])
            program.terminate()
            return program.wait(10)
        import multiprocessing

        # "fork, own handler": the task's own handler, which the fork keeps
        own = signal.signal(signal.SIGTERM, lambda *_: os._exit(7)) if how != "fork" else None
        try:
            forked = multiprocessing.get_context("fork").Process(target=time.sleep, args=(30,))
            forked.start()
            forked.terminate()
            forked.join(10)
            return forked.exitcode
        finally:
            if own is not None:
                signal.signal(signal.SIGTERM, own)
"""


def marks(root: Path, what: str, arg: str) -> list[int]:
    path = root / "markers.txt"
    if not path.exists():
        return []
    return [int(pid) for w, a, pid in (line.split() for line in path.read_text().splitlines())
            if w == what and a == arg]


@pytest.fixture
def app(app_dir: Callable[[str, str], Path], db_path: Path) -> Callable[..., Minique]:
    """Write the module ``jobs`` with this lease; return a producer with the same task names."""

    def write(lease: float = 60) -> Minique:
        app_dir("jobs", APP.format(lease=lease))
        mq = Minique(db_path, lease=lease)
        for name in ("quick", "poison", "hold_gil", "slow", "terminate"):
            mq.task(name=name)(_runs_in_the_consumer)
        return mq

    return write


def _runs_in_the_consumer(*args: object) -> None:
    raise AssertionError("runs in the consumer")


def consume(spawn: Callable[..., Proc], *options: str) -> Proc:
    return spawn("-m", "minique", "consume", "jobs", "--no-periodic", *options)


def test_calls_claimed_ahead_by_a_killed_consumer_all_run(
        app: Callable[..., Minique], spawn: Callable[..., Proc], tmp_path: Path) -> None:
    # Given 300 short calls with two calls among them that kill their consumer
    mq = app()
    quick, poison = mq.tasks["quick"], mq.tasks["poison"]
    calls = quick.map([f"q{n}" for n in range(100)])
    killers = [poison("p1")]
    calls += quick.map([f"q{n}" for n in range(100, 200)])
    killers.append(poison("p2"))
    calls += quick.map([f"q{n}" for n in range(200, 300)])

    # When one-worker consumers (claiming short calls ahead) are restarted as each dies
    for _ in range(12):
        if all(r.status in FINISHED for r in calls + killers):
            break
        proc = consume(spawn, "-w", "1")
        wait_for(lambda proc=proc: proc.popen.poll() is not None  # type: ignore[misc]
                 or all(r.status in FINISHED for r in calls + killers),
                 timeout=30, what="the consumer to die or every call to finish")

    # Then every short call is done (none failed for attempts it never used)...
    assert [r.status for r in calls] == ["done"] * len(calls)
    # ...and each killer ended failed after its attempts, not in a loop
    for killer, arg in zip(killers, ("p1", "p2"), strict=True):
        with pytest.raises(TaskError) as info:
            killer.get(timeout=1)
        assert info.value.error_type == "WorkerLost"
        assert 2 <= len(marks(tmp_path, "started", arg)) <= 3


@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_a_task_holding_the_gil_past_its_lease_ends_done(
        app: Callable[..., Minique], spawn: Callable[..., Proc], tmp_path: Path,
        worker_type: str) -> None:
    # Given two consumers with a 1 s lease, and a task that holds the GIL for 3 s
    mq = app(lease=1)
    first = consume(spawn, "-w", "1", "-k", worker_type)
    wait_for(lambda: "started on" in first.output(), timeout=15, what="the first banner")
    result = mq.tasks["hold_gil"]("g", 3)
    wait_for(lambda: marks(tmp_path, "started", "g"), timeout=15, what="the task to start")
    second = consume(spawn, "-w", "1", "-k", worker_type)

    # When it completes
    assert result.get(timeout=30) == "g"
    wait_for(lambda: len(marks(tmp_path, "finished", "g")) == len(marks(tmp_path, "started", "g")),
             timeout=30, what="every run of it to finish")

    # Then it is done. A thread worker could not renew its lease, so another
    # consumer may have run it again; a process worker's parent kept renewing
    assert result.status == "done"
    if worker_type == "process":
        assert len(marks(tmp_path, "started", "g")) == 1
    assert first.popen.poll() is None and second.popen.poll() is None


def test_process_worker_task_running_past_the_grace_period_is_put_back(
        app: Callable[..., Minique], spawn: Callable[..., Proc], tmp_path: Path) -> None:
    mq = app()
    for round_ in range(3):
        # Given a process worker running a task that will not end by itself
        proc = consume(spawn, "-w", "1", "-k", "process", "--grace", "0.2")
        result = mq.tasks["slow"](f"s{round_}")
        wait_for(lambda r=round_: marks(tmp_path, "started", f"s{r}"),  # type: ignore[misc]
                 timeout=30, what="the task to start")

        # When the consumer is told to stop and the grace period ends
        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 0

        # Then the task is back in the queue, with no attempt used
        assert result.status == "queued"
        assert result.record.attempts == 0
        assert "put back 1 task" in proc.output()
        result.revoke()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_the_whole_group_puts_a_process_workers_task_back(
        app: Callable[..., Minique], spawn: Callable[..., Proc], tmp_path: Path,
        signum: int) -> None:
    # Given a process worker running a task that will not end by itself
    mq = app()
    proc = consume(spawn, "-w", "1", "-k", "process", "--grace", "0.2")
    result = mq.tasks["slow"]("s")
    wait_for(lambda: marks(tmp_path, "started", "s"), timeout=30, what="the task to start")

    # When the signal reaches the consumer and its worker process at once, as
    # systemd's SIGTERM to the service's group or a Ctrl-C in a terminal does
    children = proc.children()
    assert children, "the consumer has no worker process"
    for pid in [*children, proc.pid]:  # the children first: the consumer may kill them soon
        os.kill(pid, signum)
    assert proc.wait(30) == 0

    # Then the consumer stopped after its grace period and put the task back,
    # with no attempt used, instead of failing it as crashed or interrupted
    assert result.status == "queued"
    assert result.record.attempts == 0
    assert "put back 1 task" in proc.output()


def test_every_worker_process_is_ready_before_the_first_claim(
        app: Callable[..., Minique], spawn: Callable[..., Proc]) -> None:
    # Given a consumer with three process workers, and nothing queued
    app()
    proc = consume(spawn, "-w", "3", "-k", "process")

    # When it has started (its banner comes before its first claim)
    wait_for(lambda: "started on" in proc.output(), timeout=30, what="the banner")

    # Then its three worker processes are already running: a call claimed for
    # a free worker (its attempt counted at once) starts without waiting for one
    assert len(proc.children()) == 3


@pytest.mark.parametrize(("how", "exit_code"), [("exec", -signal.SIGTERM),
                                                ("fork", -signal.SIGTERM),
                                                ("fork, own handler", 7)])
def test_a_process_workers_task_can_stop_the_programs_it_starts(
        app: Callable[..., Minique], spawn: Callable[..., Proc], how: str,
        exit_code: int) -> None:
    # Given a consumer with process workers, which stop on the consumer's
    # word rather than on SIGTERM
    mq = app()
    consume(spawn, "-w", "1", "-k", "process")

    # When a task starts a program, or forks a process, and sends it SIGTERM
    # Then it ends of it: it did not inherit its worker's indifference (and a
    # handler the task set itself is the forked process's, as usual)
    assert mq.tasks["terminate"](how).get(timeout=30) == exit_code


@pytest.mark.parametrize("task", ["slow", "hold_gil"])
def test_a_process_workers_attempt_ends_when_its_consumer_is_killed(
        app: Callable[..., Minique], spawn: Callable[..., Proc], tmp_path: Path,
        task: str) -> None:
    # Given a process worker running a task that will not end by itself: a
    # Python loop, or a C call that holds the GIL for a minute
    mq = app()
    proc = consume(spawn, "-w", "1", "-k", "process")
    mq.tasks[task]("s", *([60] if task == "hold_gil" else []))
    wait_for(lambda: marks(tmp_path, "started", "s"), timeout=30, what="the task to start")
    [child] = proc.children()
    try:
        # When the consumer is SIGKILLed, so that it cannot kill its worker process
        proc.kill()

        # Then the worker process ends at once, rather than run on while
        # another consumer runs the call again
        wait_for(lambda: not _alive(child), timeout=10, what="the worker process to end")
        assert marks(tmp_path, "finished", "s") == []
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie that nobody reaped yet has ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


# -- a step of the wall clock ---------------------------------------------------------------


def test_a_forward_step_of_the_wall_clock_does_not_run_a_task_twice(
        mq: Minique, start_consumer: Callable[..., Consumer],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a consumer running a task that blocks, under the default 60 s lease
    import threading

    started: list[int] = []
    release = threading.Event()

    @mq.task(name="blocks")
    def blocks() -> str:
        started.append(1)
        release.wait(30)
        return "ok"

    consumer = start_consumer(mq, workers=2)
    result = blocks()
    wait_for(lambda: started, what="the task to start")
    looked = threading.Event()
    reap = mq.store.reap_expired

    def reap_and_tell(now: float, mine: tuple[str, ...] = ()) -> object:
        found = reap(now, mine)
        looked.set()
        return found

    mq.store.reap_expired = reap_and_tell  # type: ignore[method-assign]

    # When the wall clock steps two hours forward (NTP, a resumed VM)
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 7200)
    looked.clear()
    assert looked.wait(10), "the consumer did not look for expired leases"
    looked.clear()
    assert looked.wait(10), "the consumer did not look for expired leases again"

    # Then the task was not taken back from its own consumer, nor started again
    assert result.status == "running"
    assert result.record.attempts == 1
    release.set()
    assert result.get(timeout=10) == "ok"
    assert len(started) == 1
    assert consumer.running


def test_a_dispatcher_that_keeps_failing_stops_the_consumer_which_run_reports(
        mq: Minique, work: Callable[..., object], monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a store whose change counter fails every time (a bug, say), so the
    # dispatcher cannot get through a single loop
    import threading

    from minique.consumer import dispatcher
    from minique.errors import ConsumerFailed

    monkeypatch.setattr(dispatcher, "GIVES_UP_AFTER", 3)

    def broken() -> int:
        raise RuntimeError("a bug in the poll")

    mq.store.changes = broken  # type: ignore[method-assign]
    consumer = mq.consumer(workers=2, poll_interval=0.01)

    # When the consumer runs
    raised: list[BaseException] = []

    def run() -> None:
        try:
            consumer.run()
        except BaseException as exc:
            raised.append(exc)

    runner = threading.Thread(target=run)
    runner.start()
    runner.join(30)

    # Then it stopped by itself instead of staying alive and idle, and run() says why
    assert not runner.is_alive()
    assert [type(e) for e in raised] == [ConsumerFailed]
    assert "a bug in the poll" in str(raised[0])
    assert consumer.failed and not consumer.running
