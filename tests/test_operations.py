"""Operating the queue from Python: find calls, read their history, retry, purge, pause.

Every test runs on a real SQLite file and on a fresh PostgreSQL schema (the
``pg_dsn`` fixture of conftest.py; skipped without a server, outside CI), with
real consumer threads where a consumer matters; the schema tests are SQLite's.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for

from minique import Job, JobAttempt, Minique, Retry, TaskError
from minique.consumer import Consumer
from minique.store import Outcome
from minique.store.models import SCHEMA_VERSION

Raw = Callable[..., list[tuple[Any, ...]]]


@pytest.fixture
def mq(location: str) -> Minique:
    """A queue on a fresh database of each engine."""
    return Minique(location)


@pytest.fixture
def sqlite_only(location: str) -> None:
    if location.startswith("postgres"):
        pytest.skip("about the SQLite file itself")


@pytest.fixture
def raw(location: str) -> Raw:
    """Run one statement on the data directly, as another program would (``?`` placeholders)."""

    def run(statement: str, *params: object) -> list[tuple[Any, ...]]:
        if location.startswith("postgres"):
            import psycopg

            with psycopg.connect(location, autocommit=True) as conn:
                cur = conn.execute(statement.replace("?", "%s"), params)
                return cur.fetchall() if cur.description else []
        return sql(Path(location), statement, params)

    return run


def sql(db_path: Path, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on the SQLite file directly, as another program would, and commit."""
    with closing(sqlite3.connect(db_path)) as db, db:
        return db.execute(statement, params).fetchall()


def producer_task(location: str, **options: Any) -> Any:
    """The task ``fine`` of another ``Minique`` on the data: another producer's connection."""
    producer = Minique(location, **options)

    @producer.task(name="fine")
    def fine(*args: Any) -> None: ...

    return fine


def outcomes(job: Job) -> list[tuple[int, str]]:
    return [(a.number, a.outcome) for a in job.history]


@pytest.fixture
def flaky(mq: Minique) -> Iterator[dict[str, Any]]:
    """A task ``flaky(x)`` that fails while ``state["fail"]`` and then returns ``x * 2``."""
    state: dict[str, Any] = {"fail": True}

    @mq.task(name="flaky", retries=1, retry_delay=0)
    def flaky(x: int) -> int:
        if state["fail"]:
            raise ValueError(f"down for {x}")
        return x * 2

    state["task"] = flaky
    yield state


# -- reading: mq.job and mq.jobs ---------------------------------------------------------------


