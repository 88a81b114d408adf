"""The SQLite store: every statement minique runs, each named after what it does.

Writes are short ``BEGIN IMMEDIATE`` transactions (no lock upgrade can
deadlock); reads run in autocommit and are always fetched to the end, so no
read transaction stays open to stop WAL checkpoints. Each thread has its own
connection, opened on first use. The tables are peewee models (models.py),
rendered to DDL when a file is created or upgraded (schema.py).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sqlite3
import struct
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, NamedTuple

from ..clock import boot_id, real_monotonic
from ..errors import (
    ConfigurationError,
    DatabaseError,
    DuplicateJobId,
    MiniqueError,
    OptionError,
    SchemaVersionError,
)
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
    DETAIL_COLUMNS,
    HISTORY_COLUMNS,
    REVOKED_ALL,
    Part,
    Selection,
    detail,
    parts,
)
from .sqlite_notifier import SqliteNotifier

log = logging.getLogger("minique")

Synchronous = Literal["off", "normal", "full", "extra"]
_SYNCHRONOUS = ("off", "normal", "full", "extra")

# A checkpoint copies the WAL into the database and, unless synchronous=off,
# fsyncs both: far too slow for the commit that happens to trigger it. Running
# consumers checkpoint from their scheduler thread (see ``checkpoint``); this
# automatic one is only the safety net that bounds the WAL (~40 MB) when no
# consumer runs.
AUTOCHECKPOINT_PAGES = 10_000
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

_ENQUEUE = (
    "INSERT INTO jobs (id, name, queue, priority, state, payload, eta, expires, attempts,"
    " max_attempts, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)"
)
# Immediate mode: the call ran in the caller, as attempt N of an owner of its own.
_MARK_RAN_HERE = (
    "UPDATE jobs SET owner = ?, attempts = ?, started = 1, started_at = ? WHERE id = ?"
)
_PROMOTE_DUE = "UPDATE jobs SET state = 'queued' WHERE state = 'scheduled' AND eta <= ?"
_NEXT_SCHEDULED = "SELECT MIN(eta) FROM jobs WHERE state = 'scheduled'"
# A claim counts an attempt only for the calls that start now, on free
# workers (``started = 1``). Calls claimed ahead of free workers count theirs
# when their start is recorded: by their outcome, by a lease renewal while
# they run, or (for a suspect call) by ``record_start`` before they run. A
# consumer that dies holding calls it never started costs them nothing.
_CLAIM = (
    "UPDATE jobs SET state = 'running', owner = ?, lease_until = ?, lease_boot = ?,"
    " lease_mono = ?, started = {started}, started_at = {started_at},"
    " attempts = attempts + {started}"
    " WHERE id IN (SELECT id FROM jobs WHERE state = 'queued'{queues}"
    " ORDER BY priority DESC, eta, id LIMIT ?)"
    " RETURNING id, name, queue, priority, payload, attempts + 1 - started, max_attempts,"
    " expires, eta, started, suspect"
)
_CLAIM_NOW = _CLAIM.replace("{started}", "1").replace("{started_at}", "?")
_CLAIM_AHEAD = _CLAIM.replace("{started}", "0").replace("{started_at}", "started_at")
# The attempt number of a running row is attempts + 1 - started: the same
# before and after its start is recorded.
_OURS = "owner = ? AND state = 'running' AND attempts + 1 - started = ?"
# The owner and attempt guard every finish: an attempt whose lease was taken
# back (and perhaps given to another consumer) must not overwrite the row.
# The owner stays: the row of a done call is the record of its last attempt
# (see models.History), and every statement that reads owner asks for a
# running row.
_FINISH = (
    "UPDATE jobs SET state = ?, eta = COALESCE(?, eta), result = ?, error_type = ?,"
    " error_message = ?, traceback = ?, finished_at = ?, started_at = COALESCE(?, started_at),"
    " attempts = ?, started = 0, lease_until = NULL, lease_boot = NULL,"
    " lease_mono = NULL WHERE id = ? AND " + _OURS
)
# The history row of an attempt that did not end its call done, written in
# its outcome's transaction, after _FINISH (the row's started_at is then the
# attempt's). A later write for the same attempt (one that completed after it
# was taken back as lost) replaces the earlier.
_HISTORY_ADD = (
    "INSERT INTO history (job_id, number, started_at, finished_at, outcome, error_type,"
    " error_message, traceback, consumer) SELECT id, earlier_attempts + ?,"
    " COALESCE(?, started_at), ?, ?, ?, ?, ?, ? FROM jobs WHERE id = ?"
    " ON CONFLICT (job_id, number) DO UPDATE SET started_at = excluded.started_at,"
    " finished_at = excluded.finished_at, outcome = excluded.outcome,"
    " error_type = excluded.error_type, error_message = excluded.error_message,"
    " traceback = excluded.traceback, consumer = excluded.consumer"
)
# An attempt that completed after its lease was taken back (its consumer was
# frozen, or held the GIL past the lease) still counts: a finished task must
# not run again, nor end as lost. The first attempt to complete wins; one
# running elsewhere meanwhile will find its outcome ignored.
_FINISH_LATE = (
    "UPDATE jobs SET state = 'done', result = ?, error_type = NULL, error_message = NULL,"
    " traceback = NULL, finished_at = ?, started_at = COALESCE(?, started_at), started = 0,"
    " owner = NULL, lease_until = NULL, lease_boot = NULL, lease_mono = NULL"
    " WHERE id = ? AND error_type = 'WorkerLost'"
    " AND state IN ('queued', 'scheduled', 'running', 'failed')"
)
# (a start already recorded stays as it is)
_RECORD_START = (
    "UPDATE jobs SET attempts = attempts + 1 - started, started = 1,"
    " started_at = CASE WHEN started THEN started_at ELSE ? END WHERE id = ? AND " + _OURS
)
_RENEW = (
    "UPDATE jobs SET lease_until = ?, lease_mono = ? WHERE owner = ? AND state = 'running'"
)
# Put back without using an attempt: one whose start was recorded gives it back.
_RELEASE = (
    "UPDATE jobs SET state = 'queued', owner = NULL, lease_until = NULL, lease_boot = NULL,"
    " lease_mono = NULL, attempts = attempts - started, started = 0"
    " WHERE owner = ? AND state = 'running'"
)
_RELEASE_ONE = _RELEASE + " AND id = ? AND attempts + 1 - started = ?"
# A lost attempt counts against the task's retries, but every task gets at
# least one more run after its consumer died: a crash is rarely the task's
# fault, and at-least-once must hold with retries=0. A task that keeps killing
# its consumer still ends failed.
_LOST = (
    "SELECT id, name, owner, attempts + 1 - started, started,"
    " attempts < MAX(max_attempts, 2) FROM jobs WHERE state = 'running' AND {cond}"
)
# A lease compared on the holder's monotonic clock when it is ours too (same
# kernel boot); on the wall clock otherwise.
_EXPIRED = (
    "owner NOT IN ({mine}) AND CASE WHEN lease_boot = ? THEN lease_mono < ?"
    " ELSE lease_until < ? END"
)
_LOST_END = (
    "owner = NULL, lease_until = NULL, lease_boot = NULL, lease_mono = NULL, started = 0,"
    " error_type = 'WorkerLost', error_message = ?"
)
# Never started as far as the store knows: back to the queue with its attempts
# untouched. Every call taken from a dead consumer is marked suspect: it may
# be what killed it, so the consumer that runs it next first records its
# start, and writes the outcomes it holds, in one transaction.
_REQUEUE_UNSTARTED = (
    "UPDATE jobs SET state = 'queued', suspect = 1, " + _LOST_END + " WHERE id = ? AND " + _OURS
)
_REQUEUE_LOST = (
    "UPDATE jobs SET state = 'queued', suspect = 1, " + _LOST_END + " WHERE id = ? AND " + _OURS
)
_FAIL_LOST = (
    "UPDATE jobs SET state = 'failed', finished_at = ?, " + _LOST_END
    + " WHERE id = ? AND " + _OURS
)
# A lost attempt's history row, written before the row forgets its owner.
_HISTORY_LOST = (
    "INSERT INTO history (job_id, number, started_at, finished_at, outcome, error_type,"
    " error_message, traceback, consumer) SELECT id, earlier_attempts + attempts, started_at,"
    " ?, 'lost', 'WorkerLost', ?, NULL, owner FROM jobs WHERE id = ? AND " + _OURS
    + " ON CONFLICT (job_id, number) DO NOTHING"
)
_ANY_EXPIRED = "SELECT 1 FROM jobs WHERE state = 'running' AND " + _EXPIRED + " LIMIT 1"
_REVOKE = (
    "UPDATE jobs SET state = 'revoked', finished_at = ?, error_type = 'Revoked',"
    " error_message = 'the call was revoked before it started'"
    " WHERE id = ? AND state IN ('queued', 'scheduled')"
)
_READ = (
    "SELECT id, name, queue, state, eta, attempts, max_attempts, result, error_type,"
    " error_message, traceback, created_at, started_at, finished_at, expires"
    " FROM jobs WHERE id = ?"
)
_STATE_OF = "SELECT state FROM jobs WHERE id = ?"
_PAUSED = "SELECT queue FROM paused_queues"
# A call past its deadline reads as expired before a consumer writes it down.
_COUNTS = (
    "SELECT queue, CASE WHEN state IN ('queued', 'scheduled') AND expires <= ?"
    " THEN 'expired' ELSE state END AS status, COUNT(*) FROM jobs GROUP BY queue, status"
)
_PURGE = (
    "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE finished_at IS NOT NULL"
    " AND finished_at < ? AND state IN ('done', 'failed', 'revoked', 'expired') LIMIT ?)"
    " RETURNING id"
)
_HISTORY_DELETE = "DELETE FROM history WHERE job_id = ?"
_REGISTER_CONSUMER = (
    "INSERT OR REPLACE INTO consumers (id, hostname, boot_id, pid_ns, pid, pid_start, queues,"
    " workers, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_CONSUMER_HEARTBEAT = "UPDATE consumers SET heartbeat_at = ? WHERE id = ?"
_UNREGISTER_CONSUMER = "DELETE FROM consumers WHERE id = ?"
_CONSUMERS = (
    "SELECT id, hostname, boot_id, pid_ns, pid, pid_start, queues, workers, started_at,"
    " heartbeat_at FROM consumers"
)
_PERIODIC_ADD = "INSERT OR IGNORE INTO periodic (name, crontab, next_fire) VALUES (?, ?, ?)"
_PERIODIC_RESET = "UPDATE periodic SET crontab = ?, next_fire = ? WHERE name = ? AND crontab != ?"
_PERIODIC_SLOT = "SELECT crontab, next_fire FROM periodic WHERE name = ?"
_PERIODIC_ALL = "SELECT name, crontab, next_fire FROM periodic ORDER BY name"
# Firing is a compare-and-set on the stored slot: of all the consumers that
# saw the slot come due, exactly one moves it on and enqueues the job.
_PERIODIC_ADVANCE = "UPDATE periodic SET next_fire = ? WHERE name = ? AND next_fire = ?"

# -- operating the queue: not hot; batches of their own transactions ---------------------

_DETAIL = f"SELECT {DETAIL_COLUMNS} FROM jobs WHERE id = ?"
_HISTORY_OF = f"SELECT {HISTORY_COLUMNS} FROM history WHERE job_id = ? ORDER BY number"
_HISTORY_OF_MANY = (
    f"SELECT {HISTORY_COLUMNS} FROM history WHERE job_id IN ({{ids}}) ORDER BY job_id, number"
)
_LIST = f"SELECT {DETAIL_COLUMNS} FROM jobs WHERE {{where}} ORDER BY id DESC LIMIT ?"
_STATE_AND_EXPIRY = "SELECT state, expires FROM jobs WHERE id = ?"
# Queued again as if new, with the task's retries afresh; the attempts so far
# move to earlier_attempts, so that the history goes on numbering them. A
# deadline is dropped: it has passed, or would cut the new run short.
_REQUEUE = (
    "UPDATE jobs SET state = 'queued', eta = ?, expires = NULL,"
    " earlier_attempts = earlier_attempts + attempts, attempts = 0, started = 0, suspect = 0,"
    " owner = NULL, lease_until = NULL, lease_boot = NULL, lease_mono = NULL,"
    " started_at = NULL, finished_at = NULL, result = NULL, error_type = NULL,"
    " error_message = NULL, traceback = NULL"
)
_RETRY_ONE = _REQUEUE + " WHERE id = ?"
# Batches walk the ids upwards from the last one seen: each row is looked at
# once, however many batches it takes.
_BATCH = "id IN (SELECT id FROM jobs WHERE ({where}) AND id > ? ORDER BY id LIMIT ?) RETURNING id"
_RETRY_BATCH = _REQUEUE + " WHERE " + _BATCH
_DELETE_BATCH = "DELETE FROM jobs WHERE " + _BATCH
_REVOKE_ALL = (
    "UPDATE jobs SET state = 'revoked', finished_at = ?, error_type = 'Revoked',"
    " error_message = ? WHERE " + _BATCH
)
_RESTORE_ALL = (
    "UPDATE jobs SET state = CASE WHEN eta > ? THEN 'scheduled' ELSE 'queued' END,"
    " finished_at = NULL, error_type = NULL, error_message = NULL WHERE " + _BATCH
)
_PAUSE = (
    "INSERT INTO paused_queues (queue, paused_at) VALUES (?, ?) ON CONFLICT (queue) DO NOTHING"
)
_RESUME = "DELETE FROM paused_queues WHERE queue = ?"
_PAUSED_SINCE = "SELECT queue, paused_at FROM paused_queues ORDER BY queue"
_RUNNING = "SELECT owner, id FROM jobs WHERE state = 'running' ORDER BY id"
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


def database_path(path: object) -> str:
    """The queue's database path as text; refuses what cannot be a file shared by processes."""
    if not isinstance(path, str | os.PathLike):
        raise OptionError(f"the database path {path!r} is a {type(path).__name__}: give a "
                          "str or a pathlib.Path, e.g. Minique('app.db')")
    text = os.fspath(path)
    if not isinstance(text, str):
        raise OptionError(f"the database path {path!r} is bytes: give a str or a pathlib.Path")
    if not text.strip():
        raise OptionError("the database path is empty: give the path of the queue's SQLite "
                          "file, e.g. Minique('app.db')")
    memory = text == ":memory:" or (text.startswith("file:") and (
        "mode=memory" in text or text[5:].split("?")[0] in ("", ":memory:")))
    if memory:
        raise OptionError(
            f"Minique({text!r}): an in-memory SQLite database lives in one connection, and "
            "minique's producers, consumers and their threads each open the file anew; give "
            "a file path. In tests, use a file in a temporary folder with immediate=True, "
            "e.g. Minique(tmp_path / 'queue.db', immediate=True) with pytest's tmp_path")
    if text.startswith("file:"):
        raise OptionError(f"Minique({text!r}): give a plain file path, not a SQLite URI; the "
                          "path is opened as a file name")
    if os.path.isdir(text):
        raise OptionError(f"the database path {text} is a folder: give the path of a file in "
                          f"it, e.g. {os.path.join(text, 'minique.db')}")
    return text


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


