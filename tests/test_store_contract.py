"""The store contract: every method of ``minique.store.base.Store``, the same on every engine.

Each test runs on a SQLite file and on a fresh PostgreSQL schema (see the
``pg_dsn`` fixture in conftest.py). A behaviour that differs between the two is
a bug in one of them. Rows are written around the store only where a test
needs a state no method makes (a lease held on another boot).
"""

from __future__ import annotations

import select
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for

from minique.errors import DuplicateJobId
from minique.store import STATES, ConsumerInfo, NewJob, Outcome, SqliteStore, Store

ENGINES = ["sqlite", "postgres"]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def location(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """Where a store of this engine lives: a file, or a URL (with its password)."""
    if engine == "sqlite":
        return str(tmp_path / "queue.db")
    return str(request.getfixturevalue("pg_dsn"))


def open_store(location: str) -> Store:
    from minique.store import open_store as open_

    return open_(location)


@pytest.fixture
def store(location: str) -> Iterator[Store]:
    opened = open_store(location)
    yield opened
    opened.close()


@pytest.fixture
def other(location: str) -> Iterator[Store]:
    """A second store on the same data: another process's view of the queue."""
    opened = open_store(location)
    yield opened
    opened.close()


class Raw:
    """Statements run on the data directly, as another program would (``?`` placeholders)."""

    def __init__(self, location: str) -> None:
        self.location = location

    def __call__(self, statement: str, *params: object) -> list[tuple[Any, ...]]:
        if self.location.startswith(("postgresql://", "postgres://")):
            import psycopg

            with psycopg.connect(self.location, autocommit=True) as conn:
                cur = conn.execute(statement.replace("?", "%s"), params)
                return cur.fetchall() if cur.description else []
        conn = sqlite3.connect(self.location, isolation_level=None)
        try:
            return conn.execute(statement, params).fetchall()
        finally:
            conn.close()


@pytest.fixture
def raw(location: str, store: Store) -> Raw:
    return Raw(location)


_next_id = iter(range(1_000, 10**9))


def job(*, eta: float | None = None, priority: int = 0, queue: str = "default",
        max_attempts: int = 1, expires: float | None = None, payload: str | bytes = "[[], {}]",
        name: str = "work", job_id: int | None = None) -> NewJob:
    now = time.time()
    return NewJob(next(_next_id) if job_id is None else job_id, name, queue, priority, payload,
                  now if eta is None else eta, expires, max_attempts, now)


def enqueue(store: Store, *jobs: NewJob) -> list[int]:
    store.enqueue(list(jobs), time.time())
    return [j.id for j in jobs]


def text(value: str | bytes | None) -> str | None:
    """A stored payload or result as text (a store may hand JSON back as bytes)."""
    return value if value is None or isinstance(value, str) else bytes(value).decode()


def state(store: Store, job_id: int) -> str:
    record = store.read(job_id)
    assert record is not None
    return record.state


def done(job_id: int, owner: str, attempt: int, result: str = "1") -> Outcome:
    return Outcome(job_id, owner, attempt, "done", time.time(), result=result)


# -- the store itself ----------------------------------------------------------------------


def test_location_names_the_data_without_a_password(engine: str, location: str,
                                                     store: Store) -> None:
    if engine == "sqlite":
        assert store.location == str(Path(location).resolve())
    else:
        assert store.location.startswith("postgresql://minique@")
        assert "secret" not in store.location
        assert "secret" in location  # the test's URL has one


def test_a_second_store_on_the_same_location_sees_the_same_jobs(store: Store,
                                                                other: Store) -> None:
    (job_id,) = enqueue(store, job())
    assert state(other, job_id) == "queued"
    assert other.location == store.location


def test_close_then_use_again_reopens(store: Store) -> None:
    (job_id,) = enqueue(store, job())
    store.close()
    assert state(store, job_id) == "queued"


def test_maintenance_runs(store: Store) -> None:
    enqueue(store, job())
    store.maintenance()
    assert store.counts_by_queue()["default"]["queued"] == 1


def test_changes_moves_when_another_connection_commits(store: Store, other: Store) -> None:
    before = store.changes()
    enqueue(other, job())
    assert store.changes() != before


# -- producers -----------------------------------------------------------------------------


def test_enqueue_stores_queued_or_scheduled_by_eta(store: Store) -> None:
    now = time.time()
    ready, later = enqueue(store, job(eta=now - 1), job(eta=now + 3600))

    assert state(store, ready) == "queued"
    assert state(store, later) == "scheduled"
    record = store.read(later)
    assert record is not None
    assert (record.name, record.queue, record.attempts, record.max_attempts) == (
        "work", "default", 0, 1)
    assert record.eta == pytest.approx(now + 3600)


def test_payloads_come_back_as_stored_text_or_bytes(store: Store) -> None:
    pickled = b"\x80\x05\x95garbage\x00\xff"
    enqueue(store, job(payload='[["é", 1], {}]'), job(payload=pickled))

    claimed = store.claim("me", 60, time.time(), 2)

    assert text(claimed[0].payload) == '[["é", 1], {}]'
    assert bytes(claimed[1].payload) == pickled  # type: ignore[arg-type]


def test_an_id_already_taken_raises_duplicate_job_id(store: Store) -> None:
    (job_id,) = enqueue(store, job())

    with pytest.raises(DuplicateJobId):
        store.enqueue([job(job_id=job_id)], time.time())


def test_a_batch_with_a_taken_id_stores_none_of_its_jobs(store: Store) -> None:
    (taken,) = enqueue(store, job())
    batch = [job(), job(), job(job_id=taken)]

    with pytest.raises(DuplicateJobId):
        store.enqueue(batch, time.time())

    assert store.read(batch[0].id) is None
    assert store.read(batch[1].id) is None
    assert sum(store.counts_by_queue()["default"].values()) == 1


def test_a_batch_is_stored_whole(store: Store) -> None:
    ids = enqueue(store, *[job() for _ in range(50)])
    assert [state(store, i) for i in ids] == ["queued"] * 50


def test_record_finished_stores_a_call_that_ran_in_the_caller(store: Store) -> None:
    new = job(max_attempts=3)
    store.record_finished(new, Outcome(new.id, "immediate", 2, "done", time.time(),
                                       result="42"))

    record = store.read(new.id)
    assert record is not None
    assert (record.state, record.attempts, text(record.result)) == ("done", 2, "42")
    assert record.finished_at is not None and record.started_at is not None


def test_revoke_marks_a_waiting_job_and_only_one_that_has_not_started(store: Store) -> None:
    queued, scheduled, running = enqueue(store, job(), job(eta=time.time() + 60), job())
    store.claim("me", 60, time.time(), 5)  # takes queued and running
    assert store.revoke(scheduled, time.time()) is True
    assert store.revoke(scheduled, time.time()) is True  # still: it will not run
    assert store.revoke(running, time.time()) is False
    assert store.revoke(10**15, time.time()) is False

    record = store.read(scheduled)
    assert record is not None
    assert (record.state, record.error_type) == ("revoked", "Revoked")
    assert state(store, queued) == "running"


# -- readers -----------------------------------------------------------------------------


def test_read_of_an_unknown_id_is_none(store: Store) -> None:
    assert store.read(12345) is None


def test_a_call_past_its_expiry_reads_as_expired(store: Store) -> None:
    (job_id,) = enqueue(store, job(expires=time.time() - 1))

    record = store.read(job_id)

    assert record is not None
    assert (record.state, record.error_type) == ("expired", "Expired")
    assert store.counts_by_queue()["default"]["expired"] == 1


def test_counts_by_queue_have_every_state(store: Store) -> None:
    assert store.counts_by_queue() == {}
    enqueue(store, job(), job(), job(queue="mail"), job(queue="mail", eta=time.time() + 60))
    store.claim("me", 60, time.time(), 1, queues=["default"])

    counts = store.counts_by_queue()

    assert set(counts) == {"default", "mail"}
    assert all(set(per) == set(STATES) for per in counts.values())
    assert counts["default"] == {**dict.fromkeys(STATES, 0), "queued": 1, "running": 1}
    assert counts["mail"] == {**dict.fromkeys(STATES, 0), "queued": 1, "scheduled": 1}


def test_next_scheduled_eta_is_the_earliest_waiting(store: Store) -> None:
    assert store.next_scheduled_eta() is None
    now = time.time()
    enqueue(store, job(eta=now + 90), job(eta=now + 30), job())

    assert store.next_scheduled_eta() == pytest.approx(now + 30)


# -- claims --------------------------------------------------------------------------------


def test_claims_take_the_best_first_priority_then_eta_then_id(store: Store) -> None:
    now = time.time()
    low, high, older, newer = enqueue(
        store, job(priority=-1), job(priority=5), job(eta=now - 10), job(eta=now - 5))

    claimed = store.claim("me", 60, time.time(), 10)

    assert [j.id for j in claimed] == [high, older, newer, low]
    assert all(j.attempt == 1 and j.counted and not j.suspect for j in claimed)
    assert all(state(store, i) == "running" for i in (low, high, older, newer))


def test_claim_takes_at_most_limit_and_only_the_queues_asked(store: Store) -> None:
    enqueue(store, job(), job(), job(queue="mail"), job(queue="mail"), job(queue="other"))

    assert len(store.claim("me", 60, time.time(), 1)) == 1
    mail = store.claim("me", 60, time.time(), 10, queues=["mail", "nothing"])
    assert [j.queue for j in mail] == ["mail", "mail"]
    assert store.claim("me", 60, time.time(), 0) == []
    assert {j.queue for j in store.claim("me", 60, time.time(), 10)} == {"default", "other"}


def test_scheduled_jobs_are_claimed_only_once_due_and_promoted(store: Store) -> None:
    now = time.time()
    due, later = enqueue(store, job(eta=now + 0.05), job(eta=now + 3600))
    wait_for(lambda: time.time() > now + 0.05)

    assert store.claim("me", 60, time.time(), 10) == []  # not promoted
    claimed = store.claim("me", 60, time.time(), 10, promote=True)

    assert [j.id for j in claimed] == [due]
    assert state(store, later) == "scheduled"


def test_calls_claimed_ahead_count_no_attempt_until_started(store: Store) -> None:
    ids = enqueue(store, *[job() for _ in range(4)])

    claimed = store.claim("me", 60, time.time(), 4, start_now=1)

    assert [j.counted for j in claimed] == [True, False, False, False]
    assert [j.id for j in claimed] == ids
    assert all(j.attempt == 1 for j in claimed)
    attempts = {i: store.read(i).attempts for i in ids}  # type: ignore[union-attr]
    assert list(attempts.values()) == [1, 0, 0, 0]


def test_start_now_zero_claims_everything_ahead(store: Store) -> None:
    enqueue(store, job(), job())
    claimed = store.claim("me", 60, time.time(), 2, start_now=0)
    assert [j.counted for j in claimed] == [False, False]


def test_record_start_counts_the_attempt_of_a_job_claimed_ahead(store: Store) -> None:
    (job_id,) = enqueue(store, job())
    (claimed,) = store.claim("me", 60, time.time(), 1, start_now=0)

    assert store.record_start("other", job_id, claimed.attempt, time.time()) == ([], False)
    assert store.record_start("me", job_id, claimed.attempt + 1, time.time()) == ([], False)
    assert store.record_start("me", job_id, claimed.attempt, time.time()) == ([], True)
    # the attempt number is the same before and after its start is recorded
    assert store.record_start("me", job_id, claimed.attempt, time.time()) == ([], True)

    record = store.read(job_id)
    assert record is not None and record.attempts == 1 and record.started_at is not None
    assert store.finish([done(job_id, "me", claimed.attempt)]) == [True]


def test_record_start_writes_the_outcomes_given_in_the_same_call(store: Store) -> None:
    first, second = enqueue(store, job(), job())
    a, b = store.claim("me", 60, time.time(), 2, start_now=1)

    written, ours = store.record_start("me", b.id, b.attempt, time.time(),
                                       [done(a.id, "me", a.attempt)])

    assert (written, ours) == ([True], True)
    assert state(store, first) == "done"
    assert store.read(second).attempts == 1  # type: ignore[union-attr]


def test_hand_out_order_puts_the_calls_that_start_now_first(store: Store) -> None:
    enqueue(store, job(priority=1), job(priority=9), job(priority=5))
    claimed = store.claim("me", 60, time.time(), 3, start_now=2)
    assert [(j.priority, j.counted) for j in claimed] == [(9, True), (5, True), (1, False)]


def test_no_two_consumers_ever_claim_the_same_job(location: str) -> None:
    seed = open_store(location)
    ids = enqueue(seed, *[job() for _ in range(300)])
    taken: dict[str, list[int]] = {}

    def consume(name: str) -> None:
        mine = open_store(location)
        got = taken.setdefault(name, [])
        while True:
            claimed = mine.claim(name, 60, time.time(), 7)
            if not claimed:
                break
            got.extend(j.id for j in claimed)
            mine.finish([done(j.id, name, j.attempt) for j in claimed])
        mine.close()

    threads = [threading.Thread(target=consume, args=(f"c{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    everything = [i for got in taken.values() for i in got]
    assert sorted(everything) == ids  # each exactly once
    assert seed.counts_by_queue()["default"]["done"] == 300


# -- finishing -----------------------------------------------------------------------------


def test_finish_writes_done_with_its_result(store: Store) -> None:
    (job_id,) = enqueue(store, job())
    (claimed,) = store.claim("me", 60, time.time(), 1)

    assert store.finish([done(job_id, "me", claimed.attempt, '{"a": 1}')]) == [True]

    record = store.read(job_id)
    assert record is not None
    assert (record.state, text(record.result), record.attempts) == ("done", '{"a": 1}', 1)
    assert record.finished_at is not None


def test_finish_writes_a_failure_and_a_retry(store: Store) -> None:
    failing, retried = enqueue(store, job(), job(max_attempts=3))
    a, b = store.claim("me", 60, time.time(), 2)
    eta = time.time() + 600

    written = store.finish([
        Outcome(a.id, "me", a.attempt, "failed", time.time(), error_type="ValueError",
                error_message="bad", traceback="Traceback ..."),
        Outcome(b.id, "me", b.attempt, "scheduled", time.time(), error_type="OSError",
                error_message="again", eta=eta),
    ])

    assert written == [True, True]
    fail = store.read(failing)
    assert fail is not None
    assert (fail.state, fail.error_type, fail.error_message, fail.traceback) == (
        "failed", "ValueError", "bad", "Traceback ...")
    retry = store.read(retried)
    assert retry is not None
    assert (retry.state, retry.attempts, retry.finished_at) == ("scheduled", 1, None)
    assert retry.eta == pytest.approx(eta)
    assert store.next_scheduled_eta() == pytest.approx(eta)
    (again,) = store.claim("me", 60, eta + 1, 1, promote=True)
    assert again.attempt == 2


def test_finish_is_guarded_by_owner_and_attempt(store: Store) -> None:
    (job_id,) = enqueue(store, job())
    (claimed,) = store.claim("me", 60, time.time(), 1)

    assert store.finish([done(job_id, "someone", claimed.attempt)]) == [False]
    assert store.finish([done(job_id, "me", claimed.attempt + 1)]) == [False]
    assert state(store, job_id) == "running"
    assert store.finish([done(job_id, "me", claimed.attempt)]) == [True]
    assert store.finish([done(job_id, "me", claimed.attempt)]) == [False]


def test_a_batch_writes_only_the_outcomes_that_still_own_their_job(store: Store) -> None:
    kept, lost = enqueue(store, job(), job())
    a, b = store.claim("me", 60, time.time(), 2)
    store.release("me", [(b.id, b.attempt)])

    written = store.finish([done(a.id, "me", a.attempt), done(b.id, "me", b.attempt)])

    assert written == [True, False]
    assert (state(store, kept), state(store, lost)) == ("done", "queued")


def test_exchange_writes_outcomes_and_claims_in_one_call(store: Store) -> None:
    first, second, third = enqueue(store, job(), job(), job())
    (a,) = store.claim("me", 60, time.time(), 1)

    written, claimed = store.exchange([done(a.id, "me", a.attempt)], "me", 60, time.time(), 5,
                                      start_now=1)

    assert written == [True]
    assert [(j.id, j.counted) for j in claimed] == [(second, True), (third, False)]
    assert state(store, first) == "done"
    assert store.exchange([], "me", 60, time.time(), 0) == ([], [])


def test_a_completed_attempt_whose_lease_was_taken_back_is_kept(store: Store) -> None:
    (job_id,) = enqueue(store, job(max_attempts=1))
    (stale,) = store.claim("frozen", -1.0, time.time(), 1)
    store.reap_expired(time.time())
    assert state(store, job_id) == "queued"  # a lost attempt gets one more run
    (rerun,) = store.claim("alive", 60, time.time(), 1)

    first = store.finish([done(job_id, "frozen", stale.attempt, "1")])
    second = store.finish([done(job_id, "alive", rerun.attempt, "2")])

    assert (first, second) == ([True], [False])
    record = store.read(job_id)
    assert record is not None and (record.state, text(record.result)) == ("done", "1")


def test_a_late_completion_of_an_attempt_never_recorded_counts_it(store: Store) -> None:
    # Given a call claimed ahead, whose consumer lost it before recording its start
    (job_id,) = enqueue(store, job())
    (stale,) = store.claim("frozen", -1.0, time.time(), 1, start_now=0)
    store.reap_expired(time.time())
    assert read_attempts(store, job_id) == 0

    # When that attempt completes after all
    assert store.finish([done(job_id, "frozen", stale.attempt, "1")]) == [True]

    # Then the call is done, and its attempt counts
    assert (state(store, job_id), read_attempts(store, job_id)) == ("done", 1)


def test_an_attempt_that_ends_clears_suspect(store: Store) -> None:
    # Given a call taken back from a dead consumer (suspect), run again and retried
    (job_id,) = enqueue(store, job(max_attempts=3))
    store.claim("dead", -1.0, time.time(), 1, start_now=0)
    store.reap_expired(time.time())
    (again,) = store.claim("me", 60, time.time(), 1, start_now=0)
    assert again.suspect
    store.record_start("me", job_id, again.attempt, time.time())
    store.finish([Outcome(job_id, "me", again.attempt, "queued", time.time(),
                          error_type="ValueError", error_message="retry")])

    # When it is claimed for its next attempt
    (next_,) = store.claim("me", 60, time.time(), 1, start_now=0)

    # Then it is no longer suspect: its start need not be recorded first
    assert not next_.suspect


def read_attempts(store: Store, job_id: int) -> int:
    record = store.read(job_id)
    assert record is not None
    return record.attempts


def test_a_late_failure_does_not_overwrite_a_call_taken_back(store: Store) -> None:
    (job_id,) = enqueue(store, job())
    (stale,) = store.claim("frozen", -1.0, time.time(), 1)
    store.reap_expired(time.time())

    written = store.finish([Outcome(job_id, "frozen", stale.attempt, "failed", time.time(),
                                    error_type="ValueError", error_message="late")])

    assert written == [False]
    assert state(store, job_id) == "queued"


# -- leases --------------------------------------------------------------------------------


def test_renew_extends_the_leases_of_the_owner_and_records_starts(store: Store) -> None:
    first, second = enqueue(store, job(), job())
    a, b = store.claim("me", -1.0, time.time(), 2, start_now=1)

    assert store.renew("me", 60, time.time(), [(b.id, b.attempt, time.time())]) == 2
    assert store.renew("nobody", 60, time.time()) == 0

    assert store.reap_expired(time.time()) == []
    assert store.read(second).attempts == 1  # type: ignore[union-attr]
    assert store.finish([done(a.id, "me", a.attempt), done(b.id, "me", b.attempt)]) == [
        True, True]


def test_release_puts_jobs_back_without_using_an_attempt(store: Store) -> None:
    ids = enqueue(store, job(), job(), job())
    claimed = store.claim("me", 60, time.time(), 3, start_now=2)

    assert store.release("me", [(claimed[0].id, claimed[0].attempt),
                                (claimed[1].id, claimed[1].attempt + 1)]) == 1
    assert store.release("other") == 0
    assert store.release("me") == 2

    assert [(state(store, i), store.read(i).attempts) for i in ids] == [  # type: ignore[union-attr]
        ("queued", 0)] * 3
    again = store.claim("me", 60, time.time(), 3)
    assert [j.attempt for j in again] == [1, 1, 1]


def test_reap_expired_requeues_what_started_and_frees_what_did_not(store: Store) -> None:
    ids = enqueue(store, *[job(max_attempts=3) for _ in range(3)])
    store.claim("dead", -1.0, time.time(), 3, start_now=1)

    reaped = store.reap_expired(time.time())

    assert sorted((r.id, r.owner, r.attempt, r.state, r.started) for r in reaped) == [
        (ids[0], "dead", 1, "queued", True),
        (ids[1], "dead", 1, "queued", False),
        (ids[2], "dead", 1, "queued", False)]
    records = [store.read(i) for i in ids]
    assert [(r.state, r.attempts, r.error_type) for r in records] == [  # type: ignore[union-attr]
        ("queued", 1, "WorkerLost"), ("queued", 0, "WorkerLost"), ("queued", 0, "WorkerLost")]
    # Taken from a dead consumer: suspect, so its next start is recorded before it runs
    again = store.claim("me", 60, time.time(), 3, start_now=0)
    assert all(j.suspect for j in again)
    assert [j.attempt for j in again] == [2, 1, 1]


def test_a_lost_attempt_past_the_last_fails_the_job(store: Store) -> None:
    (job_id,) = enqueue(store, job(max_attempts=2))
    for _ in range(2):
        store.claim("dead", -1.0, time.time(), 1)
        store.reap_expired(time.time())

    record = store.read(job_id)
    assert record is not None
    assert (record.state, record.attempts, record.error_type) == ("failed", 2, "WorkerLost")
    assert "no attempts remain" in (record.error_message or "")
    assert record.finished_at is not None


def test_a_lost_attempt_gets_one_more_run_even_with_no_retries(store: Store) -> None:
    (job_id,) = enqueue(store, job(max_attempts=1))
    store.claim("dead", -1.0, time.time(), 1)

    (reaped,) = store.reap_expired(time.time())

    assert (reaped.state, state(store, job_id)) == ("queued", "queued")


def test_reap_expired_never_takes_the_jobs_of_the_owners_in_mine(store: Store) -> None:
    (job_id,) = enqueue(store, job())
    store.claim("me", -1.0, time.time(), 1)

    assert store.reap_expired(time.time(), mine=("me",)) == []
    assert state(store, job_id) == "running"
    assert [r.id for r in store.reap_expired(time.time(), mine=("someone else",))] == [job_id]


def test_live_leases_are_not_reaped(store: Store) -> None:
    enqueue(store, job())
    store.claim("alive", 60, time.time(), 1)
    assert store.reap_expired(time.time()) == []


def test_a_lease_of_this_boot_is_read_on_the_monotonic_clock(store: Store, raw: Raw) -> None:
    # The wall-clock end of the lease is an hour ago (the wall clock stepped),
    # but it has a minute to go on this boot's monotonic clock.
    (job_id,) = enqueue(store, job())
    store.claim("other", 60, time.time(), 1)
    raw("UPDATE jobs SET lease_until = ?", time.time() - 3600)

    assert store.reap_expired(time.time()) == []

    # Held on another boot (another host), only the shared clock counts
    raw("UPDATE jobs SET lease_boot = 'another-boot'")
    assert [r.id for r in store.reap_expired(time.time())] == [job_id]


def test_a_lease_held_on_another_host_runs_until_it_ends(store: Store, raw: Raw) -> None:
    (job_id,) = enqueue(store, job())
    store.claim("elsewhere", 60, time.time(), 1)
    raw("UPDATE jobs SET lease_boot = 'another-boot', lease_mono = 0")

    assert store.reap_expired(time.time()) == []
    assert state(store, job_id) == "running"


def test_reap_owner_takes_back_every_running_job_of_a_dead_consumer(store: Store) -> None:
    ids = enqueue(store, job(max_attempts=2), job(max_attempts=2), job())
    store.claim("dead", 60, time.time(), 2)
    store.claim("alive", 60, time.time(), 1)

    reaped = store.reap_owner("dead", time.time())

    assert sorted(r.id for r in reaped) == ids[:2]
    assert all(r.state == "queued" and r.owner == "dead" for r in reaped)
    assert state(store, ids[2]) == "running"
    assert "its consumer died" in (store.read(ids[0]).error_message or "")  # type: ignore[union-attr]


# -- purging -------------------------------------------------------------------------------


def test_purge_finished_deletes_finished_rows_before_the_time_in_batches(store: Store) -> None:
    waiting = enqueue(store, job(), job(eta=time.time() + 60))
    finished = enqueue(store, *[job() for _ in range(7)])
    for job_id in finished:
        store.revoke(job_id, 1000.0)
    recent = enqueue(store, job())
    store.revoke(recent[0], time.time())

    assert store.purge_finished(before=2000.0, batch=2) == 7

    assert [store.read(i) for i in finished] == [None] * 7
    assert [state(store, i) for i in waiting] == ["queued", "scheduled"]
    assert state(store, recent[0]) == "revoked"


# -- consumers -----------------------------------------------------------------------------


def consumer(consumer_id: str, heartbeat: float = 1000.0) -> ConsumerInfo:
    return ConsumerInfo(consumer_id, "host", "boot", "pidns", 42, "123", "*", 4, 1000.0,
                        heartbeat)


def test_consumers_register_heartbeat_and_unregister(store: Store) -> None:
    assert store.consumers() == []
    store.register_consumer(consumer("a"))
    store.register_consumer(consumer("b"))
    store.register_consumer(consumer("a", heartbeat=1500.0))  # registering again replaces

    store.consumer_heartbeat("b", 2000.0)

    assert sorted((c.id, c.heartbeat_at) for c in store.consumers()) == [
        ("a", 1500.0), ("b", 2000.0)]
    assert next(c for c in store.consumers() if c.id == "a") == consumer("a", 1500.0)
    store.unregister_consumer("a")
    assert [c.id for c in store.consumers()] == ["b"]


# -- periodic tasks ------------------------------------------------------------------------


def test_sync_periodic_keeps_a_stored_slot_and_resets_on_a_new_crontab(store: Store) -> None:
    assert store.sync_periodic("report", "0 * * * *", 3600.0) == 3600.0
    assert store.sync_periodic("report", "0 * * * *", 7200.0) == 3600.0  # a restart
    assert store.sync_periodic("report", "*/5 * * * *", 300.0) == 300.0  # a new crontab
    assert store.periodic_slots() == [("report", "*/5 * * * *", 300.0)]


def test_fire_periodic_is_a_compare_and_set_on_the_slot(store: Store, other: Store) -> None:
    store.sync_periodic("tick", "* * * * *", 60.0)
    winner, loser = job(name="tick"), job(name="tick")

    assert store.fire_periodic("tick", 60.0, 120.0, winner, time.time()) == 120.0
    assert other.fire_periodic("tick", 60.0, 120.0, loser, time.time()) == 120.0

    assert state(store, winner.id) == "queued"
    assert store.read(loser.id) is None
    assert store.periodic_slots() == [("tick", "* * * * *", 120.0)]
    # a slot missed moves on without a call
    assert store.fire_periodic("tick", 120.0, 180.0, None, time.time()) == 180.0
    assert sum(store.counts_by_queue()["default"].values()) == 1


def test_each_slot_fires_once_whatever_the_number_of_schedulers(location: str) -> None:
    seed = open_store(location)
    seed.sync_periodic("tick", "* * * * *", 0.0)
    fired: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def schedule() -> None:
        mine = open_store(location)
        start.wait(10)
        for slot in range(20):
            new = job(name="tick")
            if mine.fire_periodic("tick", float(slot), float(slot + 1), new,
                                  time.time()) == slot + 1 and mine.read(new.id) is not None:
                with lock:
                    fired.append(slot)
        mine.close()

    threads = [threading.Thread(target=schedule) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert sorted(fired) == list(range(20))
    assert seed.counts_by_queue()["default"]["queued"] == 20


# -- wake-ups ------------------------------------------------------------------------------


def readable(fd: int, timeout: float) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(timeout * 1000))


def test_an_enqueue_elsewhere_wakes_a_listener_and_drain_quiets_it(store: Store,
                                                                 other: Store) -> None:
    listener = store.notifier.listen("consumer-1")
    assert listener is not None
    try:
        assert not readable(listener.fileno(), 0)

        enqueue(other, job())
        other.notifier.notify()

        assert readable(listener.fileno(), 10)
        assert listener.ready_in() == 0
        listener.drain()
        assert not readable(listener.fileno(), 0.05)
    finally:
        listener.close()
        listener.close()  # idempotent


def test_notify_without_a_listener_is_harmless(store: Store) -> None:
    store.notifier.notify()
    enqueue(store, job())
    store.notifier.notify()
    store.notifier.notify()


def test_sqlite_store_is_what_a_path_opens(tmp_path: Path) -> None:
    assert isinstance(open_store(str(tmp_path / "q.db")), SqliteStore)


# -- operating the queue (history, retry by hand, pause) -------------------------------------


def fail(job_id: int, owner: str, attempt: int, state: str = "failed") -> Outcome:
    return Outcome(job_id, owner, attempt, state, time.time(),  # type: ignore[arg-type]
                   error_type="ValueError", error_message="bad", traceback="tb")


def test_history_records_every_attempt_that_did_not_end_its_call_done(store: Store) -> None:
    (job_id,) = enqueue(store, job(max_attempts=3))
    (a,) = store.claim("c1", 60, time.time(), 1)
    assert store.finish([fail(job_id, "c1", a.attempt, "queued")]) == [True]
    store.claim("c2", -1.0, time.time(), 1)
    store.reap_expired(time.time())  # attempt 2 lost
    (c,) = store.claim("c3", 60, time.time(), 1)
    assert store.finish([done(job_id, "c3", c.attempt, "7")]) == [True]

    detail = store.job(job_id, time.time())

    assert detail is not None
    assert (detail.state, detail.attempts, text(detail.result)) == ("done", 3, "7")
    assert [(h.number, h.outcome, h.error_type, h.consumer) for h in detail.history] == [
        (1, "retry", "ValueError", "c1"), (2, "lost", "WorkerLost", "c2"), (3, "done", None, "c3")]
    assert store.job(10**15, time.time()) is None


def test_retry_queues_a_failed_call_again_and_numbering_goes_on(store: Store) -> None:
    (job_id,) = enqueue(store, job())
    (a,) = store.claim("me", 60, time.time(), 1)
    store.finish([fail(job_id, "me", a.attempt)])
    (queued,) = enqueue(store, job())

    assert store.retry(job_id, time.time()) == "failed"
    assert store.retry(queued, time.time()) == "queued"  # not retried: it waits already
    assert store.retry(10**15, time.time()) is None

    claimed = {j.id: j for j in store.claim("me", 60, time.time(), 2)}
    again = claimed[job_id]
    assert again.attempt == 1  # a fresh count of attempts
    store.finish([done(job_id, "me", again.attempt)])
    detail = store.job(job_id, time.time())
    assert detail is not None and detail.attempts == 2
    assert [h.number for h in detail.history] == [1, 2]


def test_jobs_lists_a_selection_newest_first(store: Store) -> None:
    from minique.store.selection import Selection

    first, second, third = enqueue(store, job(), job(queue="mail"), job())
    (a,) = store.claim("me", 60, time.time(), 1)
    store.finish([fail(a.id, "me", a.attempt)])

    everything = store.jobs(Selection(), 10, time.time())
    assert [j.id for j in everything] == [third, second, first]
    failed = store.jobs(Selection(states=("failed",)), 10, time.time())
    assert [(j.id, j.state, len(j.history)) for j in failed] == [(first, "failed", 1)]
    mail = store.jobs(Selection(states=("queued",), queues=("mail",)), 10, time.time())
    assert [j.id for j in mail] == [second]
    assert len(store.jobs(Selection(), 2, time.time())) == 2


def test_retry_failed_and_purge_work_on_selections(store: Store) -> None:
    from minique.store.selection import Selection

    ids = enqueue(store, *[job() for _ in range(4)])
    for claimed in store.claim("me", 60, time.time(), 3):
        store.finish([fail(claimed.id, "me", claimed.attempt)])

    assert store.retry_failed(None, ["other-task"], time.time()) == 0
    assert store.retry_failed(None, None, time.time()) == 3
    with pytest.raises(ValueError):
        store.purge(Selection(), time.time())
    assert store.purge(Selection(states=("queued",)), time.time()) == 4
    assert [store.read(i) for i in ids] == [None] * 4


def test_revoke_all_and_restore_all(store: Store) -> None:
    ids = enqueue(store, job(name="mail"), job(name="mail", eta=time.time() + 600),
                  job(name="other"))
    store.revoke(ids[0], time.time())  # revoked on its own: stays revoked

    assert store.revoke_all("mail", time.time()) == 1
    assert store.restore_all("mail", time.time()) == 1
    assert [state(store, i) for i in ids] == ["revoked", "scheduled", "queued"]


def test_a_paused_queue_is_not_claimed_until_resumed(store: Store) -> None:
    enqueue(store, job(queue="mail"), job())

    assert store.pause("mail", 1000.0) is True
    assert store.pause("mail", 2000.0) is False
    assert store.paused() == {"mail": 1000.0}
    assert [j.queue for j in store.claim("me", 60, time.time(), 5)] == ["default"]
    assert store.claim("me", 60, time.time(), 5, queues=["mail"]) == []

    assert store.resume("mail") is True
    assert store.resume("mail") is False
    assert [j.queue for j in store.claim("me", 60, time.time(), 5)] == ["mail"]
    assert store.running() == {"me": sorted(store.running()["me"])}
    assert len(store.running()["me"]) == 2
