"""The files of a SQLite queue, and the connections to them.

The database is three files (``app.db``, ``app.db-wal``, ``app.db-shm``);
deleting the ``-wal`` or ``-shm`` of a database in use loses commits. Each
connection is opened here, after checks that refuse what would lose them,
and the files are watched for being replaced while processes use them (see
docs/guarantees.md, "The files of a queue").
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import struct
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from ..errors import ConfigurationError, DatabaseError, OptionError
from .schema import SCHEMA_VERSION

log = logging.getLogger("minique")

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



# -- the files of the database -----------------------------------------------------------

# minique's own tables, in every schema version: a file with tables but
# without these is another application's, and is refused before anything in
# it changes (not even its journal mode).
_OUR_TABLES = frozenset({"jobs", "consumers"})


class _Connection(sqlite3.Connection):
    """A connection that ``Connections`` can follow with a weak reference."""

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


class Connections:
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

