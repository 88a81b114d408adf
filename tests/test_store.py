"""The database file: created with its tables and schema version on first use, newer versions
refused, counts by status, damaged rows and unknown tasks failing cleanly while the consumer
goes on, finished results purged after their TTL, and bad paths refused at construction."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from minique import Minique, TaskError
from minique.consumer import Consumer
from minique.errors import ConfigurationError, SchemaVersionError
from minique.store import STATES
from minique.store.models import SCHEMA_VERSION

ZEROS = dict.fromkeys(
    ["queued", "scheduled", "running", "done", "failed", "revoked", "expired"], 0)


def sql(db_path: Path, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on the file directly, as another program would, and commit."""
    with closing(sqlite3.connect(db_path)) as db, db:
        return db.execute(statement, params).fetchall()


# -- the file and its schema -----------------------------------------------------------------


def test_database_file_and_tables_are_created_on_first_use(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    mq = Minique(path)

    @mq.task
    def work() -> None: ...

    work()

    assert path.is_file()
    tables = {name for (name,) in sql(path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"jobs", "consumers", "periodic"} <= tables
    assert sql(path, "SELECT COUNT(*) FROM jobs") == [(1,)]


def test_database_accepts_a_str_path(tmp_path: Path) -> None:
    mq = Minique(str(tmp_path / "fresh.db"))

    assert mq.counts() == ZEROS
    assert (tmp_path / "fresh.db").is_file()


def test_schema_version_is_pragma_user_version(mq: Minique, db_path: Path) -> None:
    mq.counts()

    assert sql(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


def test_opening_an_existing_database_keeps_its_tasks(mq: Minique, db_path: Path) -> None:
    @mq.task(name="work")
    def work() -> None: ...

    job_id = work().id
    again = Minique(db_path)

    assert again.result(job_id).status == "queued"
    assert sql(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


def test_a_consumer_on_an_existing_database_runs_without_importing_peewee(
        mq: Minique, db_path: Path, tmp_path: Path) -> None:
    # Given a database created here (peewee renders its tables) and a module of tasks
    mq.counts()
    (tmp_path / "jobs.py").write_text(textwrap.dedent(f"""
        from minique import Minique
        mq = Minique({str(db_path)!r})

        @mq.task(name="add")
        def add(a, b):
            return a + b
    """))
    script = textwrap.dedent("""
        import sys
        import jobs
        with jobs.mq.consumer(workers=2):
            assert jobs.add(2, 3).get(timeout=15) == 5
        print("peewee" in sys.modules)
    """)

    # When another process enqueues and consumes on it
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)

    # Then it never imported peewee: start-up does not pay for it
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_database_of_a_newer_schema_is_refused_naming_both_versions(db_path: Path) -> None:
    newer = SCHEMA_VERSION + 1
    sql(db_path, f"PRAGMA user_version = {newer}")

    with pytest.raises(SchemaVersionError) as info:
        Minique(db_path).counts()

    message = str(info.value)
    assert f"version {newer}" in message
    assert f"version {SCHEMA_VERSION}" in message
    assert sql(db_path, "PRAGMA user_version") == [(newer,)]
    assert sql(db_path, "SELECT name FROM sqlite_master WHERE name = 'jobs'") == []


# -- counts ---------------------------------------------------------------------------------


def test_counts_of_an_empty_queue_have_every_status_with_zeros(mq: Minique) -> None:
    assert set(STATES) == set(ZEROS)
    assert mq.counts() == ZEROS
    assert mq.counts(queue="default") == ZEROS
    assert mq.counts(queue="no-such-queue") == ZEROS


def test_counts_are_by_status_over_all_queues_or_one(mq: Minique) -> None:
    @mq.task
    def work() -> None: ...

    @mq.task(queue="emails")
    def send() -> None: ...

    work()
    work()
    work.schedule(delay=3600)
    send()
    send().revoke()

    assert mq.counts() == {**ZEROS, "queued": 3, "scheduled": 1, "revoked": 1}
    assert mq.counts(queue="default") == {**ZEROS, "queued": 2, "scheduled": 1}
    assert mq.counts(queue="emails") == {**ZEROS, "queued": 1, "revoked": 1}


# -- what a consumer cannot run ----------------------------------------------------------------


@pytest.mark.parametrize("garbage", [
    "{not json",
    b"\x80\x04garbage",
    "[1, 2, 3]",
    '[{"a": 1}, {}]',
    "42",
], ids=["broken json", "bytes", "not a pair", "args not a list", "a number"])
def test_corrupt_payload_fails_with_payload_error_and_consumer_goes_on(
        mq: Minique, db_path: Path, start_consumer: Callable[..., Consumer],
        garbage: str | bytes) -> None:
    ran: list[str] = []

    @mq.task
    def work(label: str) -> str:
        ran.append(label)
        return label

    corrupt = work("corrupt")
    fine = work("fine")
    sql(db_path, "UPDATE jobs SET payload = ? WHERE id = ?", (garbage, corrupt.id))
    consumer = start_consumer(mq, workers=1)

    assert fine.get(timeout=10) == "fine"
    with pytest.raises(TaskError) as info:
        corrupt.get(timeout=10)
    assert info.value.error_type == "PayloadError"
    assert "cannot be decoded" in info.value.message
    assert corrupt.status == "failed"
    assert consumer.running
    assert work("after").get(timeout=10) == "after"
    assert ran == ["fine", "after"]


def test_task_unknown_to_the_consumer_fails_naming_it(
        mq: Minique, db_path: Path, start_consumer: Callable[..., Consumer]) -> None:
    @mq.task(name="known")
    def known() -> str:
        return "known"

    other_app = Minique(db_path)  # e.g. a newer deploy of the producer

    @other_app.task(name="reports.only_elsewhere")
    def only_elsewhere() -> str:
        return "never"

    unknown = only_elsewhere()
    consumer = start_consumer(mq, workers=1)

    with pytest.raises(TaskError) as info:
        mq.result(unknown.id).get(timeout=10)
    assert info.value.error_type == "UnknownTask"
    assert "reports.only_elsewhere" in info.value.message
    assert info.value.task_name == "reports.only_elsewhere"
    assert unknown.status == "failed"
    assert consumer.running
    assert known().get(timeout=10) == "known"


# -- purging finished results ---------------------------------------------------------------


def test_housekeeper_purges_results_older_than_result_ttl(
        db_path: Path, start_consumer: Callable[..., Consumer]) -> None:
    mq = Minique(db_path, result_ttl=3600)

    @mq.task
    def work(label: str) -> str:
        return label

    old, recent = work("old"), work("recent")
    waiting = work.schedule(("waiting",), delay=3600)
    consumer = start_consumer(mq, workers=1)
    old.get(timeout=10)
    recent.get(timeout=10)
    two_hours_ago = time.time() - 7200
    sql(db_path, "UPDATE jobs SET finished_at = ? WHERE id = ?", (two_hours_ago, old.id))
    sql(db_path, "UPDATE jobs SET created_at = ? WHERE id = ?", (two_hours_ago, waiting.id))

    assert consumer._housekeeper is not None
    consumer._housekeeper.purge()

    with pytest.raises(LookupError):
        old.status  # noqa: B018 - the property read is the call under test
    assert recent.get() == "recent"
    assert waiting.status == "scheduled"


def test_housekeeper_keeps_results_forever_without_result_ttl(
        db_path: Path, start_consumer: Callable[..., Consumer]) -> None:
    mq = Minique(db_path, result_ttl=None)

    @mq.task
    def work() -> str:
        return "kept"

    result = work()
    consumer = start_consumer(mq, workers=1)
    result.get(timeout=10)
    sql(db_path, "UPDATE jobs SET finished_at = 0 WHERE id = ?", (result.id,))

    assert consumer._housekeeper is not None
    consumer._housekeeper.purge()

    assert result.get() == "kept"


def test_purge_finished_deletes_only_finished_rows_before_the_given_time(
        mq: Minique, db_path: Path) -> None:
    @mq.task
    def work() -> None: ...

    queued, scheduled = work(), work.schedule(delay=3600)
    finished = [work() for _ in range(3)]
    for result in finished:
        result.revoke()
    sql(db_path, "UPDATE jobs SET finished_at = 1000 WHERE id = ?", (finished[0].id,))
    sql(db_path, "UPDATE jobs SET finished_at = 2000 WHERE id = ?", (finished[1].id,))
    sql(db_path, "UPDATE jobs SET finished_at = 3000 WHERE id = ?", (finished[2].id,))
    sql(db_path, "UPDATE jobs SET created_at = 0 WHERE id IN (?, ?)", (queued.id, scheduled.id))

    assert mq.store.purge_finished(before=2500) == 2

    remaining = {str(job_id) for (job_id,) in sql(db_path, "SELECT id FROM jobs")}
    assert remaining == {queued.id, scheduled.id, finished[2].id}


def test_purge_finished_deletes_in_batches_until_done(
        mq: Minique) -> None:
    @mq.task
    def work(n: int) -> None: ...

    for result in work.map(range(7)):
        result.revoke()

    assert mq.store.purge_finished(before=time.time() + 1, batch=2) == 7
    assert mq.counts() == ZEROS


def test_purge_finished_spares_recent_results(mq: Minique) -> None:
    @mq.task
    def work() -> None: ...

    result = work()
    result.revoke()

    assert mq.store.purge_finished(before=time.time() - 3600) == 0
    assert result.status == "revoked"


# -- bad paths --------------------------------------------------------------------------------


def test_path_in_a_missing_folder_is_refused_at_construction(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "folder"

    with pytest.raises(ConfigurationError) as info:
        Minique(missing / "queue.db")

    message = str(info.value)
    assert str(missing) in message
    assert "does not exist" in message
    assert not missing.exists()


def test_read_only_database_file_is_refused(mq: Minique, db_path: Path) -> None:
    mq.counts()  # create it
    db_path.chmod(0o444)
    try:
        try:
            with open(db_path, "r+b"):
                pass
        except PermissionError:
            pass
        else:
            pytest.skip(f"this user (uid {os.getuid()}) can still write to a 0o444 file "
                        "(running as root?), so the file is not read-only to it")

        with pytest.raises(ConfigurationError, match="read-only"):
            other = Minique(db_path)

            @other.task
            def work() -> None: ...

            work()
    finally:
        db_path.chmod(0o644)


def test_reaped_job_names_the_consumer_it_was_taken_from(mq: Minique) -> None:
    @mq.task
    def work() -> None: ...

    result = work()
    claimed = mq.store.claim("dead-consumer", lease=-1.0, now=time.time(), limit=1)
    assert [str(job.id) for job in claimed] == [result.id]

    reaped = mq.store.reap_expired(now=time.time())

    assert [(str(job.id), job.owner, job.state) for job in reaped] == [
        (result.id, "dead-consumer", "queued")]


def test_configure_points_the_queue_at_another_database_keeping_its_tasks(
        mq: Minique, tmp_path: Path) -> None:
    @mq.task
    def work() -> int:
        return 1

    mq.configure(tmp_path / "other.db", immediate=True)

    assert work().get(timeout=1) == 1
    assert mq.path == tmp_path / "other.db"
    assert (tmp_path / "other.db").exists()


def test_configure_with_a_bad_option_leaves_the_queue_as_it_was(
        mq: Minique, db_path: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        mq.configure(tmp_path / "missing" / "x.db")
    with pytest.raises(ConfigurationError):
        mq.configure(tmp_path / "x.db", synchronous="sometimes")  # type: ignore[arg-type]

    assert mq.path == db_path
    assert mq.synchronous == "normal"


def test_producer_commits_hand_checkpoints_to_a_background_thread(mq: Minique) -> None:
    # Given a producer that commits call after call, with no consumer running
    from minique.store.sqlite import CHECKPOINT_AFTER_COMMITS

    @mq.task
    def work(n: int) -> None: ...

    done = threading.Event()
    checkpoint = mq.store.checkpoint

    def spy() -> None:
        checkpoint()
        if threading.current_thread().name == "minique-checkpointer":
            done.set()

    mq.store.checkpoint = spy  # type: ignore[method-assign]

    # When it has committed more than the threshold
    for n in range(CHECKPOINT_AFTER_COMMITS + 1):
        work(n)

    # Then the WAL was checkpointed off the caller's thread
    assert done.wait(10), "no checkpoint ran in the background thread"
    assert mq.counts()["queued"] == CHECKPOINT_AFTER_COMMITS + 1


def test_finish_of_a_batch_writes_only_the_outcomes_that_still_own_their_job(
        mq: Minique) -> None:
    from minique.store import Outcome

    @mq.task
    def work() -> None: ...

    kept, lost = work(), work()
    claimed = mq.store.claim("me", lease=60, now=time.time(), limit=2)
    assert len(claimed) == 2
    # The second was taken back (say its lease ran out) before the batch is written
    mq.store.release("me", [(int(lost.id), 1)])

    written = mq.store.finish([
        Outcome(int(kept.id), "me", 1, "done", time.time(), result="1"),
        Outcome(int(lost.id), "me", 1, "done", time.time(), result="2"),
    ])

    assert written == [True, False]
    assert kept.status == "done"
    assert lost.status == "queued"


# The schema as minique 0.1 (schema version 1) created it, frozen here so that
# the upgrade from it stays tested whatever the models become.
SCHEMA_V1 = [
    'CREATE TABLE "jobs" ("id" INTEGER NOT NULL PRIMARY KEY, "name" TEXT NOT NULL, "queue" TEXT'
    ' NOT NULL, "priority" INTEGER NOT NULL, "state" TEXT NOT NULL, "payload" BLOB NOT NULL, "eta"'
    ' REAL NOT NULL, "expires" REAL, "attempts" INTEGER NOT NULL, "max_attempts" INTEGER NOT NULL,'
    ' "owner" TEXT, "lease_until" REAL, "created_at" REAL NOT NULL, "started_at" REAL,'
    ' "finished_at" REAL, "result" BLOB, "error_type" TEXT, "error_message" TEXT, "traceback"'
    ' TEXT)',
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
    "PRAGMA user_version = 1",
]


def test_a_file_of_schema_version_1_is_upgraded_and_its_calls_run(
        db_path: Path, start_consumer: Callable[..., Consumer]) -> None:
    # Given a file written by minique with schema version 1: a queued call, and a
    # call running (its attempt counted at claim, as version 1 did) on a dead consumer
    conn = sqlite3.connect(db_path, isolation_level=None)
    for statement in SCHEMA_V1:
        conn.execute(statement)
    insert = ("INSERT INTO jobs (id, name, queue, priority, state, payload, eta, attempts,"
              " max_attempts, owner, lease_until, created_at) VALUES (?, 'add', 'default', 0, ?,"
              " '[[1, 2], {}]', 0, ?, 1, ?, ?, 0)")
    conn.execute(insert, (1, "queued", 0, None, None))
    conn.execute(insert, (2, "running", 1, "gone", 1.0))
    conn.close()

    # When today's minique opens it and a consumer runs
    mq = Minique(db_path)

    @mq.task(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    start_consumer(mq)

    # Then the file is at today's version, the queued call runs, and the running
    # one is taken back as a lost attempt (it had started) and runs again
    assert sql(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert mq.result("1").get(timeout=10) == 3
    assert mq.result("2").get(timeout=10) == 3
    assert mq.result("2").record.attempts == 2