# -- the files of the database -----------------------------------------------------------

# minique's own tables, in every schema version: a file with tables but
# without these is another application's, and is refused before anything in
# it changes (not even its journal mode).
_OUR_TABLES = frozenset({"jobs", "consumers"})


class _Connection(sqlite3.Connection):
    """A connection that ``_Connections`` can follow with a weak reference."""

    __slots__ = ("__weakref__",)


class _Files(NamedTuple):
    """(device, inode) of the database, its -wal and its -shm; None for a file that is absent."""

    db: tuple[int, int] | None
    wal: tuple[int, int] | None
    shm: tuple[int, int] | None

    @classmethod
    def at(cls, path: Path) -> _Files:
        return cls(_identity(str(path)), _identity(f"{path}-wal"), _identity(f"{path}-shm"))


def _identity(name: str) -> tuple[int, int] | None:
    try:
        st = os.stat(name)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _create_private(path: Path) -> None:
    """Create a missing database file readable by this user only.

    SQLite would create it 0644 under the usual umask, and the arguments of
    calls may hold secrets; it gives the -wal and -shm the database file's
    mode. An existing file keeps its mode: that is how a file is shared with
    a group on purpose (docs/guarantees.md).
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError:
        return  # it exists (the usual case), or SQLite will say why it cannot open it
    os.close(fd)


def _other_user(path: Path) -> int | None:
    """The pid of another process that has the database open, 0 if none, None if unknown.

    Every connection to a WAL database holds a read lock on it for as long as
    it is open. The locks are read from /proc/locks, not tested with fcntl():
    opening and closing a descriptor of the file would drop the locks that
    SQLite holds in this process.
    """
    try:
        inode = os.stat(path).st_ino
        with open("/proc/locks", encoding="ascii", errors="replace") as locks:
            lines = locks.readlines()
    except OSError:
        return None
    me = os.getpid()
    for line in lines:
        fields = line.split()
        # "1: POSIX  ADVISORY  READ 7598 fe:00:2148350 128 128" ("->" marks a waiter)
        for i in range(2, len(fields) - 2):
            if fields[i].endswith(f":{inode}") and fields[i].count(":") == 2:
                pid = fields[i - 1]
                if pid.lstrip("-").isdigit() and int(pid) != me:
                    return int(pid) if int(pid) > 0 else -1
    return 0


def _who(pid: int | None) -> str:
    return f"process {pid}" if pid is not None and pid > 0 else "another process"


def _frames_not_copied(shm: str) -> int:
    """How many WAL frames the -shm says were committed but not yet copied into the database.

    Reads SQLite's wal-index header (https://sqlite.org/walformat.html): mxFrame
    at byte 16, nBackfill at byte 96, in the machine's byte order.
    """
    try:
        with open(shm, "rb") as file:
            header = file.read(136)
    except OSError:
        return 0
    if len(header) < 136 or header[12] != 1:  # isInit: a header was written
        return 0
    committed: int = struct.unpack_from("=I", header, 16)[0]
    copied: int = struct.unpack_from("=I", header, 96)[0]
    return max(committed - copied, 0)


def _vet(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a file that is not minique's, before anything in it changes."""
    tables = {name for (name,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%'")}
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if not tables and version == 0:
        return  # a new file: minique creates its tables
    ours = tables >= _OUR_TABLES
    if version > SCHEMA_VERSION and (ours or not tables):
        return  # a newer minique's: _migrate refuses it, naming both versions
    if not ours:
        found = ", ".join(sorted(tables)[:5]) + (" ..." if len(tables) > 5 else "")
        what = f"holds the tables {found}" if tables else f"has user_version {version}"
        raise ConfigurationError(
            f"{path} is not a minique queue: it {what} (another application's "
            "database?); it was left unchanged. Point Minique at a file of its own: a path "
            "that does not exist yet is created"
        )
    if version <= 0:
        raise DatabaseError(
            f"the queue database {path} has minique's tables but schema version {version}, "
            "which no minique writes: another program changed its PRAGMA user_version. "
            "Restore the file from a backup, or set user_version back to the version it had"
        )


class _Connections:
    """One SQLite connection per thread, opened on first use with the store's pragmas.

    A thread's connection closes when the thread ends and the connection is
    garbage-collected; ``close()`` closes the calling thread's now, and
    ``reopen()`` every one.

    Before a connection opens, the files it would open are looked at (a few
    ``stat`` calls per connection, none per statement): a -wal or -shm deleted
    while other processes still use the database would split them into two
    groups that overwrite each other's commits, so that connection is refused
    instead. ``check()`` finds the same under connections already open.
    """

    def __init__(self, path: Path, timeout: float, pragmas: Sequence[tuple[str, object]],
                 slice_ms: int) -> None:
        self._path = path
        self._timeout = timeout
        self._pragmas = pragmas
        self._slice_ms = slice_ms
        self._local = threading.local()
        # Every connection open in this process: they share SQLite's state of the files.
        self._open: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self._vetted = False
        # The files as this process's connections opened them.
        self._files: _Files | None = None
        self._reported: frozenset[str] = frozenset()

    def get(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
        return conn

    def _connect(self) -> sqlite3.Connection:
        live = bool(self._open)
        self._refuse_split(live)
        _create_private(self._path)
        # Autocommit (isolation_level=None): every transaction is an explicit
        # BEGIN IMMEDIATE ... COMMIT of ours, never one the module opens.
        conn = sqlite3.connect(self._path, timeout=self._timeout, isolation_level=None,
                               check_same_thread=False, factory=_Connection)
        try:
            if not self._vetted:
                # Before the first pragma: journal_mode=wal would already change the file.
                _vet(conn, self._path)
                self._vetted = True
            for name, value in self._pragmas:
                conn.execute(f"PRAGMA {name} = {value}")
            # Opening waited up to the whole timeout (switching a new file
            # to WAL takes the lock); from now on SQLite waits a slice at a
            # time and SqliteStore tries again (see BUSY_SLICE_MS).
            conn.execute(f"PRAGMA busy_timeout = {self._slice_ms}")
        except BaseException:
            conn.close()
            raise
        if not live or self._files is None:
            self._files = _Files.at(self._path)
        self._open.add(conn)
        self._local.conn = conn
        return conn

    def note_files(self) -> None:
        """Note the files created since the first connection opened (a new database's -wal)."""
        seen = self._files
        if seen is not None:
            now = _Files.at(self._path)
            self._files = _Files(*(old if old is not None else new
                                   for old, new in zip(seen, now, strict=True)))

    def _refuse_split(self, live: bool) -> None:
        """Raise DatabaseError if opening a connection now could lose commits."""
        path = self._path
        now = _Files.at(path)
        wal, shm = now.wal, now.shm
        seen = self._files
        if live and seen is not None:
            # SQLite shares this process's -shm with the new connection, but
            # opens the database and the -wal anew, by their names.
            for name, before, after in (("", seen.db, now.db), ("-wal", seen.wal, wal)):
                if before is not None and after != before:
                    raise DatabaseError(
                        f"{path}{name} was deleted or replaced while this process was using "
                        "it: a new connection would write to another file than the open "
                        f"ones. Stop every process that uses {path}, then start them again"
                    )
            return
        if shm is None and wal is not None:
            other = _other_user(path)
            if other:
                raise DatabaseError(
                    f"{path}-shm was deleted while {_who(other)} was using {path}: a "
                    "process that opens the database now would not see the locks of those "
                    "already running, and they would overwrite each other's commits. Stop "
                    f"every process that uses {path} (they go on safely meanwhile), then "
                    "start them again"
                )
        elif wal is None and shm is not None:
            other = _other_user(path)
            if other:
                raise DatabaseError(
                    f"{path}-wal was deleted while {_who(other)} was using {path}: its "
                    "latest commits are only in the file those processes still hold open. "
                    f"Stop every process that uses {path} (a clean stop copies them into the "
                    "database), then start them again"
                )
            lost = _frames_not_copied(f"{path}-shm")
            if lost:
                raise DatabaseError(
                    f"{path}-wal was deleted, but it held commits not yet copied into "
                    f"{path} ({lost} pages): opening the database now would lose them for "
                    f"good. Put {path}-wal back if you can (from a backup, or the trash) and "
                    f"try again; or delete {path}-shm too, to go on without those commits"
                )

    def check(self, write_lock: threading.Lock) -> None:
        """Look for the database's files deleted or replaced under this process's connections.

        Says so in the log (once per incident), copies the commits of a
        deleted -wal into the database, and reopens the connections when that
        is safe. Three ``stat`` calls; ``SqliteStore.checkpoint`` calls it,
        never a statement.
        """
        seen = self._files
        if seen is None:
            return
        now = _Files.at(self._path)
        if now == seen:
            return
        # A file created since the connections opened (a new database's
        # -wal) is adopted; one that is gone or another file is an incident.
        problems = {}
        for name, before, after in zip(("", "-wal", "-shm"), seen, now, strict=True):
            if after is None:
                problems[name] = "deleted"
            elif before is not None and after != before:
                problems[name] = "replaced"
        if not problems:
            self._files = now
            return
        other = _other_user(self._path)
        alone = other == 0
        copied = False
        if "-wal" in problems:
            # The open connections still hold the -wal that lost its name:
            # copy its commits into the database while they can.
            copied = self._copy_wal()
        # Only a stop of every process mends a database file that is gone or
        # another (reopening would read the old -wal over another file, or
        # create an empty queue), or a -wal that another process replaced.
        if "" in problems or problems.get("-wal") == "replaced":
            reopen = False
        elif problems.get("-shm") == "replaced":
            reopen = True  # join the processes that opened the new -shm
        else:
            reopen = alone and ("-wal" not in problems or copied)
        self._report(problems, other, reopen)
        if reopen:
            self.reopen(write_lock)

    def _copy_wal(self) -> bool:
        """Checkpoint the whole -wal into the database; True if all of it was copied."""
        conn = self.get()
        busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return not busy and frames == copied

    def _report(self, problems: dict[str, str], other: int | None, reopen: bool) -> None:
        alone = other == 0
        report = frozenset(f"{n} {p}" for n, p in problems.items())
        if report == self._reported:
            return
        self._reported = report
        path = self._path
        what = " and ".join(f"{path}{n} was {p}" for n, p in problems.items())
        if reopen and problems.get("-shm") == "replaced":
            then = ("processes that opened the new file did not see this one's locks, and "
                    "commits may have been lost; minique reopens the database here to join "
                    "them. Check the queue")
        elif reopen:
            then = ("no other process uses the database, so minique reopens it here; "
                    "nothing was lost")
        elif problems.get("") == "deleted":
            then = ("every commit from now on goes to a file that no longer has that name "
                    "and is lost when the processes stop: stop every process that uses it, "
                    "and restore the file from a backup")
        elif "" in problems:
            then = ("this process goes on with the old file; stop every process that uses "
                    "the database before you restore or replace it, then start them again")
        elif alone and problems.get("-wal") == "deleted":
            then = ("no other process uses the database: minique copies the commits of the "
                    "deleted -wal into the database and reopens it as soon as no reader "
                    "holds it")
        else:
            then = (f"the processes that use it (this one and {_who(other)}) go on safely "
                    "together, but no new process can open it until all of them have "
                    "stopped: stop them all, then start them again")
        log.error("%s while this process (pid %d) was using it; %s. Never delete the -wal or "
                  "-shm of a database in use (see docs/guarantees.md)",
                  what, os.getpid(), then)

    def reopen(self, write_lock: threading.Lock) -> None:
        """Close every connection of this process; each thread opens a new one on its next use."""
        # Under the write lock no thread of this process is in a transaction;
        # a thread that took its connection just before and waits for the
        # lock finds it closed and reports an error, rather than writing to
        # the files that were replaced.
        with write_lock:
            self._local = threading.local()
            self._files = None
            for conn in list(self._open):
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._open = weakref.WeakSet()
            self._reported = frozenset()
        log.warning("reopened the queue database %s in this process", self._path)

    def close(self) -> None:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            self._open.discard(conn)  # type: ignore[arg-type]
            conn.close()


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

    def _make_database(self) -> _Connections:
        autocheckpoint = AUTOCHECKPOINT_PAGES if self.synchronous in ("off", "normal") \
            else AUTOCHECKPOINT_PAGES_FULL
        return _Connections(
            self.path, self.busy_timeout,
            [("journal_mode", "wal"), ("synchronous", self.synchronous),
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
        if version < 0:  # _vet refuses it first; this keeps upgrade() from ever seeing it
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
                    self._execute(conn, _ENQUEUE,
                                  _job_row(job, "scheduled" if job.eta > now else "queued"))
            except sqlite3.Error as exc:
                raise self._translate(exc) from exc
            self._committed()
            return
        rows = [_job_row(j, "scheduled" if j.eta > now else "queued") for j in jobs]
        with self._write() as conn:
            conn.executemany(_ENQUEUE, rows)

    def record_finished(self, job: NewJob, outcome: Outcome,
                        earlier: Sequence[Outcome] = ()) -> None:
        """Store a call that already ran (immediate mode) and its outcome, in one transaction.

        ``earlier`` are the outcomes of the attempts before the last (retried
        at once), for its history.
        """
        with self._write() as conn:
            conn.execute(_ENQUEUE, _job_row(job, "running"))
            conn.execute(
                _MARK_RAN_HERE,
                (outcome.owner, outcome.attempt, job.created_at, job.id),
            )
            if earlier:
                conn.executemany(_HISTORY_ADD, [_history_row(o) for o in earlier])
            self._finish_in(conn, [outcome])

    def revoke(self, job_id: int, now: float) -> bool:
        """Mark a job that has not started ``revoked``; True if it will not run."""
        with self._write() as conn:
            if conn.execute(_REVOKE, (now, job_id)).rowcount:
                return True
            row = conn.execute(_STATE_OF, (job_id,)).fetchall()
        return bool(row) and row[0][0] in ("revoked", "expired")

    # -- readers -------------------------------------------------------------------

    def read(self, job_id: int) -> JobRecord | None:
        """The job's row, or None if there is none (never stored, or purged)."""
        rows = self._read(_READ, (job_id,))
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
        for queue, state, count in self._read(_COUNTS, (time.time(),)):
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
        when that is safe (see ``_Connections.check``).
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
        (row,) = self._read(_NEXT_SCHEDULED)
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
                    conn.execute(_PROMOTE_DUE, (now,))
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
        paused = [queue for (queue,) in conn.execute(_PAUSED).fetchall()]
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
            rows = conn.execute(_CLAIM_NOW.format(queues=where),
                                (*lease_params, now, *(queues or ()), start_now)).fetchall()
        if limit > len(rows) and len(rows) == start_now:
            rows += conn.execute(_CLAIM_AHEAD.format(queues=where),
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
        if conn.executemany(_FINISH, rows).rowcount == len(rows):
            conn.execute("RELEASE finish")
            # Attempts that ended their call done need no history row (the
            # job's row is their record): the common case writes nothing more.
            history = [_history_row(o) for o in outcomes if o.state not in _NO_HISTORY]
            if history:
                conn.executemany(_HISTORY_ADD, history)
            return [True] * len(rows)
        conn.execute("ROLLBACK TO finish")
        conn.execute("RELEASE finish")
        written = []
        for outcome, row in zip(outcomes, rows, strict=True):
            ok = conn.execute(_FINISH, row).rowcount == 1
            if ok and outcome.state not in _NO_HISTORY:
                conn.execute(_HISTORY_ADD, _history_row(outcome))
            if not ok and outcome.state == "done":
                ok = conn.execute(_FINISH_LATE, (
                    outcome.result, outcome.finished_at, outcome.started_at, outcome.id,
                )).rowcount == 1
                if ok:
                    # Its history row said lost: it says done now.
                    conn.execute(_HISTORY_ADD, _history_row(outcome))
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
            return written, conn.execute(_RECORD_START, (now, job_id, owner, attempt)).rowcount == 1

    def renew(self, owner: str, lease: float, now: float,
              started: Sequence[tuple[int, int, float]] = ()) -> int:
        """Extend for ``lease`` seconds the lease of every job ``owner`` holds.

        ``started`` are ``(id, attempt, started_at)`` of jobs claimed ahead that
        have been running since: their attempts are recorded as started in the
        same transaction. Returns the number of leases renewed.
        """
        with self._write() as conn:
            if started:
                conn.executemany(_RECORD_START, [(at, job_id, owner, attempt)
                                                 for job_id, attempt, at in started])
            return conn.execute(_RENEW, (now + lease, real_monotonic() + lease,
                                         owner)).rowcount

    def release(self, owner: str, jobs: Sequence[tuple[int, int]] | None = None) -> int:
        """Put back jobs ``owner`` holds (all, or these ``(id, attempt)``).

        A released job has not used an attempt: it runs again as if never claimed.
        """
        with self._write() as conn:
            if jobs is None:
                return conn.execute(_RELEASE, (owner,)).rowcount
            return sum(conn.execute(_RELEASE_ONE, (owner, job_id, attempt)).rowcount
                       for job_id, attempt in jobs)

    def reap_expired(self, now: float, mine: Sequence[str] = ()) -> list[Reaped]:
        """Take back running jobs whose lease ran out: requeued, or failed if out of attempts.

        Jobs of the consumers in ``mine`` are never taken: they are alive and
        this is their own process. A lease held on this kernel boot is read on
        the monotonic clock, so a step of the wall clock cannot expire it.
        """
        cond = _EXPIRED.format(mine=",".join("?" * len(mine)))
        params = (*mine, self._boot, real_monotonic(), now)
        # Looked for first without the write lock: almost always there is
        # nothing to reap, and producers should not wait for us to find that out.
        if not self._read(_ANY_EXPIRED.format(mine=",".join("?" * len(mine))), params):
            return []
        return self._reap(cond, params, now, "its lease expired")

    def reap_owner(self, owner: str, now: float) -> list[Reaped]:
        """Take back every running job of a consumer known to be dead."""
        return self._reap("owner = ?", (owner,), now, "its consumer died")

    def _reap(self, cond: str, params: tuple[object, ...], now: float,
              why: str) -> list[Reaped]:
        reaped = []
        with self._write() as conn:
            for job_id, name, owner, attempt, started, again in conn.execute(
                    _LOST.format(cond=cond), params).fetchall():
                ours = (job_id, owner, attempt)
                if not started:
                    message = f"attempt {attempt} was claimed but its start not recorded: {why}"
                    conn.execute(_REQUEUE_UNSTARTED, (message, *ours))
                elif again:
                    message = f"attempt {attempt} was lost: {why}"
                    conn.execute(_HISTORY_LOST, (now, message, *ours))
                    conn.execute(_REQUEUE_LOST, (message, *ours))
                else:
                    message = f"attempt {attempt} was lost ({why}) and no attempts remain"
                    conn.execute(_HISTORY_LOST, (now, message, *ours))
                    conn.execute(_FAIL_LOST, (now, message, *ours))
                reaped.append(Reaped(int(job_id), str(name), str(owner), int(attempt),
                                     "queued" if again or not started else "failed",
                                     bool(started)))
        return reaped

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
                ids = conn.execute(_PURGE, (before, batch)).fetchall()
                conn.executemany(_HISTORY_DELETE, ids)
            total += len(ids)
            done += 1
            if len(ids) < batch or (batches is not None and done >= batches):
                return total

    def register_consumer(self, info: ConsumerInfo) -> None:
        """Record a consumer's identity so that others can tell when it is gone."""
        with self._write() as conn:
            conn.execute(_REGISTER_CONSUMER, (
                info.id, info.hostname, info.boot_id, info.pid_ns, info.pid, info.pid_start,
                info.queues, info.workers, info.started_at, info.heartbeat_at,
            ))

    def consumer_heartbeat(self, consumer_id: str, now: float) -> None:
        """Note that a consumer is alive."""
        with self._write() as conn:
            conn.execute(_CONSUMER_HEARTBEAT, (now, consumer_id))

    def unregister_consumer(self, consumer_id: str) -> None:
        """Forget a consumer (it stopped, or it is known dead and its jobs were reaped)."""
        with self._write() as conn:
            conn.execute(_UNREGISTER_CONSUMER, (consumer_id,))

    def consumers(self) -> list[ConsumerInfo]:
        """Every registered consumer."""
        return [ConsumerInfo(*row) for row in self._read(_CONSUMERS)]  # type: ignore[arg-type]

    # -- periodic tasks --------------------------------------------------------------

    def sync_periodic(self, name: str, crontab: str, first_fire: float) -> float:
        """Make sure ``name`` has a slot for this crontab; its stored next fire time.

        A new task (or one whose crontab changed) starts at ``first_fire``;
        an existing slot is kept, so restarts never fire a slot twice.
        """
        with self._write() as conn:
            conn.execute(_PERIODIC_ADD, (name, crontab, first_fire))
            conn.execute(_PERIODIC_RESET, (crontab, first_fire, name, crontab))
            row = conn.execute(_PERIODIC_SLOT, (name,)).fetchall()
        return float(row[0][1])

    def fire_periodic(self, name: str, slot: float, next_fire: float,
                      job: NewJob | None, now: float) -> float:
        """Move ``name`` from ``slot`` to ``next_fire`` and, if given, enqueue ``job``, atomically.

        Returns the slot now stored: ``next_fire`` if this call won the
        compare-and-set (and the job was enqueued), otherwise whatever another
        consumer stored (and nothing was enqueued).
        """
        with self._write() as conn:
            if conn.execute(_PERIODIC_ADVANCE, (next_fire, name, slot)).rowcount == 1:
                if job is not None:
                    state = "scheduled" if job.eta > now else "queued"
                    conn.execute(_ENQUEUE, _job_row(job, state))
                return next_fire
            row = conn.execute(_PERIODIC_SLOT, (name,)).fetchall()
        return float(row[0][1]) if row else next_fire

    def periodic_slots(self) -> list[tuple[str, str, float]]:
        """``(name, crontab, next_fire)`` of every stored periodic slot."""
        return [(str(n), str(c), float(f)) for n, c, f in self._read(_PERIODIC_ALL)]  # type: ignore[arg-type]


    # -- operating the queue -----------------------------------------------------------

    def job(self, job_id: int, now: float) -> JobDetail | None:
        """Everything stored about a job, with its history; None if there is none."""
        rows = self._read(_DETAIL, (job_id,))
        if not rows:
            return None
        return detail(rows[0], self._read(_HISTORY_OF, (job_id,)), now)

    def jobs(self, selection: Selection, limit: int, now: float) -> list[JobDetail]:
        """Up to ``limit`` jobs of ``selection``, newest first, each with its history."""
        found: list[tuple[object, ...]] = []
        for part in parts(selection, now):
            found += self._read(_LIST.format(where=part.where), (*part.params, limit))
        found.sort(key=lambda row: row[0], reverse=True)  # type: ignore[arg-type, return-value]
        found = found[:limit]
        history: dict[object, list[tuple[object, ...]]] = {}
        # In slices: SQLite takes at most 32,766 parameters in one statement.
        for start in range(0, len(found), 10_000):
            ids = [row[0] for row in found[start:start + 10_000]]
            sql = _HISTORY_OF_MANY.format(ids=",".join("?" * len(ids)))
            for row in self._read(sql, ids):
                history.setdefault(row[0], []).append(row)
        return [detail(row, history.get(row[0], []), now) for row in found]

    def retry(self, job_id: int, now: float) -> State | None:
        """Queue a failed, expired or revoked job again, with a fresh count of attempts.

        Returns the status it had (it was queued again only if that is one of
        those three), or None if there is no such job. Its history is kept.
        """
        with self._write() as conn:
            rows = conn.execute(_STATE_AND_EXPIRY, (job_id,)).fetchall()
            if not rows:
                return None
            state, expires = rows[0]
            if state in ("queued", "scheduled") and expires is not None and expires <= now:
                state = "expired"
            if state in ("failed", "expired", "revoked"):
                conn.execute(_RETRY_ONE, (now, job_id))
        return state  # type: ignore[no-any-return]

    def retry_failed(self, queues: Sequence[str] | None, names: Sequence[str] | None,
                     now: float) -> int:
        """``retry`` every failed job (of these queues and task names); how many.

        A batch per transaction, so producers and consumers go on meanwhile.
        """
        selection = Selection(("failed",), _tuple(queues), _tuple(names))
        return self._batches(_RETRY_BATCH, parts(selection, now), (now,))

    def purge(self, selection: Selection, now: float) -> int:
        """Delete the jobs of ``selection`` and their history; how many.

        Raises ``ValueError`` for a selection of running jobs (or of any
        status): their consumers would write outcomes to nothing. A batch per
        transaction, so producers and consumers go on meanwhile.
        """
        if selection.states is None or "running" in selection.states:
            raise ValueError("running jobs cannot be purged: their consumers own them")
        return self._batches(_DELETE_BATCH, parts(selection, now), (), forget_history=True)

    def revoke_all(self, name: str, now: float) -> int:
        """Revoke every queued or scheduled job of task ``name``; how many.

        Their error says they were revoked with ``revoke_all``, so that
        ``restore_all`` puts back these and no other.
        """
        selection = Selection(("queued", "scheduled"), None, (name,))
        return self._batches(_REVOKE_ALL, parts(selection, now), (now, REVOKED_ALL))

    def restore_all(self, name: str, now: float) -> int:
        """Queue again (or schedule, if their eta is later) the jobs ``revoke_all`` revoked."""
        part = Part("state = 'revoked' AND name = ? AND error_message = ?", (name, REVOKED_ALL))
        return self._batches(_RESTORE_ALL, [part], (now,))

    def _batches(self, statement: str, where: Sequence[Part], params: tuple[object, ...],
                 forget_history: bool = False) -> int:
        total = 0
        for part in where:
            sql = statement.format(where=part.where)
            after = -1
            while True:
                began = real_monotonic()
                with self._write() as conn:
                    ids = conn.execute(sql, (*params, *part.params, after,
                                             ADMIN_BATCH)).fetchall()
                    if forget_history:
                        conn.executemany(_HISTORY_DELETE, ids)
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
            return conn.execute(_PAUSE, (queue, now)).rowcount == 1

    def resume(self, queue: str) -> bool:
        """Let claims take jobs of ``queue`` again; False if it was not paused."""
        with self._write() as conn:
            return conn.execute(_RESUME, (queue,)).rowcount == 1

    def paused(self) -> dict[str, float]:
        """The paused queues, each with the epoch time it was paused."""
        return {str(q): float(at) for q, at in self._read(_PAUSED_SINCE)}  # type: ignore[arg-type]

    def running(self) -> dict[str, list[int]]:
        """The ids of the running jobs, by the consumer that owns them."""
        found: dict[str, list[int]] = {}
        for owner, job_id in self._read(_RUNNING):
            found.setdefault(str(owner), []).append(int(job_id))  # type: ignore[call-overload]
        return found


def _tuple(values: Sequence[str] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(values)
