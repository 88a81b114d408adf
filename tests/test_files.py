"""The files of a queue: who may read them, who owns the wake-up folder, what happens when an
operator deletes the -wal or -shm under running processes, and files that are not minique's.

The tests with real processes run ``python -m minique consume jobs`` on the module below and
enqueue from producer subprocesses: the test process itself never keeps the database open
while they run, since a process that holds it open takes part in what is tested.
"""

from __future__ import annotations

import grp
import hashlib
import logging
import os
import socket
import sqlite3
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest
from conftest import Proc, wait_for

from minique import Minique
from minique.consumer import Consumer
from minique.errors import ConfigurationError, DatabaseError
from minique.store.wakeup import WAKE_BURST, WAKE_EVERY, Listener, Nudger

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads /proc/locks and file modes as Linux has them")

APP = """
    import os

    from minique import Minique

    mq = Minique("queue.db")


    @mq.task(name="quick")
    def quick(arg):
        fd = os.open("markers.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{arg}\\n".encode())
        finally:
            os.close(fd)
"""

# Enqueues quick(first) ... quick(first + count - 1), one process, printing each call that
# returned. With "retry", a refused call is made again until it goes through.
PRODUCER = """
    import sys
    import time

    from minique.errors import DatabaseError

    from jobs import quick

    first, count, retry = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "retry"
    for arg in range(first, first + count):
        for _ in range(400):
            try:
                quick(str(arg))
            except DatabaseError as exc:
                print(f"refused: {exc}", flush=True)
                if not retry:
                    sys.exit(3)
                time.sleep(0.05)
            else:
                print(f"returned {arg}", flush=True)
                break
"""


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture
def app(app_dir: Callable[[str, str], Path]) -> Path:
    app_dir("jobs", APP)
    return app_dir("produce", PRODUCER)


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def ran(root: Path) -> set[int]:
    path = root / "markers.txt"
    return {int(line) for line in path.read_text().split()} if path.exists() else set()


def returned(proc: Proc) -> set[int]:
    return {int(line.split()[1]) for line in proc.output().splitlines()
            if line.startswith("returned ")}


def start_consumer_process(spawn: Callable[..., Proc]) -> Proc:
    proc = spawn("-m", "minique", "consume", "jobs", "--no-periodic", "-w", "2")
    wait_for(lambda: "started on" in proc.output(), timeout=15, what="the consumer's banner")
    return proc


def produce(spawn: Callable[..., Proc], first: int, count: int, retry: bool = True) -> Proc:
    proc = spawn("produce.py", str(first), str(count), "retry" if retry else "once")
    proc.wait(120)
    return proc


def stale_socket(path: Path) -> None:
    """A socket file nobody listens on any more, as a consumer that died leaves behind."""
    with closing(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)) as sock:
        sock.bind(str(path))


# -- who may read the files (issue 9, finding 7) ------------------------------------------------


def test_a_new_database_and_the_files_beside_it_are_for_this_user_only(
        db_path: Path, umask_022: None, start_consumer: Callable[..., Consumer]) -> None:
    # Given the usual umask, under which SQLite alone creates files 0644
    mq = Minique(db_path)

    @mq.task
    def hello() -> None: ...

    # When a queue is first used, and a consumer listens for nudges
    hello()
    start_consumer(mq, workers=1)
    wake = Path(f"{db_path}-wake")
    wait_for(lambda: wake.is_dir() and list(wake.iterdir()), what="the consumer's socket")

    # Then nobody else may read the calls' arguments, nor send to the consumer
    assert mode(db_path) == 0o600
    assert mode(f"{db_path}-wal") == 0o600
    assert mode(f"{db_path}-shm") == 0o600
    assert mode(wake) == 0o700
    (sock,) = wake.iterdir()
    assert mode(sock) == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="gives a file to another group: needs root")
def test_a_database_shared_with_a_group_on_purpose_keeps_its_mode_and_its_files_follow(
        db_path: Path, umask_022: None, start_consumer: Callable[..., Consumer]) -> None:
    # Given a file made beforehand for a group, as docs/guarantees.md says
    group = next(g.gr_gid for g in grp.getgrall() if g.gr_gid != os.getegid())
    db_path.touch()
    os.chown(db_path, -1, group)
    db_path.chmod(0o660)
    mq = Minique(db_path)

    @mq.task
    def hello() -> None: ...

    # When it is used as a queue
    hello()
    start_consumer(mq, workers=1)
    wake = Path(f"{db_path}-wake")
    wait_for(lambda: wake.is_dir() and list(wake.iterdir()), what="the consumer's socket")

    # Then it keeps its mode, and the group may use the files beside it too
    assert mode(db_path) == 0o660
    assert mode(f"{db_path}-wal") == 0o660
    assert mode(f"{db_path}-shm") == 0o660
    assert mode(wake) == 0o2770
    assert wake.stat().st_gid == group
    (sock,) = wake.iterdir()
    assert mode(sock) == 0o660
    assert sock.stat().st_gid == group