def test_job_of_a_done_call_has_every_field(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    @mq.task(name="add", queue="maths", priority=3)
    def add(a: int, b: int = 0) -> int:
        return a + b

    before = dt.datetime.now(dt.UTC)
    result = add(2, b=3)
    consumer = start_consumer(mq)
    assert result.get(timeout=10) == 5

    job = mq.job(result.id)

    assert isinstance(job, Job)
    assert (job.id, job.task, job.queue, job.priority, job.status) == (
        result.id, "add", "maths", 3, "done")
    assert (job.args, job.kwargs, job.result) == ((2,), {"b": 3}, 5)
    assert job.enqueued_at.tzinfo is dt.UTC and before <= job.enqueued_at
    assert job.eta == job.enqueued_at
    assert job.started_at is not None and job.finished_at is not None
    assert job.enqueued_at <= job.started_at <= job.finished_at
    assert (job.attempts, job.max_attempts, job.error, job.consumer) == (1, 1, None, None)
    assert (job.key, job.progress, job.expires, job.unreadable) == (None, None, None, None)
    assert job.history == [JobAttempt(1, job.started_at, job.finished_at, "done", None,
                                      consumer.id)]


def test_job_is_read_only(mq: Minique) -> None:
    @mq.task(name="noop")
    def noop() -> None: ...

    job = mq.job(noop().id)

    with pytest.raises(AttributeError):
        job.status = "done"  # type: ignore[misc]


def test_job_of_an_unknown_or_malformed_id_raises_lookup_error(mq: Minique) -> None:
    mq.counts()

    with pytest.raises(LookupError, match="no call with id 12345"):
        mq.job("12345")
    with pytest.raises(LookupError, match="not a minique call id"):
        mq.job("abc")


def test_jobs_are_newest_first_and_filter_by_status_queue_and_task(mq: Minique) -> None:
    @mq.task(name="a", queue="q1")
    def a() -> None: ...

    @mq.task(name="b", queue="q2")
    def b() -> None: ...

    first, second, third = a(), b(), a()
    assert mq.result(second.id).revoke()

    assert [j.id for j in mq.jobs()] == [third.id, second.id, first.id]
    assert [j.id for j in mq.jobs(limit=2)] == [third.id, second.id]
    assert [j.id for j in mq.jobs(status="queued")] == [third.id, first.id]
    assert [j.id for j in mq.jobs(status=["revoked", "done"])] == [second.id]
    assert [j.id for j in mq.jobs(queue="q2")] == [second.id]
    assert [j.id for j in mq.jobs(queue=["q1", "q2"], task=["a"])] == [third.id, first.id]
    assert [j.id for j in mq.jobs(task=a)] == [third.id, first.id]
    assert mq.jobs(status="failed") == []


def test_jobs_refuses_a_status_that_does_not_exist(mq: Minique) -> None:
    with pytest.raises(ValueError, match="'finished' is not a status; the statuses are queued"):
        mq.jobs(status="finished")
    with pytest.raises(ValueError, match="limit"):
        mq.jobs(limit=0)


def test_a_call_past_its_expiry_lists_as_expired_not_queued(mq: Minique, raw: Raw) -> None:
    @mq.task(name="late", expires=dt.timedelta(seconds=30))
    def late() -> None: ...

    gone = late()
    fresh = late()
    raw("UPDATE jobs SET expires = 1 WHERE id = ?", int(gone.id))

    assert [j.id for j in mq.jobs(status="expired")] == [gone.id]
    assert [j.id for j in mq.jobs(status="queued")] == [fresh.id]
    job = mq.job(gone.id)
    assert job.status == "expired"
    assert job.error is not None and job.error.error_type == "Expired"


def test_job_whose_arguments_cannot_be_decoded_says_why(
        mq: Minique, db_path: Path, sqlite_only: None) -> None:
    @mq.task(name="noop")
    def noop(x: int) -> None: ...

    result = noop(1)
    sql(db_path, "UPDATE jobs SET payload = X'80049500' WHERE id = ?", (int(result.id),))

    job = mq.job(result.id)

    assert (job.args, job.kwargs) == ((), {})
    assert job.unreadable is not None and "arguments cannot be decoded" in job.unreadable


# -- history ------------------------------------------------------------------------------------


def test_history_has_one_record_per_attempt_with_its_error_and_consumer(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    @mq.task(name="boom", retries=2, retry_delay=0)
    def boom() -> None:
        raise ValueError("no luck")

    consumer = start_consumer(mq)
    result = boom()
    with pytest.raises(TaskError):
        result.get(timeout=10)

    job = mq.job(result.id)

    assert outcomes(job) == [(1, "retry"), (2, "retry"), (3, "failed")]
    assert job.attempts == job.max_attempts == 3
    for attempt in job.history:
        assert attempt.consumer == consumer.id
        assert attempt.error is not None
        assert (attempt.error.error_type, attempt.error.message) == ("ValueError", "no luck")
        assert "raise ValueError" in attempt.error.traceback
        assert attempt.started_at is not None and attempt.started_at <= attempt.finished_at
    assert job.error is not None and job.error.error_type == "ValueError"


def test_history_says_timeout_for_an_attempt_past_its_timeout(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    release = threading.Event()

    @mq.task(name="slow", timeout=0.2, retries=1, retry_delay=0)
    def slow() -> None:
        release.wait(10)

    start_consumer(mq)
    result = slow()
    try:
        with pytest.raises(TaskError):
            result.get(timeout=15)
    finally:
        release.set()

    assert outcomes(mq.job(result.id)) == [(1, "timeout"), (2, "timeout")]


def test_history_says_lost_for_an_attempt_whose_consumer_died(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    @mq.task(name="work")
    def work() -> str:
        return "ok"

    # Given a call whose attempt started on a consumer that then died
    result = work()
    (claimed,) = mq.store.claim("dead-consumer", 60, time.time(), 1)
    assert claimed.id == int(result.id)
    mq.store.reap_owner("dead-consumer", time.time())

    # When a live consumer runs it again
    live = start_consumer(mq)
    assert result.get(timeout=10) == "ok"

    # Then the history has the lost attempt, then the one that was done
    job = mq.job(result.id)
    assert outcomes(job) == [(1, "lost"), (2, "done")]
    lost, done = job.history
    assert lost.consumer == "dead-consumer" and done.consumer == live.id
    assert lost.error is not None and lost.error.error_type == "WorkerLost"


def test_history_is_written_only_with_the_outcome_it_records(mq: Minique) -> None:
    @mq.task(name="work", retries=3)
    def work() -> None: ...

    # Given an attempt taken back from its consumer (its lease ran out)
    result = work()
    (claimed,) = mq.store.claim("slow-consumer", 60, time.time(), 1)
    mq.store.reap_owner("slow-consumer", time.time())

    # When that consumer writes the attempt's failure late
    written = mq.store.finish([Outcome(claimed.id, "slow-consumer", claimed.attempt, "queued",
                                       time.time(), error_type="ValueError",
                                       error_message="late", eta=time.time())])

    # Then neither the outcome nor a history record of it was written
    assert written == [False]
    assert outcomes(mq.job(result.id)) == [(1, "lost")]


def test_immediate_mode_records_every_attempt(mq: Minique) -> None:
    mq.immediate = True
    tries = []

    @mq.task(name="twice", retries=2)
    def twice() -> str:
        tries.append(1)
        if len(tries) < 2:
            raise Retry()
        return "ok"

    job = mq.job(twice().id)

    assert outcomes(job) == [(1, "retry"), (2, "done")]
    assert [a.consumer for a in job.history] == ["immediate", "immediate"]


def test_calls_that_succeed_write_no_history_row(
        mq: Minique, raw: Raw, start_consumer: Callable[..., Consumer]) -> None:
    # The drain stays as fast as it was: a done attempt is recorded by its row.
    @mq.task(name="noop")
    def noop(i: int) -> int:
        return i

    results = noop.map(range(50))
    start_consumer(mq)
    assert [r.get(timeout=10) for r in results] == list(range(50))

    assert raw("SELECT COUNT(*) FROM history") == [(0,)]
    assert all(outcomes(j) == [(1, "done")] for j in mq.jobs())


# -- retry ------------------------------------------------------------------------------------


def test_retry_queues_a_failed_call_again_with_fresh_retries_and_keeps_its_history(
        mq: Minique, flaky: dict[str, Any], start_consumer: Callable[..., Consumer]) -> None:
    start_consumer(mq)
    result = flaky["task"](21)
    with pytest.raises(TaskError):
        result.get(timeout=10)
    flaky["fail"] = False

    again = mq.retry(result.id)

    assert again.id == result.id
    assert again.get(timeout=10) == 42
    job = mq.job(result.id)
    assert outcomes(job) == [(1, "retry"), (2, "failed"), (3, "done")]
    assert (job.attempts, job.max_attempts) == (3, 4)
    assert job.error is None


def test_a_retried_call_gets_its_task_retries_again(
        mq: Minique, flaky: dict[str, Any], start_consumer: Callable[..., Consumer]) -> None:
    start_consumer(mq)
    result = flaky["task"](1)
    with pytest.raises(TaskError):
        result.get(timeout=10)

    mq.retry(result.id)

    with pytest.raises(TaskError):
        result.get(timeout=10)
    assert outcomes(mq.job(result.id)) == [(1, "retry"), (2, "failed"), (3, "retry"),
                                           (4, "failed")]


def test_retry_of_expired_and_revoked_calls(mq: Minique, raw: Raw) -> None:
    @mq.task(name="work", expires=60)
    def work() -> None: ...

    revoked, expired = work(), work()
    assert revoked.revoke()
    raw("UPDATE jobs SET expires = 1 WHERE id = ?", int(expired.id))

    mq.retry(revoked.id)
    mq.retry(expired.id)

    assert revoked.status == expired.status == "queued"
    assert mq.job(expired.id).expires is None  # its deadline would expire it again


@pytest.mark.parametrize("status", ["queued", "done"])
def test_retry_of_a_call_that_did_not_fail_says_why_and_changes_nothing(
        mq: Minique, status: str) -> None:
    mq.immediate = status == "done"

    @mq.task(name="work")
    def work() -> None: ...

    result = work()
    before = mq.job(result.id)

    with pytest.raises(ValueError, match=f"cannot be retried: it is {status}"):
        mq.retry(result.id)

    assert mq.job(result.id) == before


def test_retry_of_an_unknown_id_raises_lookup_error(mq: Minique) -> None:
    mq.counts()

    with pytest.raises(LookupError, match="no call with id 7"):
        mq.retry("7")


def test_retry_failed_retries_all_failed_calls_or_those_of_a_queue_or_task(mq: Minique) -> None:
    mq.immediate = True

    @mq.task(name="a", queue="q1")
    def a() -> None:
        raise ValueError("a")

    @mq.task(name="b", queue="q2")
    def b() -> None:
        raise ValueError("b")

    failed_a, failed_b, other_a = a(), b(), a()
    mq.immediate = False

    assert mq.retry_failed(task="nothing") == 0
    assert mq.retry_failed(queue="q2") == 1
    assert failed_b.status == "queued"
    assert mq.retry_failed(task=a) == 2
    assert failed_a.status == other_a.status == "queued"
    assert mq.retry_failed() == 0


# -- purge ------------------------------------------------------------------------------------


def test_purge_deletes_calls_in_a_status_and_their_history(mq: Minique, raw: Raw) -> None:
    mq.immediate = True

    @mq.task(name="boom", retries=1)
    def boom() -> None:
        raise ValueError("x")

    @mq.task(name="fine")
    def fine() -> None: ...

    failed, done = boom(), fine()
    mq.immediate = False
    queued = fine()

    assert mq.purge("failed") == 1

    with pytest.raises(LookupError):
        mq.job(failed.id)
    assert raw("SELECT COUNT(*) FROM history") == [(0,)]
    assert mq.job(done.id).status == "done"
    assert mq.purge(["done", "queued"], task="fine") == 2
    assert mq.jobs() == []
    with pytest.raises(LookupError):
        mq.job(queued.id)


def test_purge_older_than_keeps_what_finished_more_recently(mq: Minique, raw: Raw) -> None:
    mq.immediate = True

    @mq.task(name="fine")
    def fine() -> None: ...

    old, recent = fine(), fine()
    hour_ago = time.time() - 3600
    raw("UPDATE jobs SET finished_at = ? WHERE id = ?", hour_ago, int(old.id))

    assert mq.purge("done", older_than=dt.timedelta(minutes=30)) == 1
    assert [j.id for j in mq.jobs()] == [recent.id]
    assert mq.purge("done", older_than=3600) == 0


def test_purge_refuses_running_calls_and_bad_arguments(mq: Minique) -> None:
    with pytest.raises(ValueError, match="running calls cannot be purged"):
        mq.purge(["done", "running"])
    with pytest.raises(ValueError, match="'old' is not a status"):
        mq.purge("old")
    with pytest.raises(ValueError, match="older_than"):
        mq.purge("done", older_than=-1)


def test_a_big_purge_lets_producers_enqueue_meanwhile(
        mq: Minique, raw: Raw, location: str) -> None:
    @mq.task(name="fine")
    def fine(i: int) -> None: ...

    # Given many finished calls
    rows = 150_000
    for start in range(0, rows, 10_000):
        fine.map(range(start, start + 10_000))
    raw("UPDATE jobs SET state = 'done', finished_at = created_at")

    # When one thread purges them all
    purged: list[int] = []
    purging = threading.Thread(target=lambda: purged.append(mq.purge("done")))
    purging.start()
    try:
        wait_for(lambda: raw("SELECT COUNT(*) FROM jobs")[0][0] < rows, timeout=30,
                 what="the purge to begin")
        # Then a producer's call (another connection) completes while the purge goes on
        enqueued = producer_task(location)(1)
        still_purging = purging.is_alive()
    finally:
        purging.join(60)

    assert still_purging, "the purge ended before the enqueue: give it more rows"
    assert purged == [rows]
    assert enqueued.status == "queued"


# -- pause --------------------------------------------------------------------------------------


def test_pause_stops_every_consumer_from_starting_calls_of_that_queue(
        mq: Minique, location: str, start_consumer: Callable[..., Consumer]) -> None:
    @mq.task(name="mail", queue="emails")
    def mail(to: str) -> str:
        return to

    @mq.task(name="work")
    def work() -> str:
        return "done"

    start_consumer(mq)
    mq.pause("emails")

    # A paused queue still accepts calls; the one before it in line is left alone
    held = mail("ann")
    ran = work()
    assert ran.get(timeout=10) == "done"
    assert held.status == "queued"
    assert mq.paused() == {"emails"}
    assert Minique(location).paused() == {"emails"}  # kept in the database

    mq.resume("emails")

    assert held.get(timeout=10) == "ann"
    assert mq.paused() == set()


def test_pause_holds_for_consumers_that_serve_a_list_of_queues(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    @mq.task(name="mail", queue="emails")
    def mail(to: str) -> str:
        return to

    @mq.task(name="work")
    def work() -> str:
        return "done"

    start_consumer(mq, queues=["emails", "default"])
    mq.pause("emails")
    held = mail("bob")

    assert work().get(timeout=10) == "done"
    assert held.status == "queued"
    mq.resume("emails")
    assert held.get(timeout=10) == "bob"


def test_a_claim_of_paused_queues_only_takes_nothing(mq: Minique) -> None:
    @mq.task(name="mail", queue="emails")
    def mail() -> None: ...

    call = mail()
    mq.pause("emails")

    assert mq.store.claim("me", 60, time.time(), 10, queues=["emails"]) == []
    mq.resume("emails")
    assert [j.id for j in mq.store.claim("me", 60, time.time(), 10, queues=["emails"])] == [
        int(call.id)]


def test_a_paused_queue_expires_nothing_early_and_its_deadlines_still_count(
        mq: Minique, raw: Raw, start_consumer: Callable[..., Consumer]) -> None:
    @mq.task(name="mail", queue="emails", expires=dt.timedelta(hours=1))
    def mail(to: str) -> str:
        return to

    @mq.task(name="work")
    def work() -> None: ...

    start_consumer(mq)
    mq.pause("emails")
    waits, misses = mail("a"), mail("b")
    raw("UPDATE jobs SET expires = ? WHERE id = ?", time.time() - 1, int(misses.id))
    work().get(timeout=10)  # the consumer has looked at the queue meanwhile

    # A call waits for as long as its queue is paused, until its own deadline
    assert waits.status == "queued"
    assert misses.status == "expired"
    mq.resume("emails")
    assert waits.get(timeout=10) == "a"
    with pytest.raises(TaskError, match="Expired"):
        misses.get(timeout=10)


def test_pause_and_resume_refuse_a_queue_that_is_not_a_name(mq: Minique) -> None:
    with pytest.raises(ValueError, match="queue"):
        mq.pause("")
    with pytest.raises(ValueError, match="queue"):
        mq.resume(None)  # type: ignore[arg-type]


# -- revoke_all and restore_all ------------------------------------------------------------------


def test_revoke_all_revokes_the_pending_calls_of_a_task_and_restore_all_undoes_it(
        mq: Minique) -> None:
    @mq.task(name="mail")
    def mail(to: str) -> None: ...

    @mq.task(name="other")
    def other() -> None: ...

    first, second, alone = mail("a"), mail("b"), mail("c")
    untouched = other()
    assert alone.revoke()

    assert mq.revoke_all(mail) == 2
    assert first.status == second.status == "revoked"
    assert untouched.status == "queued"
    later = mail("d")
    assert later.status == "queued"  # calls made afterwards are not revoked

    assert mq.restore_all("mail") == 2
    assert first.status == second.status == "queued"
    assert alone.status == "revoked"  # revoked on its own: stays so
    assert mq.restore_all("mail") == 0


# -- results past result_ttl ----------------------------------------------------------------------


def test_results_past_result_ttl_are_deleted_by_a_producer_at_most_once_a_minute(
        location: str, raw: Raw) -> None:
    # Given calls that finished two hours ago, and no consumer
    old = Minique(location, immediate=True)

    @old.task(name="fine")
    def fine() -> None: ...

    stale = [fine().id for _ in range(3)]
    raw("UPDATE jobs SET finished_at = finished_at - 7200")

    # When a producer with a result_ttl of an hour enqueues
    enqueue = producer_task(location, result_ttl=3600)
    producer = enqueue.mq
    enqueue()

    # Then they are gone
    assert [j.id for j in producer.jobs(status="done")] == []
    for job_id in stale:
        with pytest.raises(LookupError):
            producer.job(job_id)

    # And the next enqueue within the minute does not look again
    again = fine().id
    raw("UPDATE jobs SET finished_at = finished_at - 7200 WHERE id = ?", int(again))
    enqueue()
    assert producer.job(again).status == "done"


# -- consumers ------------------------------------------------------------------------------------


def test_consumers_say_which_calls_each_one_runs(
        mq: Minique, start_consumer: Callable[..., Consumer], gate: threading.Event) -> None:
    @mq.task(name="hold")
    def hold() -> None:
        gate.wait(10)

    consumer = start_consumer(mq, workers=2)
    result = hold()
    wait_for(lambda: result.status == "running", what="the call to start")

    (status,) = mq.consumers()

    assert status.id == consumer.id
    assert status.running == (result.id,)
    gate.set()
    result.get(timeout=10)
    assert mq.consumers()[0].running == ()


# -- the schema -----------------------------------------------------------------------------------


# The schema as minique created it at version 2, frozen here so that the
# upgrade from it stays tested whatever the models become.
SCHEMA_V2 = [
    'CREATE TABLE "jobs" ("id" INTEGER NOT NULL PRIMARY KEY, "name" TEXT NOT NULL, "queue" TEXT'
    ' NOT NULL, "priority" INTEGER NOT NULL, "state" TEXT NOT NULL, "payload" BLOB NOT NULL,'
    ' "eta" REAL NOT NULL, "expires" REAL, "attempts" INTEGER NOT NULL, "max_attempts" INTEGER'
    ' NOT NULL, "owner" TEXT, "lease_until" REAL, "lease_boot" TEXT, "lease_mono" REAL,'
    ' "started" INTEGER NOT NULL DEFAULT 0, "suspect" INTEGER NOT NULL DEFAULT 0, "created_at"'
    ' REAL NOT NULL, "started_at" REAL, "finished_at" REAL, "result" BLOB, "error_type" TEXT,'
    ' "error_message" TEXT, "traceback" TEXT)',
    'CREATE TABLE "consumers" ("id" TEXT NOT NULL PRIMARY KEY, "hostname" TEXT NOT NULL,'
    ' "boot_id" TEXT NOT NULL, "pid_ns" TEXT NOT NULL, "pid" INTEGER NOT NULL, "pid_start" TEXT'
    ' NOT NULL, "queues" TEXT NOT NULL, "workers" INTEGER NOT NULL, "started_at" REAL NOT NULL,'
    ' "heartbeat_at" REAL NOT NULL)',
    'CREATE TABLE "periodic" ("name" TEXT NOT NULL PRIMARY KEY, "crontab" TEXT NOT NULL,'
    ' "next_fire" REAL NOT NULL)',
    "CREATE INDEX jobs_ready ON jobs (priority DESC, eta, id) WHERE state = 'queued'",
    "CREATE INDEX jobs_scheduled ON jobs (eta) WHERE state = 'scheduled'",
    "CREATE INDEX jobs_running ON jobs (lease_until) WHERE state = 'running'",
    "CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL",
    "PRAGMA user_version = 2",
]


def test_a_file_of_schema_version_2_is_upgraded_and_its_failed_calls_can_be_retried(
        db_path: Path, start_consumer: Callable[..., Consumer]) -> None:
    # Given a file of schema version 2 with a call that failed after two attempts
    conn = sqlite3.connect(db_path, isolation_level=None)
    for statement in SCHEMA_V2:
        conn.execute(statement)
    conn.execute(
        "INSERT INTO jobs (id, name, queue, priority, state, payload, eta, attempts,"
        " max_attempts, created_at, finished_at, error_type, error_message)"
        " VALUES (1, 'add', 'default', 0, 'failed', '[[1, 2], {}]', 0, 2, 2, 0, 1,"
        " 'ValueError', 'down')")
    conn.close()

    # When today's minique opens it
    mq = Minique(db_path)

    @mq.task(name="add", retries=1)
    def add(a: int, b: int) -> int:
        return a + b

    job = mq.job("1")

    # Then it is at today's version; the call reads as it was, without history
    assert sql(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert (job.status, job.attempts, job.history) == ("failed", 2, [])
    assert mq.paused() == set()
    # And retried, its new attempt is numbered after the two it had
    mq.retry("1")
    start_consumer(mq)
    assert mq.result("1").get(timeout=10) == 3
    assert outcomes(mq.job("1")) == [(3, "done")]


def test_an_upgraded_file_has_the_tables_and_indexes_of_a_new_one(tmp_path: Path) -> None:
    def shape(path: Path) -> dict[str, Any]:
        tables = [n for (n,) in sql(path, "SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {
            "columns": {t: sorted(row[1:] for row in sql(path, f"PRAGMA table_info({t})"))
                        for t in tables},
            "indexes": sorted(sql(path, "SELECT name, tbl_name FROM sqlite_master"
                                        " WHERE type = 'index'")),
            "without_rowid": sorted(t for t in tables if "WITHOUT ROWID" in sql(
                path, "SELECT sql FROM sqlite_master WHERE name = ?", (t,))[0][0]),
        }

    upgraded, new = tmp_path / "upgraded.db", tmp_path / "new.db"
    conn = sqlite3.connect(upgraded, isolation_level=None)
    for statement in SCHEMA_V2:
        conn.execute(statement)
    conn.close()
    Minique(upgraded).counts()
    Minique(new).counts()

    assert shape(upgraded) == shape(new)
