"""The queue on PostgreSQL: features end to end, hosts that cannot see each other, and faults.

Every test has a fresh schema (``pg_dsn``); the tests that restart their server
get a cluster of their own (``make_private_cluster``). Consumers in other
processes run ``python -m minique consume`` on a module written by ``write_app``;
their tasks append marker lines to ``markers.txt`` so that the test can tell
who ran what.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Proc, make_private_cluster, wait_for, with_params

from minique import Minique, Retry, TaskError
from minique.consumer import Consumer
from minique.errors import ConfigurationError, DatabaseError, SchemaVersionError
from minique.store import Outcome
from minique.store.schema import SCHEMA_VERSION

if os.environ.get("CI", "").lower() == "true":
    import psycopg  # CI must have it: a missing driver fails, never skips
else:
    psycopg = pytest.importorskip("psycopg")


def sql(dsn: str, statement: str, *params: object) -> list[tuple[Any, ...]]:
    """One statement on the test's schema, as another program would run it."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


# -- the features, on PostgreSQL -----------------------------------------------------------


def test_tasks_run_and_their_results_come_back(
        pg_mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    @pg_mq.task
    def add(a: int, b: int) -> int:
        return a + b

    @pg_mq.task
    def fail(message: str) -> None:
        raise ValueError(message)

    @pg_mq.task
    def echo(value: Any) -> Any:
        return value

    start_consumer(pg_mq, workers=4)
    value = {"t": (1, 2), "b": b"\x00\xff", "s": "été", "n": None}

    assert add(2, 3).get(timeout=10) == 5
    assert echo(value).get(timeout=10) == value
    with pytest.raises(TaskError) as info:
        fail("no good").get(timeout=10)
    assert (info.value.error_type, info.value.message) == ("ValueError", "no good")
    assert [r.get(timeout=20) for r in add.map([(n, n) for n in range(200)])] == [
        2 * n for n in range(200)]
    assert pg_mq.counts()["done"] == 202


def test_pickle_serializer_round_trips(pg_dsn: str,
                                       start_consumer: Callable[..., Consumer]) -> None:
    mq = Minique(pg_dsn, serializer="pickle")

    @mq.task
    def identity(value: Any) -> Any:
        return value

    start_consumer(mq, workers=1)
    assert identity({1, 2, 3}).get(timeout=10) == {1, 2, 3}


def test_retries_scheduling_and_revoking(
        pg_mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    tries: list[int] = []

    @pg_mq.task(retries=3, retry_delay=0.05, retry_backoff=1, retry_jitter=0)
    def flaky() -> int:
        tries.append(1)
        if len(tries) < 3:
            raise Retry()
        return len(tries)

    @pg_mq.task
    def later() -> str:
        return "later"

    start_consumer(pg_mq, workers=2)
    revoked = later.schedule(delay=3600)
    assert revoked.revoke() is True
    delayed = later.schedule(delay=0.3)

    assert flaky().get(timeout=10) == 3
    assert delayed.get(timeout=10) == "later"
    assert revoked.status == "revoked"
    record = pg_mq.store.read(int(delayed.id))
    assert record is not None and record.started_at is not None
    assert record.started_at >= record.eta


def test_immediate_mode_stores_the_outcome(pg_dsn: str) -> None:
    mq = Minique(pg_dsn, immediate=True)

    @mq.task(retries=1)
    def square(x: int) -> int:
        return x * x

    result = square(7)

    assert result.get() == 49
    assert Minique(pg_dsn).result(result.id).status == "done"


def test_a_producer_in_another_process_wakes_a_sleeping_consumer(pg_dsn: str) -> None:
    # Given a consumer asleep with its safety-net poll an hour away
    mq = Minique(pg_dsn)

    @mq.task(name="double")
    def double(x: int) -> int:
        return 2 * x

    consumer = mq.consumer(workers=2, poll_interval=3600)
    consumer.start()
    try:
        time.sleep(0.2)  # let the dispatcher settle into its sleep

        # When another process enqueues a call
        script = textwrap.dedent(f"""
            from minique import Minique
            mq = Minique({pg_dsn!r})
            @mq.task(name="double")
            def double(x): ...
            print(double(21).id)
        """)
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=60, check=True)

        # Then the consumer runs it: only the producer's NOTIFY could have woken it
        assert mq.result(done.stdout.strip()).get(timeout=10) == 42
    finally:
        consumer.stop(timeout=5)


def test_status_and_consumers_read_from_the_server(
        pg_mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    @pg_mq.task
    def work() -> None: ...

    work.schedule(delay=600)
    start_consumer(pg_mq, workers=1)

    assert [c.workers for c in pg_mq.consumers()] == [1]
    assert pg_mq.counts()["scheduled"] == 1
    assert str(pg_mq).startswith("<Minique postgresql://")


def test_connections_per_consumer_are_threads_that_use_the_store_plus_one_listener(
        pg_dsn: str, start_consumer: Callable[..., Consumer]) -> None:
    # The count docs/postgres.md gives: the dispatcher, the housekeeper, the
    # scheduler, and the LISTEN connection; worker threads open one only when
    # they must record the start of a suspect call.
    mq = Minique(pg_dsn)

    @mq.task
    def work() -> None: ...

    from urllib.parse import parse_qs, urlsplit

    application = parse_qs(urlsplit(pg_dsn).query)["application_name"][0]

    def connections() -> int:
        rows = sql(pg_dsn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                   application)
        return int(rows[0][0]) - 1  # this one

    before = connections()  # the producer's (this thread's)
    consumer = start_consumer(mq, workers=8)
    for result in work.map([()] * 100):
        result.get(timeout=20)
    wait_for(lambda: consumer.running, timeout=5)
    used = connections() - before
    print(f"\nconnections of a consumer with 8 workers: {used}")
    assert used <= 4


# -- periodic tasks and crashes across processes ---------------------------------------------


APP = """
    import os
    import time
    from pathlib import Path

    import minique.consumer.identity
    import minique.store.postgres

    BOOT = {boot!r}
    if BOOT:
        # Another host: another kernel boot as far as minique can tell.
        minique.consumer.identity.boot_id = lambda: BOOT
        minique.store.postgres.boot_id = lambda: BOOT

    from minique import Minique, crontab

    mq = Minique({dsn!r}, lease={lease})


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


    if {periodic!r}:
        @mq.periodic_task(crontab("* * * * * *"), name="tick")
        def tick():
            mark("tick", "-")
"""


def markers(root: Path, what: str) -> list[tuple[str, int, float]]:
    path = root / "markers.txt"
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        kind, arg, pid, at = line.split()
        if kind == what:
            found.append((arg, int(pid), float(at)))
    return found


def write_app(tmp_path: Path, module: str, dsn: str, *, boot: str = "", lease: float = 60,
              periodic: bool = False) -> None:
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(APP.format(
        dsn=dsn, boot=boot, lease=lease, periodic=periodic)))


def consume(spawn: Callable[..., Proc], module: str, *options: str) -> Proc:
    proc = spawn("-m", "minique", "consume", module, "-w", "2", *options)
    wait_for(lambda: "started on" in proc.output() or proc.popen.poll() is not None,
             timeout=20, what="the consumer's banner")
    assert "started on" in proc.output(), proc.output()
    return proc


def producer(dsn: str, lease: float = 60) -> tuple[Minique, Any]:
    mq = Minique(dsn, lease=lease)

    @mq.task(name="work")
    def work(arg: str) -> int:
        raise AssertionError("runs in the consumer")

    return mq, work


def test_two_consumers_run_every_slot_of_a_periodic_task_once(
        pg_dsn: str, tmp_path: Path, spawn: Callable[..., Proc]) -> None:
    # Given two consumer processes ("two hosts") of a module with an every-second crontab
    write_app(tmp_path, "host_a", pg_dsn, boot="boot-a", periodic=True)
    write_app(tmp_path, "host_b", pg_dsn, boot="boot-b", periodic=True)
    consumers = [consume(spawn, "host_a"), consume(spawn, "host_b")]
    first_slot = math.ceil(time.time())

    # When they run side by side for five whole slots
    def slots_run() -> set[int]:
        return {math.floor(at) for _, _, at in markers(tmp_path, "tick")}

    wait_for(lambda: set(range(first_slot, first_slot + 5)) <= slots_run(), timeout=20,
             what="five slots to run")
    for proc in consumers:
        proc.signal(signal.SIGTERM)
    for proc in consumers:
        assert proc.wait(20) == 0, proc.output()

    # Then each slot became one job, and each job ran once
    jobs = sql(pg_dsn, "SELECT id, created_at FROM jobs WHERE name = 'tick'")
    slots = Counter(math.floor(created) for _, created in jobs)
    assert max(slots.values()) == 1, sorted(slots)
    runs = markers(tmp_path, "tick")
    assert len(runs) == len(jobs)
    assert Counter(math.floor(at) for _, _, at in runs).most_common(1)[0][1] == 1


def test_a_consumer_killed_mid_task_on_this_host_is_recovered_at_once(
        pg_dsn: str, tmp_path: Path, spawn: Callable[..., Proc]) -> None:
    # Given a task running on a consumer, with a lease far longer than the test
    write_app(tmp_path, "jobs", pg_dsn, lease=300)
    mq, work = producer(pg_dsn, lease=300)
    (tmp_path / "hold").touch()
    victim = consume(spawn, "jobs")
    result = work("a")
    wait_for(lambda: markers(tmp_path, "started"), timeout=20, what="the task to start")

    # When its consumer is SIGKILLed and another one on this host runs
    victim.kill()
    (tmp_path / "hold").unlink()
    survivor = consume(spawn, "jobs")

    # Then the other consumer runs it again, knowing the first one dead (not by lease)
    assert result.get(timeout=30) == survivor.pid
    wait_for(lambda: "is gone" in survivor.output(), timeout=10, what="the survivor's log")
    assert [pid for _, pid, _ in markers(tmp_path, "started")] == [victim.pid, survivor.pid]


def test_consumers_on_other_hosts_recover_each_others_tasks_only_by_lease(
        pg_dsn: str, tmp_path: Path, spawn: Callable[..., Proc]) -> None:
    # Given a task running on a consumer of "host A", and a consumer on "host B"
    # that can see A's process table entry gone but must not trust it
    lease = 3.0
    write_app(tmp_path, "host_a", pg_dsn, boot="boot-a", lease=lease)
    write_app(tmp_path, "host_b", pg_dsn, boot="boot-b", lease=lease)
    mq, work = producer(pg_dsn, lease=lease)
    (tmp_path / "hold").touch()
    victim = consume(spawn, "host_a", "-w", "1")
    result = work("a")
    wait_for(lambda: markers(tmp_path, "started"), timeout=20, what="the task to start")
    survivor = consume(spawn, "host_b", "-w", "1")

    # When A is SIGKILLed
    victim.kill()
    killed_at = time.time()
    (tmp_path / "hold").unlink()

    # Then B runs the task again only once A's lease has run out, and says so
    assert result.get(timeout=30) == survivor.pid
    wait_for(lambda: "its lease expired" in survivor.output(), timeout=10,
             what="the survivor's log line")
    assert "that consumer is gone" not in survivor.output()
    ((_, _, rerun_at),) = [m for m in markers(tmp_path, "started") if m[1] == survivor.pid]
    print(f"\nrun again {rerun_at - killed_at:.2f} s after the kill, lease {lease} s")


# -- faults: bad URLs, timeouts, schema --------------------------------------------------------


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text, text
    return text


def test_a_server_that_cannot_be_reached_fails_at_construction_in_one_line() -> None:
    with pytest.raises(DatabaseError) as info:
        Minique("postgresql://someone:hunter2@127.0.0.1:1/nothing")

    text = one_line(info.value)
    assert "cannot connect" in text and "127.0.0.1" in text
    assert "hunter2" not in text


def test_a_wrong_password_fails_at_construction_without_showing_it(
        postgres_server: Any) -> None:
    dsn = postgres_server.dsn
    wrong = dsn.replace(":minique-test-secret@", ":not-the-Secret-42@")
    if wrong == dsn:
        pytest.skip("the session's server URL has no password to get wrong")
    try:
        psycopg.connect(wrong, connect_timeout=5).close()
    except psycopg.OperationalError:
        pass
    else:
        pytest.skip("this server does not check passwords over this connection")

    with pytest.raises(ConfigurationError) as info:
        Minique(wrong)

    text = one_line(info.value)
    assert "password" in text
    assert "not-the-Secret-42" not in text


def test_a_missing_database_and_a_malformed_url_are_configuration_errors(
        postgres_server: Any) -> None:
    missing = postgres_server.dsn.rsplit("/", 1)[0] + "/no_such_database_here"
    with pytest.raises(ConfigurationError) as info:
        Minique(missing)
    assert "no_such_database_here" in one_line(info.value)
    with pytest.raises(ConfigurationError):
        Minique("postgresql://user:pw@host:notaport/db")


def test_synchronous_other_than_normal_is_refused(pg_dsn: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Minique(pg_dsn, synchronous="full")
    assert "synchronous_commit" in one_line(info.value)


def test_the_password_never_shows_in_location_or_logs(
        pg_dsn: str, caplog: pytest.LogCaptureFixture,
        start_consumer: Callable[..., Consumer]) -> None:
    caplog.set_level(logging.DEBUG, logger="minique")
    mq = Minique(pg_dsn)

    @mq.task
    def work() -> int:
        return 1

    start_consumer(mq, workers=1)
    assert work().get(timeout=10) == 1

    assert "minique-test-secret" in pg_dsn
    assert "minique-test-secret" not in mq.store.location
    assert "minique-test-secret" not in caplog.text
    assert mq.store.location in caplog.text  # the consumer's banner names it


def test_a_blocked_statement_ends_at_the_statement_timeout(pg_dsn: str) -> None:
    mq = Minique(with_params(pg_dsn, options=pg_dsn_options(pg_dsn)
                             + " -cstatement_timeout=300"))

    @mq.task
    def work() -> None: ...

    work()
    with psycopg.connect(pg_dsn) as blocker:
        blocker.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(DatabaseError) as info:
            work()
    assert "statement_timeout" in one_line(info.value)
    work()  # and the connection goes on


def pg_dsn_options(dsn: str) -> str:
    from urllib.parse import parse_qs, urlsplit

    return parse_qs(urlsplit(dsn).query)["options"][0]


def test_sessions_get_a_statement_timeout_unless_the_url_sets_one(pg_dsn: str) -> None:
    mine = Minique(pg_dsn)
    theirs = Minique(with_params(pg_dsn, options=pg_dsn_options(pg_dsn)
                                 + " -cstatement_timeout=5min"))

    def timeout_of(mq: Minique) -> str:
        conn = mq.store._conn()  # type: ignore[attr-defined]
        return str(conn.execute("SHOW statement_timeout").fetchone()[0])

    assert timeout_of(mine) == "30s"
    assert timeout_of(theirs) == "5min"


def test_processes_starting_together_create_the_schema_once(pg_dsn: str) -> None:
    script = textwrap.dedent(f"""
        from minique import Minique
        mq = Minique({pg_dsn!r})
        print(mq.counts()["queued"])
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(6)]
    outputs = [proc.communicate(timeout=60) for proc in procs]

    assert [proc.returncode for proc in procs] == [0] * 6, outputs
    assert sql(pg_dsn, "SELECT version FROM minique_schema") == [(SCHEMA_VERSION,)]


def test_a_schema_holding_another_applications_jobs_table_is_refused(pg_dsn: str) -> None:
    sql(pg_dsn, "CREATE TABLE jobs (id serial PRIMARY KEY, title text)")

    with pytest.raises(ConfigurationError) as info:
        Minique(pg_dsn)

    assert "not minique's" in one_line(info.value)
    assert sql(pg_dsn, "SELECT count(*) FROM information_schema.columns"
                       " WHERE table_name = 'jobs' AND table_schema = current_schema()") == [(2,)]


def test_a_newer_schema_version_is_refused_naming_both(pg_dsn: str) -> None:
    Minique(pg_dsn)
    sql(pg_dsn, "UPDATE minique_schema SET version = 99")

    with pytest.raises(SchemaVersionError) as info:
        Minique(pg_dsn)

    assert "version 99" in str(info.value)
    assert f"version {SCHEMA_VERSION}" in str(info.value)


def test_a_forked_child_uses_connections_of_its_own(pg_mq: Minique) -> None:
    @pg_mq.task
    def work() -> None: ...

    work()  # the parent's connection is open
    pid = os.fork()
    if pid == 0:  # the child: enqueue, then leave at once
        try:
            work()
            code = 0
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    work()  # the parent's session was not ended by the child
    assert pg_mq.counts()["queued"] == 3


def inserts_waiting_for_a_lock(dsn: str) -> list[int]:
    rows = sql(dsn, "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND query LIKE %s", "%INSERT INTO jobs%")
    return [int(r[0]) for r in rows]


def test_an_enqueue_cut_off_by_a_lost_connection_is_stored_once(pg_mq: Minique,
                                                               pg_dsn: str) -> None:
    @pg_mq.task
    def work(n: int) -> None: ...

    work(0)
    results: list[Any] = []
    errors: list[BaseException] = []

    def enqueue() -> None:
        try:
            results.append(work(1))
        except BaseException as exc:
            errors.append(exc)

    # Given an enqueue that waits for another session's lock on the table
    with psycopg.connect(pg_dsn) as blocker:
        blocker.execute("LOCK TABLE jobs IN SHARE MODE")
        thread = threading.Thread(target=enqueue)
        thread.start()
        (first,) = wait_for(lambda: inserts_waiting_for_a_lock(pg_dsn), timeout=10,
                            what="the enqueue to wait")  # type: ignore[misc]

        # When its connection is cut while it waits (the server ended the session)
        sql(pg_dsn, "SELECT pg_terminate_backend(%s)", first)

        # Then the store reconnects, finds the call not stored, and stores it again
        wait_for(lambda: [p for p in inserts_waiting_for_a_lock(pg_dsn) if p != first],
                 timeout=20, what="the enqueue to be made again")
        blocker.rollback()
    thread.join(30)

    assert errors == [] and len(results) == 1
    assert pg_mq.counts()["queued"] == 2
    assert pg_mq.result(results[0].id).status == "queued"


# -- a server restart ----------------------------------------------------------------------------


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> Any:
    """A PostgreSQL cluster of this test's own, to restart (stopped after the test's consumers)."""
    return make_private_cluster(request)


def test_a_server_restart_mid_drain_loses_nothing(
        cluster: Any, start_consumer: Callable[..., Consumer]) -> None:
    mq = Minique(cluster.dsn())
    ran: Counter[int] = Counter()
    lock = threading.Lock()

    @mq.task
    def work(n: int) -> int:
        with lock:
            ran[n] += 1
        time.sleep(0.002)
        return n

    # Given a consumer draining a backlog
    results = work.map([(n,) for n in range(3000)])
    start_consumer(mq, workers=4)
    wait_for(lambda: sum(ran.values()) >= 300, timeout=30, what="the drain to be under way")

    # When the server restarts under it (every session ends at once)
    cluster.restart()
    during = sum(ran.values())

    # Then the producer goes on at once on a fresh connection...
    late = work.map([(n,) for n in range(3000, 3100)])
    # ...and every call is done, none lost
    values = [r.get(timeout=120) for r in [*results, *late]]
    assert values == list(range(3100))
    assert mq.counts()["done"] == 3100
    assert set(ran) == set(range(3100))
    twice = sorted(n for n, count in ran.items() if count > 1)
    print(f"\n{during} of 3000 had run at the restart; ran twice: {twice}")
    assert during < 3000  # the restart did fall mid-drain


def test_a_consumer_asleep_during_a_restart_is_woken_by_notify_again(
        cluster: Any, start_consumer: Callable[..., Consumer]) -> None:
    mq = Minique(cluster.dsn())

    @mq.task(name="double")
    def double(x: int) -> int:
        return 2 * x

    start_consumer(mq, workers=1, poll_interval=3600)
    assert double(1).get(timeout=10) == 2

    cluster.restart()
    # A producer of its own, as another process would be
    other = Minique(cluster.dsn())
    other.task(name="double")(lambda x: None)

    # Its NOTIFY reaches the consumer: its listener reconnected by itself
    def runs() -> bool:
        try:
            return mq.result(other.tasks["double"](21).id).get(timeout=2) == 42
        except Exception:
            return False

    wait_for(runs, timeout=30, what="a call enqueued after the restart to run")




def test_a_claim_whose_answer_was_lost_is_put_back_by_the_next_claim(pg_dsn: str) -> None:
    # Given jobs claimed for a consumer by a transaction whose answer never
    # reached its store (here: claimed through another store object), and a
    # store that knows its connection broke under a claim of that consumer
    mq = Minique(pg_dsn)

    @mq.task
    def work(n: int) -> None: ...

    for n in range(3):
        work(n)
    store: Any = mq.store
    (seen,) = store.claim("me", 60, time.time(), 1)
    lost = Minique(pg_dsn).store.claim("me", 60, time.time(), 2)
    store._unsure.add("me")

    # When the consumer claims again
    again = store.claim("me", 60, time.time(), 5)

    # Then the jobs it never saw were put back and claimed anew, with no attempt used;
    # the one it holds stays its own
    assert sorted(j.id for j in again) == sorted(j.id for j in lost)
    assert all(j.attempt == 1 for j in again)
    assert mq.store.finish([Outcome(seen.id, "me", 1, "done", time.time())]) == [True]
    assert not store._unsure


def test_an_outcome_sent_again_after_a_lost_answer_counts_as_written(pg_dsn: str) -> None:
    # Given an outcome whose transaction committed but whose answer was lost
    # with its connection (here: written, and the store told it may have been)
    mq = Minique(pg_dsn)

    @mq.task
    def work() -> None: ...

    work()
    store: Any = mq.store
    (job,) = store.claim("me", 60, time.time(), 1)
    outcome = Outcome(job.id, "me", job.attempt, "done", time.time(), result="1")
    assert store.finish([outcome]) == [True]
    store._maybe_written.add(job.id)

    # When the consumer sends it again, it is known written (not "taken back")
    assert store.finish([outcome]) == [True]
    # ...once: another sending is refused as any stale outcome is
    assert store.finish([outcome]) == [False]