def test_a_wake_folder_that_is_a_symlink_is_not_used(
        db_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        start_consumer: Callable[..., Consumer]) -> None:
    # Given another local user's folder with a socket file that no one listens on, and a
    # symbolic link to it where the wake-up folder goes (databases under /tmp)
    caplog.set_level(logging.WARNING, logger="minique")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    stale_socket(theirs / "precious.sock")
    Path(f"{db_path}-wake").symlink_to(theirs)
    mq = Minique(db_path)

    @mq.task
    def double(x: int) -> int:
        return 2 * x

    # When a producer enqueues (it nudges the sockets it finds) and a consumer starts
    double(1)
    start_consumer(mq, workers=1, poll_interval=0.05)

    # Then nothing in that folder was touched, a warning says why (once per side), and the
    # consumer finds its calls by polling
    assert (theirs / "precious.sock").exists()
    assert os.listdir(theirs) == ["precious.sock"]
    assert double(21).get(timeout=10) == 42
    warnings = [r.getMessage() for r in caplog.records if "symbolic link" in r.getMessage()]
    assert len(warnings) == 2, warnings
    assert f"{db_path}-wake" in warnings[0]


@pytest.mark.skipif(os.geteuid() != 0, reason="makes a folder of another user: needs root")
def test_a_wake_folder_of_another_user_is_not_used(
        db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Given a wake-up folder that another user made before the queue was first used
    caplog.set_level(logging.WARNING, logger="minique")
    wake = Path(f"{db_path}-wake")
    wake.mkdir(mode=0o777)
    stale_socket(wake / "theirs.sock")
    os.chown(wake, 65534, 65534)
    mq = Minique(db_path)
    mq.counts()

    # When a consumer's listener opens and a producer nudges
    listener = Listener(db_path, "c" * 32)
    opened = listener.open()
    Nudger(db_path).nudge()

    # Then neither uses it, and the log says whose it is
    assert opened is False
    assert listener.sock is None
    assert os.listdir(wake) == ["theirs.sock"]
    messages = [r.getMessage() for r in caplog.records]
    assert any("belongs to user 65534" in m for m in messages), messages


def test_a_flood_of_nudges_wakes_a_consumer_at_a_bounded_rate(
        db_path: Path, spawn: Callable[..., Proc], app_dir: Callable[[str, str], Path],
        start_consumer: Callable[..., Consumer]) -> None:
    # Given an idle consumer, whose every wake-up makes a claim
    mq = Minique(db_path)

    @mq.task
    def double(x: int) -> int:
        return 2 * x

    mq.counts()
    claims = []
    exchange = mq.store.exchange

    def counting(*args: object, **kwargs: object) -> object:
        claims.append(time.monotonic())
        return exchange(*args, **kwargs)  # type: ignore[arg-type]

    mq.store.exchange = counting  # type: ignore[assignment,method-assign]
    start_consumer(mq, workers=1, poll_interval=3600)
    wake = Path(f"{db_path}-wake")
    wait_for(lambda: wake.is_dir() and list(wake.iterdir()), what="the consumer's socket")

    # When another process of the same user sends it datagrams as fast as it can for a second
    app_dir("flood", """
        import glob, socket, sys, time
        target = glob.glob(sys.argv[1] + "/*.sock")[0]
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sent, end = 0, time.monotonic() + 1.0
        while time.monotonic() < end:
            try:
                sock.sendto(b"!", target)
                sent += 1
            except BlockingIOError:
                pass
        print("sent", sent, flush=True)
    """)
    before = len(claims)
    began = time.monotonic()
    flood = spawn("flood.py", str(wake))
    assert flood.wait(30) == 0
    elapsed = time.monotonic() - began
    during = len(claims) - before

    # Then it woke no more than the rate allows (without a limit: tens of thousands of
    # times), and still runs a call at once afterwards
    assert int(flood.output().split()[1]) > 1000
    assert during <= elapsed / WAKE_EVERY + WAKE_BURST + 50, (during, elapsed)
    assert double(21).get(timeout=10) == 42


def test_an_idle_listener_wakes_at_once_and_a_flood_only_waits_its_turn(db_path: Path) -> None:
    listener = Listener(db_path, "d" * 32)
    assert listener.open()
    try:
        nudger = Nudger(db_path)
        # An idle consumer has wake-ups in hand: a nudge wakes it without delay
        assert listener.ready_in() == 0
        nudger.nudge()
        assert listener.wait(5.0) is True

        # A burst uses them up; then the next wake-up waits at most one interval
        for _ in range(WAKE_BURST):
            nudger.nudge()
            listener.drain()
        assert 0 < listener.ready_in() <= WAKE_EVERY

        # and drain() called too soon waits for it rather than waking again at once
        nudger.nudge()
        listener.drain()
        assert listener.ready_in() > 0
    finally:
        listener.close()


# -- the operator deletes the -shm or -wal under running processes (issue 9, finding 6) ---------


def test_a_shm_deleted_under_a_running_consumer_loses_no_call(
        app: Path, db_path: Path, spawn: Callable[..., Proc]) -> None:
    # Given a consumer that has run calls, alone on the database
    consumer = start_consumer_process(spawn)
    assert returned(produce(spawn, 0, 10)) == set(range(10))
    wait_for(lambda: ran(app) == set(range(10)), timeout=15, what="the first calls to run")

    # When a cleaner deletes the -shm, and a new producer enqueues at once
    os.unlink(f"{db_path}-shm")
    producer = produce(spawn, 100, 50)

    # Then every call that returned runs (before the fix, all 50 were lost), and the
    # consumer says what happened
    assert returned(producer) == set(range(100, 150))
    wait_for(lambda: ran(app) >= set(range(100, 150)), timeout=15,
             what="the calls of the new producer to run")
    output = consumer.output()
    assert "queue.db-shm was deleted" in output
    assert "reopens it here" in output


def test_a_shm_deleted_under_two_processes_refuses_a_new_one_until_they_stop(
        app: Path, db_path: Path, spawn: Callable[..., Proc]) -> None:
    # Given two consumers sharing the database
    first, second = start_consumer_process(spawn), start_consumer_process(spawn)
    assert returned(produce(spawn, 0, 10)) == set(range(10))
    wait_for(lambda: ran(app) == set(range(10)), timeout=15, what="the first calls to run")

    # When the -shm is deleted under them
    os.unlink(f"{db_path}-shm")

    # Then a new producer is refused with the reason and what to do, instead of losing its
    # call; the two consumers go on, and each says what happened and what to do
    refused = produce(spawn, 100, 1, retry=False)
    assert refused.popen.returncode == 3
    assert "queue.db-shm was deleted" in refused.output()
    assert "Stop every process that uses" in refused.output()
    for proc in (first, second):
        wait_for(lambda proc=proc: "queue.db-shm was deleted" in proc.output(), timeout=15,
                 what="the consumer to report the deleted -shm")
        assert "stop them all, then start them again" in proc.output()

    # and once both are stopped, the queue is whole and works again
    for proc in (first, second):
        proc.signal(2)
        assert proc.wait(30) == 0
    start_consumer_process(spawn)
    assert returned(produce(spawn, 200, 10)) == set(range(200, 210))
    wait_for(lambda: ran(app) == set(range(10)) | set(range(200, 210)), timeout=15,
             what="the calls after the restart to run")


def test_a_wal_deleted_under_a_running_consumer_loses_no_call(
        app: Path, db_path: Path, spawn: Callable[..., Proc]) -> None:
    # Given a consumer that has run calls, alone on the database
    consumer = start_consumer_process(spawn)
    assert returned(produce(spawn, 0, 10)) == set(range(10))
    wait_for(lambda: ran(app) == set(range(10)), timeout=15, what="the first calls to run")

    # When the -wal is deleted, and a new producer enqueues at once
    os.unlink(f"{db_path}-wal")
    producer = produce(spawn, 100, 50)

    # Then every call that returned runs (before the fix, some were lost and the file ended
    # "not a database"), the consumer says what happened, and the file is sound
    assert returned(producer) == set(range(100, 150))
    wait_for(lambda: ran(app) >= set(range(100, 150)), timeout=15,
             what="the calls of the new producer to run")
    assert "queue.db-wal was deleted" in consumer.output()
    consumer.signal(2)
    assert consumer.wait(30) == 0
    with closing(sqlite3.connect(db_path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall() \
            == [("done", 60)]


def test_a_wal_deleted_after_a_crash_is_refused_naming_what_was_lost(
        app: Path, db_path: Path, spawn: Callable[..., Proc],
        app_dir: Callable[[str, str], Path]) -> None:
    # Given a producer killed right after its calls returned: they are only in the -wal
    app_dir("crash", """
        import os, signal
        from jobs import quick
        for arg in range(20):
            quick(str(arg))
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert spawn("crash.py").wait(60) == -9
    assert Path(f"{db_path}-wal").stat().st_size > 0

    # When someone deletes the -wal, taking it for a leftover
    os.unlink(f"{db_path}-wal")

    # Then the next process that opens the queue refuses, says what was lost and what to do
    with pytest.raises(DatabaseError) as info:
        Minique(db_path).counts()
    message = str(info.value)
    assert f"{db_path}-wal was deleted" in message
    assert "not yet copied" in message
    assert f"Put {db_path}-wal back" in message
    assert f"delete {db_path}-shm" in message

    # and doing as it says (going on without them) opens it
    os.unlink(f"{db_path}-shm")
    assert Minique(db_path).counts()["queued"] == 0


def test_a_wal_deleted_under_this_process_refuses_a_new_connection_with_the_reason(
        db_path: Path) -> None:
    # Given a process that has used the queue from one thread
    mq = Minique(db_path)

    @mq.task
    def hello() -> None: ...

    hello()

    # When the -wal is deleted and another thread of the process enqueues
    os.unlink(f"{db_path}-wal")
    errors: list[BaseException] = []

    def enqueue() -> None:
        try:
            hello()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=enqueue)
    thread.start()
    thread.join(30)

    # Then it is refused with a reason and what to do, not a bare "disk I/O error"
    (error,) = errors
    assert isinstance(error, DatabaseError)
    assert f"{db_path}-wal was deleted" in str(error)
    assert "Stop every process" in str(error)


# -- files that are not minique's (issue 9, finding 8) --------------------------------------------


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_another_applications_database_is_refused_and_left_unchanged(db_path: Path) -> None:
    with closing(sqlite3.connect(db_path)) as db, db:
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")
        db.execute("INSERT INTO users (email) VALUES ('a@example.com')")
    before = digest(db_path)

    with pytest.raises(ConfigurationError) as info:
        Minique(db_path).counts()

    assert f"{db_path} is not a minique queue" in str(info.value)
    assert "users" in str(info.value)
    assert digest(db_path) == before
    with closing(sqlite3.connect(db_path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)


def test_another_applications_database_with_a_jobs_table_is_refused(db_path: Path) -> None:
    with closing(sqlite3.connect(db_path)) as db, db:
        db.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, title TEXT)")
    before = digest(db_path)

    with pytest.raises(ConfigurationError) as info:
        Minique(db_path).counts()

    assert "is not a minique queue" in str(info.value)
    assert digest(db_path) == before


def test_a_user_version_no_minique_writes_is_a_clear_error(db_path: Path) -> None:
    mq = Minique(db_path)
    mq.counts()
    with closing(sqlite3.connect(db_path)) as db, db:
        db.execute("PRAGMA user_version = -1")

    with pytest.raises(DatabaseError) as info:
        Minique(db_path).counts()

    assert "schema version -1" in str(info.value)
    assert "user_version" in str(info.value)


def test_an_empty_file_made_beforehand_becomes_a_queue_and_keeps_its_mode(db_path: Path) -> None:
    db_path.touch()
    db_path.chmod(0o640)
    mq = Minique(db_path)

    @mq.task
    def hello() -> None: ...

    hello()

    assert mq.counts()["queued"] == 1
    assert mode(db_path) == 0o640
    assert mode(f"{db_path}-wal") == 0o640


def test_a_new_database_has_small_pages_and_one_made_with_larger_pages_keeps_them(
    tmp_path: Path,
) -> None:
    # Small pages make each commit's WAL frames small (docs/benchmarks.md);
    # a file made before, with SQLite's default pages, must go on as it is.
    new, old = tmp_path / "new.db", tmp_path / "old.db"
    with closing(sqlite3.connect(old)) as db:
        db.execute("PRAGMA page_size = 4096")
        db.execute("PRAGMA journal_mode = wal")
    for path in (new, old):
        mq = Minique(path)

        @mq.task
        def echo(text: str) -> str:
            return text

        results = echo.map(["x" * 3000, "short"])  # one spills into overflow pages
        with Consumer(mq, workers=1):
            assert [r.get(timeout=10) for r in results] == ["x" * 3000, "short"]
        mq.store.close()
    with closing(sqlite3.connect(new)) as db:
        assert db.execute("PRAGMA page_size").fetchone() == (1024,)
    with closing(sqlite3.connect(old)) as db:
        assert db.execute("PRAGMA page_size").fetchone() == (4096,)
