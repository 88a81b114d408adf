"""The SQLite store: every statement minique runs, each named after what it does.

Writes are short ``BEGIN IMMEDIATE`` transactions (no lock upgrade can
deadlock); reads run in autocommit and are always fetched to the end, so no
read transaction stays open to stop WAL checkpoints. Each thread has its own
connection, opened on first use. The tables are peewee models (models.py),
rendered to DDL when a file is created or upgraded (schema.py).
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from ..clock import boot_id, real_monotonic
from ..errors import (
    ConfigurationError,
    DatabaseError,
    DuplicateJobId,
    MiniqueError,
    SchemaVersionError,
)
from . import sqlite_sql as sql
from .reaping import reap
from .records import (
    STATES,
    ClaimedJob,
    ConsumerInfo,
    JobDetail,
    JobRecord,
    NewJob,
    Outcome,
    Reaped,
    State,
    attempt_outcome,
)
from .schema import SCHEMA_VERSION, upgrade
from .selection import (
    REVOKED_ALL,
    Part,
    Selection,
    detail,
    parts,
)
from .sqlite_files import Connections
from .sqlite_notifier import SqliteNotifier

log = logging.getLogger("minique")

Synchronous = Literal["off", "normal", "full", "extra"]
_SYNCHRONOUS = ("off", "normal", "full", "extra")

# A checkpoint copies the WAL into the database and, unless synchronous=off,
# fsyncs both: far too slow for the commit that happens to trigger it. Running
# consumers checkpoint from their scheduler thread (see ``checkpoint``); this
# automatic one is only the safety net that bounds the WAL (~10 MB with our
# pages) when no consumer runs.
AUTOCHECKPOINT_PAGES = 10_000
# Each commit appends whole pages to the WAL (an enqueue: a page of the table
# and one of the ready index), and synchronous=normal fsyncs all of them at the
# next checkpoint: with 1 KiB pages a commit writes, checksums and syncs a
# quarter of the bytes of SQLite's default 4 KiB. Rows are small (a long
# traceback spills into overflow pages). Only a new file takes it; a file made
# with other pages keeps them.
PAGE_SIZE = 1024
# With synchronous=full every commit fsyncs the WAL anyway, and an fsync is
# cheaper while the WAL file keeps its size: let SQLite restart it early.
AUTOCHECKPOINT_PAGES_FULL = 1_000
WAL_RESTART_BYTES = 16 * 1024 * 1024
CHECKPOINT_AFTER_COMMITS = 500
RESTART_WAIT_MS = 100
# SQLite's busy handler sleeps 1, 2, 5, 10 ... then 100 ms between tries, so a
# writer that has waited a while sleeps through many moments when the lock was
# free (4 producer processes: the slowest call took 107-335 ms). Each wait is
# cut into slices of this length, each starting SQLite's back-off anew, until
# busy_timeout is spent: sleeps stay under 20 ms (slowest call 64-243 ms,
# typically 76; see docs/benchmarks.md).
BUSY_SLICE_MS = 50

# An operator's batch: short enough that producers and consumers wait for it
# a few milliseconds at most.
ADMIN_BATCH = 500

def _claimed(row: tuple[object, ...]) -> ClaimedJob:
    job = ClaimedJob(*row[:9])  # type: ignore[arg-type]
    job.counted, job.suspect = bool(row[9]), bool(row[10])
    # Only a write around minique's checks stores a field of the wrong type;
    # the consumer fails that call with the reason instead of choking on it.
    problems = []
    if type(job.priority) is not int:
        problems.append(f"its priority {job.priority!r} is not an integer")
        job.priority = 0
    if not isinstance(job.eta, int | float):
        problems.append(f"its eta {job.eta!r} is not a number")
        job.eta = 0.0
    if job.expires is not None and not isinstance(job.expires, int | float):
        problems.append(f"its expiry {job.expires!r} is not a number")
        job.expires = None
    if type(job.max_attempts) is not int:
        problems.append(f"its max_attempts {job.max_attempts!r} is not an integer")
        job.max_attempts = job.attempt
    if problems:
        job.problem = "; ".join(problems)
    return job


# Outcomes that write no history row: a done attempt is recorded by its job's
# row, and an expired call never started.
_NO_HISTORY = frozenset({"done", "expired"})


def _history_row(outcome: Outcome) -> tuple[object, ...]:
    # The attempt's number in the call's whole life: earlier_attempts + attempt.
    return (outcome.attempt, outcome.started_at, outcome.finished_at, attempt_outcome(outcome),
            outcome.error_type, outcome.error_message, outcome.traceback, outcome.owner,
            outcome.id)


def _hand_out_order(job: ClaimedJob) -> tuple[bool, int, float, int]:
    return (not job.counted, -job.priority, job.eta, job.id)


def _job_row(job: NewJob, state: str) -> tuple[object, ...]:
    return (job.id, job.name, job.queue, job.priority, state, job.payload, job.eta, job.expires,
            job.max_attempts, job.created_at)


class _Checkpointer:
    """A background thread that checkpoints for the threads that commit.

    Without it, the commit that crosses SQLite's autocheckpoint threshold
    copies the WAL and fsyncs it and the database: tens of milliseconds, in
    the caller's thread, now and then. Producers and consumers alike poke this
    thread every CHECKPOINT_AFTER_COMMITS commits instead.
    """

    def __init__(self, store: SqliteStore) -> None:
        self._store = weakref.ref(store)
        self._wanted = threading.Event()
        self._pid = 0

    def poke(self) -> None:
        if self._pid != os.getpid():  # first use, or a forked child: no thread yet
            self._pid = os.getpid()
            threading.Thread(target=self._run, name="minique-checkpointer", daemon=True).start()
        self._wanted.set()

    def _run(self) -> None:
        while self._wanted.wait():
            self._wanted.clear()
            store = self._store()
            if store is None:
                return
            try:
                store.checkpoint()
            except MiniqueError as exc:
                log.warning("background checkpoint failed (it will be tried again): %s", exc)
            del store


_stores: weakref.WeakSet[SqliteStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A connection inherited across fork() must never be used by the child:
    # both processes would share one SQLite handle and its locks.
    for store in list(_stores):
        store._forget_connections()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class SqliteStore:
    """Moves job rows through their states in one SQLite file.

    Safe to share between threads (one connection per thread) and between
    processes (WAL, IMMEDIATE transactions, a busy timeout).
    """

    def __init__(
        self, path: str | os.PathLike[str], synchronous: Synchronous = "normal",
        busy_timeout: float = 30.0,
    ) -> None:
        if synchronous not in _SYNCHRONOUS:
            raise ConfigurationError(
                f"synchronous={synchronous!r} is not a SQLite setting; use 'normal' (survives "
                "any process crash) or 'full' (also survives power loss)"
            )
        self.path = Path(path)
        self.location = str(self.path.resolve())
        self.synchronous = synchronous
        self.busy_timeout = busy_timeout
        self._check_path()
        self._slice_ms = min(BUSY_SLICE_MS, math.ceil(busy_timeout * 1000))
        self._db = self._make_database()
        self._ready = False
        self._commits = 0
        self._checkpointer = _Checkpointer(self)
        self._init_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._boot = boot_id()
        self.notifier = SqliteNotifier(self.path)
        _stores.add(self)

    # -- connections and errors ------------------------------------------------

    def _make_database(self) -> Connections:
        autocheckpoint = AUTOCHECKPOINT_PAGES if self.synchronous in ("off", "normal") \
            else AUTOCHECKPOINT_PAGES_FULL
        return Connections(
            self.path, self.busy_timeout,
            [("page_size", PAGE_SIZE), ("journal_mode", "wal"), ("synchronous", self.synchronous),
             ("foreign_keys", 0), ("wal_autocheckpoint", autocheckpoint),
             # when the WAL starts over, cut the file back to this size
             ("journal_size_limit", WAL_RESTART_BYTES)],
            self._slice_ms,
        )

    def _forget_connections(self) -> None:
        self._db = self._make_database()
        # Another thread may have held these at fork; the child has no such thread.
        self._init_lock = threading.Lock()
        self._write_lock = threading.Lock()

    def _check_path(self) -> None:
        folder = self.path.parent
        if not folder.is_dir():
            raise ConfigurationError(
                f"cannot open the queue database {self.path}: the folder {folder} does not "
                "exist; create it or point Minique at a path in an existing folder"
            )
        if self.path.exists() and not os.access(self.path, os.W_OK):
            raise ConfigurationError(
                f"the queue database {self.path} is read-only; minique must write to it "
                "(give this user write permission on the file and its folder)"
            )
        if not os.access(folder, os.W_OK):
            raise ConfigurationError(
                f"the folder {folder} of the queue database is read-only; SQLite needs to "
                "create its -wal and -shm files beside the database, so make it writable"
            )

    def _translate(self, exc: sqlite3.Error) -> Exception:
        text = str(exc)
        if isinstance(exc, sqlite3.IntegrityError) and "jobs.id" in text:
            return DuplicateJobId("another process chose the same job id; try again")
        if "locked" in text or "busy" in text:
            return DatabaseError(
                f"the queue database {self.path} stayed locked for {self.busy_timeout:g} s: "
                "another connection holds a long write transaction (an open sqlite3 shell, "
                "a backup, a stuck process?); end it and try again"
            )
        if "readonly" in text:
            return ConfigurationError(
                f"cannot write to the queue database {self.path}: it is read-only ({text}); "
                "give this user write permission on the file and its folder"
            )
        if "unable to open" in text:
            return ConfigurationError(
                f"cannot open the queue database {self.path} ({text}); check that the path "
                "is right and its folder exists and is writable"
            )
        if "malformed" in text or "not a database" in text:
            return DatabaseError(
                f"the queue database {self.path} is damaged or is not a SQLite file ({text}); "
                "restore it from a backup or point Minique at another path"
            )
        if "disk i/o error" in text.lower():
            gone = [f"{self.path}{n}" for n in ("-wal", "-shm")
                    if not os.path.exists(f"{self.path}{n}")]
            if gone:
                return DatabaseError(
                    f"cannot use the queue database {self.path}: {gone[0]} was deleted while "
                    f"the database was in use ({text}). Stop every process that uses "
                    f"{self.path}, then start them again; never delete the files beside a "
                    "database in use (see docs/guarantees.md)"
                )
            return DatabaseError(
                f"disk I/O error on the queue database {self.path} ({text}): check that the "
                "disk is not full or failing, and that no file beside the database (-wal, "
                "-shm) was deleted or moved while in use"
            )
        if isinstance(exc, sqlite3.ProgrammingError) and "closed" in text:
            return DatabaseError(
                f"the connection to the queue database {self.path} was closed under this "
                "call: its files were replaced and minique reopened it (see the log). "
                "Nothing of this call was stored; make it again"
            )
        return DatabaseError(f"SQLite error on {self.path}: {text}")

    def _conn(self) -> sqlite3.Connection:
        if not self._ready:
            self._initialize()
        try:
            return self._db.get()
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        # Threads of one process queue on a lock that hands over at once;
        # SQLite's own busy handler would sleep a millisecond or more.
        with self._write_lock:
            try:
                self._execute(conn, "BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._translate(exc) from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self._translate(exc) from exc
                raise
        self._committed()

    def _execute(self, conn: sqlite3.Connection, sql: str,
                 params: Sequence[object] = ()) -> sqlite3.Cursor:
        """``conn.execute``, tried again while the file is locked, for up to busy_timeout.

        Only for a statement that starts a transaction (or is one): when it
        meets a lock it has done nothing yet, so trying again is safe.
        """
        slice_s = self._slice_ms / 1000
        deadline = previous = 0.0
        while True:
            try:
                return conn.execute(sql, params)
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                    raise
                now = real_monotonic()
                if not deadline:  # SQLite has waited one slice already
                    deadline = now + self.busy_timeout - slice_s
                elif now - previous < slice_s / 2:
                    # SQLite gave up without waiting (a build without usleep()
                    # cannot sleep under a second): wait the slice here instead.
                    time.sleep(slice_s)
                    now = real_monotonic()
                if now >= deadline:
                    raise
                previous = now

    def _committed(self) -> None:
        self._commits += 1
        if self._commits >= CHECKPOINT_AFTER_COMMITS:
            self._commits = 0
            # The commit is done: a checkpointer that cannot start (no thread
            # left) must not make it look failed to the caller.
            try:
                self._checkpointer.poke()
            except RuntimeError as exc:
                log.warning("could not start the background checkpoint: %s", exc)

    def _read(self, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
        conn = self._conn()
        try:
            return self._execute(conn, sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc

    def _initialize(self) -> None:
        with self._init_lock:
            if self._ready:
                return
            try:
                self._migrate(self._db.get())
            except sqlite3.Error as exc:
                raise self._translate(exc) from exc
            # A new file's -wal and -shm exist from its first write on.
            self._db.note_files()
            self._ready = True

    def _migrate(self, conn: sqlite3.Connection) -> None:
        (version,) = self._execute(conn, "PRAGMA user_version").fetchone()
        if version == SCHEMA_VERSION:
            return
        if version < 0:  # sqlite_files refuses it first; this keeps upgrade() from ever seeing it
            raise DatabaseError(
                f"the queue database {self.path} has schema version {version}, which no "
                "minique writes: another program changed its PRAGMA user_version"
            )
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"the queue database {self.path} has schema version {version}, written by a "
                f"newer minique; this one knows up to version {SCHEMA_VERSION}: upgrade minique"
            )
        self._execute(conn, "BEGIN IMMEDIATE")
        try:
            # Another process may have migrated while we waited for the lock.
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            # Every step from there, all in this transaction.
            for statement in upgrade(version):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        self._db.close()

    # -- producers ---------------------------------------------------------------

    def enqueue(self, jobs: Sequence[NewJob], now: float) -> None:
        """Store ``jobs`` in one transaction: ``queued``, or ``scheduled`` if their eta is later."""
        if len(jobs) == 1:
            # One INSERT is its own transaction: no BEGIN and COMMIT round trips
            # on the hottest path a producer has.
            job = jobs[0]
            conn = self._conn()
            try:
                with self._write_lock:
                    self._execute(conn, sql.ENQUEUE,
                                  _job_row(job, "scheduled" if job.eta > now else "queued"))
            except sqlite3.Error as exc:
                raise self._translate(exc) from exc
            self._committed()
            return
        rows = [_job_row(j, "scheduled" if j.eta > now else "queued") for j in jobs]
        with self._write() as conn:
            conn.executemany(sql.ENQUEUE, rows)

    def record_finished(self, job: NewJob, outcome: Outcome,
                        earlier: Sequence[Outcome] = ()) -> None:
        """Store a call that already ran (immediate mode) and its outcome, in one transaction.

        ``earlier`` are the outcomes of the attempts before the last (retried
        at once), for its history.
        """
        with self._write() as conn:
            conn.execute(sql.ENQUEUE, _job_row(job, "running"))
            conn.execute(
                sql.MARK_RAN_HERE,
                (outcome.owner, outcome.attempt, job.created_at, job.id),
            )
            if earlier:
                conn.executemany(sql.HISTORY_ADD, [_history_row(o) for o in earlier])
            self._finish_in(conn, [outcome])

    def revoke(self, job_id: int, now: float) -> bool:
        """Mark a job that has not started ``revoked``; True if it will not run."""
        with self._write() as conn:
            if conn.execute(sql.REVOKE, (now, job_id)).rowcount:
                return True
            row = conn.execute(sql.STATE_OF, (job_id,)).fetchall()
        return bool(row) and row[0][0] in ("revoked", "expired")

    # -- readers -------------------------------------------------------------------

    def read(self, job_id: int) -> JobRecord | None:
        """The job's row, or None if there is none (never stored, or purged)."""
        rows = self._read(sql.READ, (job_id,))
        if not rows:
            return None
        record = JobRecord(*rows[0])  # type: ignore[arg-type]
        if record.state in ("queued", "scheduled") and record.expires is not None \
                and record.expires <= time.time():
            # Past its deadline it will never run: say so now, even if no
            # consumer has reached it yet to write the state down.
            record.state = "expired"
            record.error_type = "Expired"
            record.error_message = "the call was not started before it expired"
        return record

    def counts_by_queue(self) -> dict[str, dict[str, int]]:
        """``{queue: {state: count}}`` with every state present, zeros included."""
        result: dict[str, dict[str, int]] = {}
        for queue, state, count in self._read(sql.COUNTS, (time.time(),)):
            per_queue = result.setdefault(str(queue), dict.fromkeys(STATES, 0))
            per_queue[str(state)] = int(count)  # type: ignore[call-overload]
        return result

    def checkpoint(self) -> None:
        """Copy committed WAL pages into the database file, keeping the WAL small.

        Consumers call it often, off the hot path, so that producers' commits
        never pay for a checkpoint. A passive checkpoint blocks no one, but
        under a steady stream of commits it never catches up and the WAL only
        grows; past WAL_RESTART_BYTES the checkpoint briefly holds writers
        back so that it can finish and the WAL can start over.

        It also looks, with three ``stat`` calls, for the database's files
        deleted or replaced under this process: it says so in the log, copies
        a deleted -wal's commits into the database, and reopens the database
        when that is safe (see ``Connections.check``).
        """
        try:
            self._db.check(self._write_lock)
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc
        try:
            size = os.stat(f"{self.path}-wal").st_size
        except OSError:
            return
        if size <= WAL_RESTART_BYTES:
            self._read("PRAGMA wal_checkpoint(PASSIVE)")
            return
        # RESTART holds writers back until readers let go: never for long. If a
        # reader stays (an open sqlite3 shell), give up now and try next time.
        self._read(f"PRAGMA busy_timeout = {RESTART_WAIT_MS}")
        try:
            self._read("PRAGMA wal_checkpoint(RESTART)")
        finally:
            self._read(f"PRAGMA busy_timeout = {self._slice_ms}")

    def maintenance(self) -> None:
        """Called about once a second by each consumer: keep the WAL small."""
        self.checkpoint()

    def changes(self) -> int:
        """A number that changes whenever another connection commits to the file."""
        (row,) = self._read("PRAGMA data_version")
        version = row[0]
        assert isinstance(version, int)
        return version

    def next_scheduled_eta(self) -> float | None:
        """The earliest eta of a scheduled job, or None if none waits."""
        (row,) = self._read(sql.NEXT_SCHEDULED)
        return None if row[0] is None else float(row[0])  # type: ignore[arg-type]

    # -- consumers ---------------------------------------------------------------

    def claim(
        self, owner: str, lease: float, now: float, limit: int,
        queues: Sequence[str] | None = None, promote: bool = False, start_now: int | None = None,
    ) -> list[ClaimedJob]:
        """Take up to ``limit`` ready jobs for ``owner``, best first, for ``lease`` seconds.

        The first ``start_now`` (default: all) are counted as started at once;
        the others are claimed ahead and count their attempt only once their
        start is recorded (see ``record_start``). With ``promote``, scheduled
        jobs whose eta has come are made ready first, in the same transaction.
        """
        return self.exchange((), owner, lease, now, limit, queues, promote, start_now)[1]

    def finish(self, outcomes: Sequence[Outcome]) -> list[bool]:
        """Write how attempts ended, all in one transaction.

        Returns, per outcome, whether it was written: False means the attempt
        no longer owned the job (its lease was taken back) and was ignored.
        """
        return self.exchange(outcomes, "", 0.0, 0.0, 0)[0]

    def exchange(
        self, outcomes: Sequence[Outcome], owner: str, lease: float, now: float,
        limit: int, queues: Sequence[str] | None = None, promote: bool = False,
        start_now: int | None = None,
    ) -> tuple[list[bool], list[ClaimedJob]]:
        """``finish`` these outcomes and ``claim`` up to ``limit`` jobs, in one transaction.

        One commit for both halves is what lets a busy consumer finish and
        claim in batches at the cost of a single (possibly fsynced) commit.
        """
        rows: list[tuple[object, ...]] = []
        with self._write() as conn:
            written = self._finish_in(conn, outcomes) if outcomes else []
            if limit > 0:
                if promote:
                    conn.execute(sql.PROMOTE_DUE, (now,))
                rows = self._claim_in(conn, owner, lease, now, limit, queues,
                                      limit if start_now is None else start_now)
        jobs = [_claimed(row) for row in rows]
        # RETURNING gives no order; hand them out best first, those that
        # start now before those claimed ahead.
        jobs.sort(key=_hand_out_order)
        return written, jobs

    def _claim_in(self, conn: sqlite3.Connection, owner: str, lease: float, now: float,
                  limit: int, queues: Sequence[str] | None,
                  start_now: int) -> list[tuple[object, ...]]:
        where = f" AND queue IN ({','.join('?' * len(queues))})" if queues else ""
        # Read in the claim's own transaction: no claim that begins after a
        # pause commits takes a call of that queue. (A tiny table, empty but
        # for an outage: the claim itself is unchanged while none is paused.)
        paused = [queue for (queue,) in conn.execute(sql.PAUSED).fetchall()]
        if paused:
            if queues:
                queues = [q for q in queues if q not in paused]
                if not queues:
                    return []
                where = f" AND queue IN ({','.join('?' * len(queues))})"
            else:
                where = f" AND queue NOT IN ({','.join('?' * len(paused))})"
                queues = paused
        lease_params = (owner, now + lease, self._boot, real_monotonic() + lease)
        rows: list[tuple[object, ...]] = []
        start_now = max(0, min(start_now, limit))
        if start_now:
            rows = conn.execute(sql.CLAIM_NOW.format(queues=where),
                                (*lease_params, now, *(queues or ()), start_now)).fetchall()
        if limit > len(rows) and len(rows) == start_now:
            rows += conn.execute(sql.CLAIM_AHEAD.format(queues=where),
                                 (*lease_params, *(queues or ()), limit - len(rows))).fetchall()
        return rows

    def _finish_in(self, conn: sqlite3.Connection, outcomes: Sequence[Outcome]) -> list[bool]:
        rows = [(o.state, o.eta, o.result, o.error_type, o.error_message, o.traceback,
                 o.finished_at if o.state in ("done", "failed", "expired") else None,
                 o.started_at, o.attempt, o.id, o.owner, o.attempt) for o in outcomes]
        # One executemany for the batch; its rowcount says whether every
        # outcome still owned its job. Almost always it does; when not, redo the
        # batch row by row to learn which ones were taken back.
        conn.execute("SAVEPOINT finish")
        if conn.executemany(sql.FINISH, rows).rowcount == len(rows):
            conn.execute("RELEASE finish")
            # Attempts that ended their call done need no history row (the
            # job's row is their record): the common case writes nothing more.
            history = [_history_row(o) for o in outcomes if o.state not in _NO_HISTORY]
            if history:
                conn.executemany(sql.HISTORY_ADD, history)
            return [True] * len(rows)
        conn.execute("ROLLBACK TO finish")
        conn.execute("RELEASE finish")
        written = []
        for outcome, row in zip(outcomes, rows, strict=True):
            ok = conn.execute(sql.FINISH, row).rowcount == 1
            if ok and outcome.state not in _NO_HISTORY:
                conn.execute(sql.HISTORY_ADD, _history_row(outcome))
            if not ok and outcome.state == "done":
                ok = conn.execute(sql.FINISH_LATE, (
                    outcome.result, outcome.finished_at, outcome.started_at, outcome.attempt,
                    outcome.id,
                )).rowcount == 1
                if ok:
                    # Its history row said lost: it says done now.
                    conn.execute(sql.HISTORY_ADD, _history_row(outcome))
                    log.warning("job %s finished after its lease was taken back; its result "
                                "is kept and it will not run again", outcome.id)
            written.append(ok)
        return written

    def record_start(self, owner: str, job_id: int, attempt: int, now: float,
                     outcomes: Sequence[Outcome] = ()) -> tuple[list[bool], bool]:
        """Count the attempt of a job claimed ahead, before it runs, and ``finish`` these outcomes.

        Returns what ``finish`` returns, and whether the start was recorded
        (False: the job is no longer ``owner``'s, and must not run).
        """
        with self._write() as conn:
            written = self._finish_in(conn, outcomes) if outcomes else []
            ours = conn.execute(sql.RECORD_START, (now, job_id, owner, attempt)).rowcount
            return written, ours == 1

    def renew(self, owner: str, lease: float, now: float,
              started: Sequence[tuple[int, int, float]] = ()) -> int:
        """Extend for ``lease`` seconds the lease of every job ``owner`` holds.

        ``started`` are ``(id, attempt, started_at)`` of jobs claimed ahead that
        have been running since: their attempts are recorded as started in the
        same transaction. Returns the number of leases renewed.
        """
        with self._write() as conn:
            if started:
                conn.executemany(sql.RECORD_START, [(at, job_id, owner, attempt)
                                                 for job_id, attempt, at in started])
            return conn.execute(sql.RENEW, (now + lease, real_monotonic() + lease,
                                         owner)).rowcount

    def release(self, owner: str, jobs: Sequence[tuple[int, int]] | None = None) -> int:
        """Put back jobs ``owner`` holds (all, or these ``(id, attempt)``).

        A released job has not used an attempt: it runs again as if never claimed.
        """
        with self._write() as conn:
            if jobs is None:
                return conn.execute(sql.RELEASE, (owner,)).rowcount
            return sum(conn.execute(sql.RELEASE_ONE, (owner, job_id, attempt)).rowcount
                       for job_id, attempt in jobs)

    def reap_expired(self, now: float, mine: Sequence[str] = ()) -> list[Reaped]:
        """Take back running jobs whose lease ran out: requeued, or failed if out of attempts.

        Jobs of the consumers in ``mine`` are never taken: they are alive and
        this is their own process. A lease held on this kernel boot is read on
        the monotonic clock, so a step of the wall clock cannot expire it.
        """
        cond = sql.EXPIRED.format(mine=",".join("?" * len(mine)))
        params = (*mine, self._boot, real_monotonic(), now)
        # Looked for first without the write lock: almost always there is
        # nothing to reap, and producers should not wait for us to find that out.
        if not self._read(sql.ANY_EXPIRED.format(mine=",".join("?" * len(mine))), params):
            return []
        return self._reap(cond, params, now, "its lease expired")

    def reap_owner(self, owner: str, now: float) -> list[Reaped]:
        """Take back every running job of a consumer known to be dead."""
        return self._reap("owner = ?", (owner,), now, "its consumer died")

    def _reap(self, cond: str, params: tuple[object, ...], now: float,
              why: str) -> list[Reaped]:
        with self._write() as conn:
            return reap(conn, sql, cond, params, now, why)

    def purge_finished(self, before: float, batch: int = 1000,
                       batches: int | None = None) -> int:
        """Delete finished jobs older than ``before`` and their history, a batch per transaction.

        Stops after ``batches`` batches if given (a producer's cheap sweep).
        Returns the number deleted.
        """
        total = 0
        done = 0
        while True:
            with self._write() as conn:
                ids = conn.execute(sql.PURGE, (before, batch)).fetchall()
                conn.executemany(sql.HISTORY_DELETE, ids)
            total += len(ids)
            done += 1
            if len(ids) < batch or (batches is not None and done >= batches):
                return total

    def register_consumer(self, info: ConsumerInfo) -> None:
        """Record a consumer's identity so that others can tell when it is gone."""
        with self._write() as conn:
            conn.execute(sql.REGISTER_CONSUMER, (
                info.id, info.hostname, info.boot_id, info.pid_ns, info.pid, info.pid_start,
                info.queues, info.workers, info.started_at, info.heartbeat_at,
            ))

    def consumer_heartbeat(self, consumer_id: str, now: float) -> None:
        """Note that a consumer is alive."""
        with self._write() as conn:
            conn.execute(sql.CONSUMER_HEARTBEAT, (now, consumer_id))

    def unregister_consumer(self, consumer_id: str) -> None:
        """Forget a consumer (it stopped, or it is known dead and its jobs were reaped)."""
        with self._write() as conn:
            conn.execute(sql.UNREGISTER_CONSUMER, (consumer_id,))

    def consumers(self) -> list[ConsumerInfo]:
        """Every registered consumer."""
        return [ConsumerInfo(*row) for row in self._read(sql.CONSUMERS)]  # type: ignore[arg-type]

    # -- periodic tasks --------------------------------------------------------------

    def sync_periodic(self, name: str, crontab: str, first_fire: float) -> float:
        """Make sure ``name`` has a slot for this crontab; its stored next fire time.

        A new task (or one whose crontab changed) starts at ``first_fire``;
        an existing slot is kept, so restarts never fire a slot twice.
        """
        with self._write() as conn:
            conn.execute(sql.PERIODIC_ADD, (name, crontab, first_fire))
            conn.execute(sql.PERIODIC_RESET, (crontab, first_fire, name, crontab))
            row = conn.execute(sql.PERIODIC_SLOT, (name,)).fetchall()
        return float(row[0][1])

    def fire_periodic(self, name: str, slot: float, next_fire: float,
                      job: NewJob | None, now: float) -> float:
        """Move ``name`` from ``slot`` to ``next_fire`` and, if given, enqueue ``job``, atomically.

        Returns the slot now stored: ``next_fire`` if this call won the
        compare-and-set (and the job was enqueued), otherwise whatever another
        consumer stored (and nothing was enqueued).
        """
        with self._write() as conn:
            if conn.execute(sql.PERIODIC_ADVANCE, (next_fire, name, slot)).rowcount == 1:
                if job is not None:
                    state = "scheduled" if job.eta > now else "queued"
                    conn.execute(sql.ENQUEUE, _job_row(job, state))
                return next_fire
            row = conn.execute(sql.PERIODIC_SLOT, (name,)).fetchall()
        return float(row[0][1]) if row else next_fire

    def periodic_slots(self) -> list[tuple[str, str, float]]:
        """``(name, crontab, next_fire)`` of every stored periodic slot."""
        return [(str(n), str(c), float(f)) for n, c, f in self._read(sql.PERIODIC_ALL)]  # type: ignore[arg-type]


    # -- operating the queue -----------------------------------------------------------

    def job(self, job_id: int, now: float) -> JobDetail | None:
        """Everything stored about a job, with its history; None if there is none."""
        rows = self._read(sql.DETAIL, (job_id,))
        if not rows:
            return None
        return detail(rows[0], self._read(sql.HISTORY_OF, (job_id,)), now)

    def jobs(self, selection: Selection, limit: int, now: float) -> list[JobDetail]:
        """Up to ``limit`` jobs of ``selection``, newest first, each with its history."""
        found: list[tuple[object, ...]] = []
        for part in parts(selection, now):
            found += self._read(sql.LIST.format(where=part.where), (*part.params, limit))
        found.sort(key=lambda row: row[0], reverse=True)  # type: ignore[arg-type, return-value]
        found = found[:limit]
        history: dict[object, list[tuple[object, ...]]] = {}
        # In slices: SQLite takes at most 32,766 parameters in one statement.
        for start in range(0, len(found), 10_000):
            ids = [row[0] for row in found[start:start + 10_000]]
            statement = sql.HISTORY_OF_MANY.format(ids=",".join("?" * len(ids)))
            for row in self._read(statement, ids):
                history.setdefault(row[0], []).append(row)
        return [detail(row, history.get(row[0], []), now) for row in found]

    def retry(self, job_id: int, now: float) -> State | None:
        """Queue a failed, expired or revoked job again, with a fresh count of attempts.

        Returns the status it had (it was queued again only if that is one of
        those three), or None if there is no such job. Its history is kept.
        """
        with self._write() as conn:
            rows = conn.execute(sql.STATE_AND_EXPIRY, (job_id,)).fetchall()
            if not rows:
                return None
            state, expires = rows[0]
            if state in ("queued", "scheduled") and expires is not None and expires <= now:
                state = "expired"
            if state in ("failed", "expired", "revoked"):
                conn.execute(sql.RETRY_ONE, (now, job_id))
        return state  # type: ignore[no-any-return]

    def retry_failed(self, queues: Sequence[str] | None, names: Sequence[str] | None,
                     now: float) -> int:
        """``retry`` every failed job (of these queues and task names); how many.

        A batch per transaction, so producers and consumers go on meanwhile.
        """
        selection = Selection(("failed",), _tuple(queues), _tuple(names))
        return self._batches(sql.RETRY_BATCH, parts(selection, now), (now,))

    def purge(self, selection: Selection, now: float) -> int:
        """Delete the jobs of ``selection`` and their history; how many.

        Raises ``ValueError`` for a selection of running jobs (or of any
        status): their consumers would write outcomes to nothing. A batch per
        transaction, so producers and consumers go on meanwhile.
        """
        if selection.states is None or "running" in selection.states:
            raise ValueError("running jobs cannot be purged: their consumers own them")
        return self._batches(sql.DELETE_BATCH, parts(selection, now), (), forget_history=True)

    def revoke_all(self, name: str, now: float) -> int:
        """Revoke every queued or scheduled job of task ``name``; how many.

        Their error says they were revoked with ``revoke_all``, so that
        ``restore_all`` puts back these and no other.
        """
        selection = Selection(("queued", "scheduled"), None, (name,))
        return self._batches(sql.REVOKE_ALL, parts(selection, now), (now, REVOKED_ALL))

    def restore_all(self, name: str, now: float) -> int:
        """Queue again (or schedule, if their eta is later) the jobs ``revoke_all`` revoked."""
        part = Part("state = 'revoked' AND name = ? AND error_message = ?", (name, REVOKED_ALL))
        return self._batches(sql.RESTORE_ALL, [part], (now,))

    def _batches(self, statement: str, where: Sequence[Part], params: tuple[object, ...],
                 forget_history: bool = False) -> int:
        total = 0
        for part in where:
            batch_sql = statement.format(where=part.where)
            after = -1
            while True:
                began = real_monotonic()
                with self._write() as conn:
                    ids = conn.execute(batch_sql, (*params, *part.params, after,
                                             ADMIN_BATCH)).fetchall()
                    if forget_history:
                        conn.executemany(sql.HISTORY_DELETE, ids)
                total += len(ids)
                if len(ids) < ADMIN_BATCH:
                    break
                after = max(job_id for (job_id,) in ids)
                # Leave the lock free as long as the batch held it: SQLite
                # queues no one, and a producer polling for the lock would
                # otherwise keep finding it taken by the next batch.
                time.sleep(real_monotonic() - began)
        return total

    def pause(self, queue: str, now: float) -> bool:
        """Stop claims from taking jobs of ``queue``; False if it was paused already."""
        with self._write() as conn:
            return conn.execute(sql.PAUSE, (queue, now)).rowcount == 1

    def resume(self, queue: str) -> bool:
        """Let claims take jobs of ``queue`` again; False if it was not paused."""
        with self._write() as conn:
            return conn.execute(sql.RESUME, (queue,)).rowcount == 1

    def paused(self) -> dict[str, float]:
        """The paused queues, each with the epoch time it was paused."""
        return {str(q): float(at) for q, at in self._read(sql.PAUSED_SINCE)}  # type: ignore[arg-type]

    def running(self) -> dict[str, list[int]]:
        """The ids of the running jobs, by the consumer that owns them."""
        found: dict[str, list[int]] = {}
        for owner, job_id in self._read(sql.RUNNING):
            found.setdefault(str(owner), []).append(int(job_id))  # type: ignore[call-overload]
        return found


def _tuple(values: Sequence[str] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(values)
