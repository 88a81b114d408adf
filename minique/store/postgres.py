"""The PostgreSQL store: the same queue as sqlite.py, for consumers on many machines.

Every connection is in autocommit; a method is one statement (its own
transaction) or an explicit short transaction, sent in one round trip where
psycopg's pipeline allows. Each thread has its own connection, opened on first
use; one that broke (a server restart, a dropped network) is replaced, never
reused. The semantics of every method are sqlite.py's; only the SQL differs:

- claims take ready rows with ``FOR UPDATE SKIP LOCKED``, so that consumers
  never wait for each other, and finishing a batch is one ``UPDATE ... FROM
  unnest(...)`` whatever its size;
- leases keep the holder's monotonic clock (``lease_mono`` on ``lease_boot``)
  for consumers of the same kernel boot, as on SQLite, and the database's
  clock otherwise: no consumer ever compares its wall clock with another
  host's;
- producers NOTIFY in the transaction of their enqueue, and consumers LISTEN
  (``postgres_notifier.py``);
- the schema is created, and later migrated, under an advisory lock, from the
  same peewee models as SQLite's.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import select
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ..clock import boot_id, real_monotonic
from ..errors import ConfigurationError, DatabaseError, DuplicateJobId, SchemaVersionError
from . import postgres_sql as sql
from .postgres_connect import (
    STATEMENT_TIMEOUT,
    Connector,
    Held,
    Secrets,
    disown,
    one_line,
    public_location,
)
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
from .schema import SCHEMA_VERSION
from .selection import (
    REVOKED_ALL,
    Part,
    Selection,
    detail,
    parts,
)

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg.pq import TransactionStatus
except ImportError as exc:  # the extra is not installed: say so at Minique(...)
    _MISSING: ImportError | None = exc
else:
    _MISSING = None

log = logging.getLogger("minique")

# After a connection was lost in the middle of an enqueue, how long to try to
# reconnect and learn whether its transaction committed (a restart takes a
# few seconds), before saying that it cannot be known.
RESOLVE_WITHIN = 15.0

ADMIN_BATCH = 500

# -- the schema --------------------------------------------------------------------------

_VERSION_TABLE = "minique_schema"
# Each step brings a PostgreSQL schema from version N-1 to N (the first one
# is created at the current version from the models, see create_statements).
# Each step adds what version N added to the tables that already exist; the
# tables and indexes new in a version come from create_statements (every one
# of them IF NOT EXISTS), run after the steps.
_STEPS: dict[int, list[str]] = {
    3: ["ALTER TABLE jobs ADD COLUMN IF NOT EXISTS earlier_attempts BIGINT NOT NULL DEFAULT 0"],
}
# A busy queue updates and deletes its rows all day: vacuum the jobs table
# after 2 % of it changed rather than PostgreSQL's default 20 %, so that dead
# rows do not pile up in the ready index that every claim walks (docs/postgres.md).
_TABLE_SETTINGS = (
    "ALTER TABLE jobs SET (autovacuum_vacuum_scale_factor = 0.02,"
    " autovacuum_analyze_scale_factor = 0.02, autovacuum_vacuum_insert_scale_factor = 0.05)"
)


def create_statements() -> list[str]:
    """The DDL of the current schema for PostgreSQL, rendered by peewee from the models.

    The models (models.py) are SQLite's; subclasses bound to a PostgreSQL
    database that renders without connecting give the same columns with
    PostgreSQL's types: 64-bit integers (ids are 63-bit) and double-precision
    floats (epoch seconds), ``BYTEA`` for payloads and results.
    """
    import peewee as pw

    from .models import INDEXES, render_ddl

    database = pw.PostgresqlDatabase(
        None, field_types={"INT": "BIGINT", "FLOAT": "DOUBLE PRECISION"})
    return [*render_ddl(database), *INDEXES, _TABLE_SETTINGS,
            f"CREATE TABLE IF NOT EXISTS {_VERSION_TABLE} (version integer NOT NULL)"]


# -- the store -----------------------------------------------------------------------------

_stores: weakref.WeakSet[PostgresStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for store in list(_stores):
        store._forget_connections()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class PostgresStore:
    """Moves job rows through their states in a PostgreSQL database.

    Safe to share between threads (one connection each) and between
    processes and hosts (row locks, ``SKIP LOCKED``, compare-and-set).
    Connects at construction, so that a bad URL fails at ``Minique(...)``.
    """

    def __init__(self, url: str, synchronous: str = "normal") -> None:
        self.location = public_location(url)
        if _MISSING is not None:
            raise ConfigurationError(
                f"Minique({self.location!r}) needs psycopg 3, which is not installed "
                f"({_MISSING}); install minique's postgres extra: pip install 'minique[postgres]' "
                "(from a clone: pip install -e '.[postgres]')")
        if synchronous != "normal":
            raise ConfigurationError(
                f"synchronous={synchronous!r} is SQLite's setting and does not apply to a "
                "PostgreSQL store: its durability follows the server's synchronous_commit "
                "(on by default: a call is on disk when enqueue returns). Leave synchronous "
                "at its default")
        self._secrets = Secrets(url)
        self._connector = Connector(url, self.location, self._secrets)
        self._local = threading.local()
        self._open: weakref.WeakSet[Held] = weakref.WeakSet()
        self._boot = boot_id()
        self._ticks = itertools.count(1)
        self._init_lock = threading.Lock()
        self._held_lock = threading.Lock()
        # Per consumer: the ids of the jobs it was handed and has not written
        # back. Only read after a claim's answer was lost with its connection,
        # to put back what it claimed unseen (see _unseen).
        self._held: dict[str, set[int]] = {}
        self._unsure: set[str] = set()
        self._maybe_written: set[int] = set()
        self.schema = ""
        self.channel = ""
        from .postgres_notifier import PostgresNotifier

        self.notifier = PostgresNotifier(self)
        _stores.add(self)
        # Connect now, and create or check the tables: a bad URL, a server
        # that cannot be reached or a newer schema fail here, in one line.
        self._initialize(self._conn())

    def __repr__(self) -> str:
        return f"<PostgresStore {self.location}>"

    # -- connections and errors ------------------------------------------------

    def _forget_connections(self) -> None:
        for held in list(self._open):
            disown(held.conn)
            held.pid = -1  # its __del__ must not close anything now
        self._open = weakref.WeakSet()
        self._local = threading.local()
        self._init_lock = threading.Lock()
        self._held_lock = threading.Lock()
        self._held = {}
        self._unsure = set()
        self._maybe_written = set()
        self.notifier.forget_after_fork()

    def connect(self) -> psycopg.Connection[Any]:
        """A new connection of this store's (for its listeners); raises DatabaseError."""
        return self._connector.connect()

    def _conn(self) -> psycopg.Connection[Any]:
        """This thread's connection, replaced first if it is known or found broken.

        A server that restarted, or ended the session, has written to the
        socket of every idle connection it had: a poll without waiting finds
        it before a statement is sent, so a call after a restart goes to a
        fresh connection instead of failing.
        """
        held: Held | None = getattr(self._local, "held", None)
        if held is not None:
            conn = held.conn
            if not conn.closed and not conn.broken and self._idle_and_sound(conn):
                return conn
            self._drop(held)
        conn = self._connector.connect()
        held = Held(conn)
        self._local.held = held
        self._open.add(held)
        return conn

    @staticmethod
    def _idle_and_sound(conn: psycopg.Connection[Any]) -> bool:
        pgconn = conn.pgconn
        try:
            fd = pgconn.socket
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            if not poller.poll(0):
                return True
            pgconn.consume_input()  # a notice, or the server's goodbye
            while pgconn.notifies() is not None:
                pass
        except (psycopg.Error, OSError, ValueError):
            return False
        return pgconn.status == psycopg.pq.ConnStatus.OK

    def _drop(self, held: Held) -> None:
        self._local.held = None
        self._open.discard(held)
        with contextlib.suppress(Exception):  # it is broken already
            held.conn.close()

    def _broken(self) -> None:
        """Forget this thread's connection (after a connection error): the next call reconnects."""
        held: Held | None = getattr(self._local, "held", None)
        if held is not None:
            self._drop(held)

    def _translate(self, exc: Exception) -> Exception:
        if not isinstance(exc, psycopg.Error):
            return exc
        text = self._secrets.scrub(one_line(exc))
        where = f"the queue database {self.location}"
        if isinstance(exc, pg_errors.UniqueViolation) and "jobs_pkey" in str(exc):
            return DuplicateJobId("another process chose the same job id; try again")
        if isinstance(exc, pg_errors.QueryCanceled):
            return DatabaseError(
                f"a statement on {where} was cancelled ({text}): it waited or ran past the "
                "session's statement_timeout (minique's default is "
                f"{STATEMENT_TIMEOUT}). Look for a long transaction holding locks on the "
                "jobs table (pg_stat_activity), or raise statement_timeout for this role")
        if isinstance(exc, pg_errors.InsufficientPrivilege):
            return ConfigurationError(
                f"the user of {where} may not do this ({text}); grant it the rights to "
                "create and write minique's tables in its schema")
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) \
                and not isinstance(exc, pg_errors.QueryCanceled):
            self._broken()
            return DatabaseError(
                f"lost the connection to {where} ({text}): the server restarted, or the "
                "network dropped. Nothing of this call is known to be stored; it can be made "
                "again (consumers retry by themselves)")
        return DatabaseError(f"PostgreSQL error on {where}: {text}")

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except psycopg.Error as exc:
            raise self._translate(exc) from None

    def _read(self, statement: str, params: Sequence[object] | dict[str, object] = ()
              ) -> list[tuple[Any, ...]]:
        # A read is safe to send again: one lost with its connection is
        # repeated once on a fresh connection.
        for again in (True, False):
            try:
                conn = self._conn()
                return conn.execute(statement, params).fetchall()
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                if isinstance(exc, pg_errors.QueryCanceled) or not again:
                    raise self._translate(exc) from None
                self._broken()
            except psycopg.Error as exc:
                raise self._translate(exc) from None
            except DatabaseError:
                if not again:
                    raise
        raise AssertionError("unreachable")

    @contextmanager
    def _write(self, pipeline: bool = False) -> Iterator[psycopg.Connection[Any]]:
        """One transaction on this thread's connection (in a pipeline: one round trip)."""
        conn = self._conn()
        try:
            if pipeline:
                with _one_round_trip(conn):
                    yield conn
            else:
                with conn.transaction():
                    yield conn
        except psycopg.Error as exc:
            raise self._translate(exc) from None

    # -- the schema ----------------------------------------------------------------

    def _initialize(self, conn: psycopg.Connection[Any]) -> None:
        with self._init_lock, self._translated():
            schema, version, jobs = conn.execute(
                f"SELECT current_schema(), to_regclass('{_VERSION_TABLE}') IS NOT NULL,"
                " to_regclass('jobs') IS NOT NULL").fetchone() or (None, False, False)
            if not schema:
                raise ConfigurationError(
                    f"the PostgreSQL database {self.location} has no schema to create "
                    "minique's tables in: its search_path names none that exists. Create the "
                    "schema, or fix search_path (options=-csearch_path=... in the URL)")
            self.schema = str(schema)
            self.channel = "minique" if self.schema == "public" else f"minique.{self.schema}"
            if version and self._version(conn) == SCHEMA_VERSION:
                return
            if jobs and not version:
                raise ConfigurationError(
                    f"the schema {self.schema} of {self.location} holds a table named jobs "
                    "that is not minique's (no minique_schema table beside it); it was left "
                    "unchanged. Give minique a schema of its own (options=-csearch_path=... in "
                    "the URL) or another database")
            self._migrate(conn)

    def _version(self, conn: psycopg.Connection[Any]) -> int:
        rows = conn.execute(f"SELECT max(version) FROM {_VERSION_TABLE}").fetchall()
        found = rows[0][0] if rows else None
        version = int(found) if found is not None else 0
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"the queue database {self.location} has schema version {version}, written by "
                f"a newer minique; this one knows up to version {SCHEMA_VERSION}: upgrade "
                "minique")
        return version

    def _migrate(self, conn: psycopg.Connection[Any]) -> None:
        # Processes that start together queue on the advisory lock; the first
        # creates the tables, the others find them made.
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                         (f"minique schema {self.schema}",))
            exists = conn.execute(f"SELECT to_regclass('{_VERSION_TABLE}') IS NOT NULL"
                                  ).fetchone()
            version = self._version(conn) if exists and exists[0] else 0
            if version == SCHEMA_VERSION:
                return
            statements = [s for step in range(version + 1, SCHEMA_VERSION + 1)
                          for s in _STEPS.get(step, ())] if version else []
            statements += create_statements()
            for statement in statements:
                conn.execute(statement)
            conn.execute(f"DELETE FROM {_VERSION_TABLE}")
            conn.execute(f"INSERT INTO {_VERSION_TABLE} (version) VALUES (%s)",
                         (SCHEMA_VERSION,))
        log.info("created minique's tables (schema version %d) in %s, schema %s",
                 SCHEMA_VERSION, self.location, self.schema)

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        self._broken()

    def notify_now(self) -> None:
        """Send the consumers' wake-up on its own (a transaction of its own)."""
        try:
            self._conn().execute(sql.NOTIFY, (self.channel,))
        except psycopg.Error as exc:
            raise self._translate(exc) from None

    # -- producers ---------------------------------------------------------------

    def enqueue(self, jobs: Sequence[NewJob], now: float) -> None:
        """Store ``jobs`` in one transaction: ``queued``, or ``scheduled`` if their eta is later.

        The consumers' wake-up (NOTIFY) commits with them. If the connection
        is lost before the answer came, the store reconnects and finds out
        whether the transaction committed, so that a call is neither lost nor
        stored twice.
        """
        rows = [_job_row(job, now) for job in jobs]
        try:
            self._insert(rows)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            if isinstance(exc, pg_errors.QueryCanceled):
                raise self._translate(exc) from None
            self._broken()
            self._resolve_lost_enqueue(rows, exc)
        except psycopg.Error as exc:
            raise self._translate(exc) from None
        self.notifier.sent()

    def _insert(self, rows: list[tuple[Any, ...]]) -> None:
        conn = self._conn()
        if len(rows) == 1:
            conn.execute(sql.ENQUEUE_ONE, (*rows[0], self.channel))
            return
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy(sql.COPY) as copy:
                copy.set_types(sql.COPY_TYPES)
                for row in rows:
                    copy.write_row((*row[:8], 0, *row[8:]))
            cur.execute(sql.NOTIFY, (self.channel,))

    def _resolve_lost_enqueue(self, rows: list[tuple[Any, ...]], lost: Exception) -> None:
        deadline = real_monotonic() + RESOLVE_WITHIN
        pause = 0.05
        while True:
            try:
                found = self._conn().execute(sql.FIND_IDS, ([r[0] for r in rows],)).fetchall()
                break
            except (DatabaseError, psycopg.Error):
                self._broken()
                if real_monotonic() + pause > deadline:
                    raise DatabaseError(
                        f"lost the connection to the queue database {self.location} while "
                        f"storing {len(rows)} call(s) ({self._secrets.scrub(one_line(lost))}), "
                        f"and could not reconnect within {RESOLVE_WITHIN:g} s to learn whether "
                        "they were stored; check the server, then look them up by id or "
                        "enqueue them again") from None
                time.sleep(pause)
                pause = min(pause * 2, 1.0)
        mine = {(r[0], r[1], r[9]) for r in rows}
        present = {(int(i), str(n), float(c)) for i, n, c in found}
        if mine <= present:
            log.info("the connection was lost while %d call(s) were stored, and they were: "
                     "the transaction had committed", len(rows))
            return
        if present & mine:  # one transaction: all or none of them
            raise DatabaseError(f"only some of {len(rows)} calls are in {self.location} "
                                "after a lost connection; look them up by id")
        if present:  # another process's calls hold these ids
            raise DuplicateJobId("another process chose the same job id; try again")
        log.info("the connection was lost while storing %d call(s), which had not "
                 "committed; storing them again", len(rows))
        try:
            self._insert(rows)
        except psycopg.Error as exc:
            raise self._translate(exc) from None

    def record_finished(self, job: NewJob, outcome: Outcome,
                        earlier: Sequence[Outcome] = ()) -> None:
        """Store a call that already ran (immediate mode) and its outcome, in one transaction.

        ``earlier`` are the outcomes of the attempts before the last (retried
        at once), for its history.
        """
        row = _job_row(job, job.created_at)
        with self._write() as conn:
            conn.execute(sql.ENQUEUE, (*row[:4], "running", *row[5:]))
            conn.execute(sql.MARK_RAN_HERE, (outcome.owner, outcome.attempt, job.created_at,
                                          job.id))
            if earlier:
                with conn.cursor() as cur:
                    cur.executemany(sql.HISTORY_ADD, [_history_row(o) for o in earlier])
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
        record = JobRecord(*rows[0])
        if record.state in ("queued", "scheduled") and record.expires is not None \
                and record.expires <= time.time():
            record.state = "expired"
            record.error_type = "Expired"
            record.error_message = "the call was not started before it expired"
        return record

    def counts_by_queue(self) -> dict[str, dict[str, int]]:
        """``{queue: {state: count}}`` with every state present, zeros included."""
        result: dict[str, dict[str, int]] = {}
        for queue, state, count in self._read(sql.COUNTS, (time.time(),)):
            per_queue = result.setdefault(str(queue), dict.fromkeys(STATES, 0))
            per_queue[str(state)] = int(count)
        return result

    def next_scheduled_eta(self) -> float | None:
        """The earliest eta of a scheduled job, or None if none waits."""
        (row,) = self._read(sql.NEXT_SCHEDULED)
        return None if row[0] is None else float(row[0])

    def changes(self) -> int:
        """A new number at each call: PostgreSQL has no cheap commit counter to look at.

        The consumer then claims at each poll (one cheap round trip when
        nothing is ready); NOTIFY wakes it in between. Listeners whose
        connection was lost are reopened here, on the dispatcher's own
        schedule.
        """
        self.notifier.revive()
        return next(self._ticks)

    def maintenance(self) -> None:
        """Nothing to do: PostgreSQL's autovacuum keeps the jobs table (docs/postgres.md)."""

    # -- consumers ---------------------------------------------------------------

    def claim(
        self, owner: str, lease: float, now: float, limit: int,
        queues: Sequence[str] | None = None, promote: bool = False, start_now: int | None = None,
    ) -> list[ClaimedJob]:
        """``exchange`` with no outcomes."""
        return self.exchange((), owner, lease, now, limit, queues, promote, start_now)[1]

    def finish(self, outcomes: Sequence[Outcome]) -> list[bool]:
        """``exchange`` with nothing to claim."""
        return self.exchange(outcomes, "", 0.0, 0.0, 0)[0]

    def exchange(
        self, outcomes: Sequence[Outcome], owner: str, lease: float, now: float,
        limit: int, queues: Sequence[str] | None = None, promote: bool = False,
        start_now: int | None = None,
    ) -> tuple[list[bool], list[ClaimedJob]]:
        """Write these outcomes and claim up to ``limit`` jobs, in one transaction.

        Sent in one round trip (psycopg's pipeline). A claim whose answer was
        lost with its connection may have committed: the consumer never saw
        the jobs it took, so its next claim first puts them back (see
        ``_unseen``).
        """
        written_ids: set[int] = set()
        rows: list[tuple[Any, ...]] = []
        claiming = limit > 0
        unseen = self._unseen(owner) if claiming else None
        settle = None
        try:
            if not claiming:
                if not outcomes:
                    return [], []
                conn = self._conn()
                written_ids = {r[0] for r in conn.execute(
                    sql.FINISH, _finish_arrays(outcomes)).fetchall()}
            else:
                conn = self._conn()
                params = self._claim_params(owner, lease, now, limit, queues, start_now)
                claim = sql.CLAIM.format(
                    queues=" AND queue = ANY(%(queues)s)" if queues else "")
                with _one_round_trip(conn):
                    finish_cur = conn.execute(sql.FINISH, _finish_arrays(outcomes)) \
                        if outcomes else None
                    if unseen is not None:
                        settle = conn.execute(sql.RELEASE_UNSEEN, (owner, unseen))
                    if promote:
                        conn.execute(sql.PROMOTE_DUE, (now,))
                    claim_cur = conn.execute(claim, params)
                if finish_cur is not None:
                    written_ids = {r[0] for r in finish_cur.fetchall()}
                rows = claim_cur.fetchall()
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) \
                    and not isinstance(exc, pg_errors.QueryCanceled):
                with self._held_lock:
                    if claiming:
                        self._unsure.add(owner)
                    # Written or not: the consumer sends them again (see _finish_late).
                    self._maybe_written.update(o.id for o in outcomes)
            raise self._translate(exc) from None
        if settle is not None:
            self._settled(owner, settle.rowcount)
        written = [o.id in written_ids for o in outcomes]
        if not all(written):
            written = self._finish_late(outcomes, written)
        jobs = [_claimed(row) for row in rows]
        jobs.sort(key=_hand_out_order)
        self._track(outcomes, owner, jobs)
        return written, jobs

    def _unseen(self, owner: str) -> list[int] | None:
        """If a claim of ``owner``'s may have committed unseen: the ids it does hold, else None.

        Every running row of ``owner`` but these was claimed by a transaction
        whose answer never came (the connection broke after its commit): the
        consumer never ran them, and the next claim or renewal puts them back
        without using an attempt.
        """
        with self._held_lock:
            if owner not in self._unsure:
                return None
            return list(self._held.get(owner, ()))

    def _settled(self, owner: str, released: int) -> None:
        with self._held_lock:
            self._unsure.discard(owner)
        if released:
            log.warning("put back %d task(s) claimed by a transaction whose answer was lost "
                        "with its connection (they had not started)", released)

    def _claim_params(self, owner: str, lease: float, now: float, limit: int,
                      queues: Sequence[str] | None, start_now: int | None) -> dict[str, object]:
        start = limit if start_now is None else max(0, min(start_now, limit))
        return {"limit": limit, "start_now": start, "owner": owner, "lease": lease,
                "boot": self._boot, "mono": real_monotonic() + lease, "at": now,
                "queues": list(queues) if queues else None}

    def _finish_late(self, outcomes: Sequence[Outcome], written: list[bool]) -> list[bool]:
        """The outcomes refused by the batch: a completed attempt still counts (sqlite.py).

        An outcome sent again after its transaction's answer was lost with
        the connection may have been written by it: if the row holds exactly
        that outcome (its owner, attempt, state and finishing time), it was.
        """
        written = list(written)
        with self._held_lock:
            again = [(i, o) for i, (o, ok) in enumerate(zip(outcomes, written, strict=True))
                     if not ok and o.id in self._maybe_written]
            self._maybe_written.difference_update(o.id for o in outcomes)
        if again:
            rows = self._read(sql.ALREADY_WRITTEN, (
                [o.id for _, o in again], [o.owner for _, o in again],
                [o.attempt for _, o in again], [o.state for _, o in again],
                [o.finished_at for _, o in again]))
            found = {int(r[0]) for r in rows}
            for i, outcome in again:
                written[i] = outcome.id in found
        late = [(i, o) for i, (o, ok) in enumerate(zip(outcomes, written, strict=True))
                if not ok and o.state == "done"]
        if not late:
            return written
        with self._write() as conn:
            for i, outcome in late:
                if conn.execute(sql.FINISH_LATE, (_bytes(outcome.result), outcome.finished_at,
                                               outcome.started_at, outcome.attempt,
                                               outcome.id)).rowcount == 1:
                    written[i] = True
                    # Its history row said lost: it says done now.
                    conn.execute(sql.HISTORY_ADD, _history_row(outcome))
                    log.warning("job %s finished after its lease was taken back; its result "
                                "is kept and it will not run again", outcome.id)
        return written

    def _finish_in(self, conn: psycopg.Connection[Any], outcomes: Sequence[Outcome]
                   ) -> list[bool]:
        done = {r[0] for r in conn.execute(sql.FINISH, _finish_arrays(outcomes)).fetchall()}
        return [o.id in done for o in outcomes]

    def _track(self, outcomes: Sequence[Outcome], owner: str, jobs: list[ClaimedJob]) -> None:
        # The jobs each consumer holds, for _unseen: a set update per
        # batch, not per statement.
        with self._held_lock:
            for outcome in outcomes:
                held = self._held.get(outcome.owner)
                if held is not None:
                    held.discard(outcome.id)
            if jobs:
                self._held.setdefault(owner, set()).update(job.id for job in jobs)

    def record_start(self, owner: str, job_id: int, attempt: int, now: float,
                     outcomes: Sequence[Outcome] = ()) -> tuple[list[bool], bool]:
        """Count a claimed-ahead job's attempt before it runs, and ``finish`` ``outcomes``."""
        with self._write() as conn:
            written = self._finish_in(conn, outcomes) if outcomes else []
            ours = conn.execute(sql.RECORD_START, (now, job_id, owner, attempt)).rowcount == 1
        if not all(written):
            written = self._finish_late(outcomes, written)
        self._track(outcomes, owner, [])
        if not ours:
            with self._held_lock:
                self._held.get(owner, set()).discard(job_id)
        return written, ours

    def renew(self, owner: str, lease: float, now: float,
              started: Sequence[tuple[int, int, float]] = ()) -> int:
        """Extend ``owner``'s leases (on both clocks); record the starts given.

        After a claim whose answer was lost with its connection, this first
        puts back the jobs ``owner`` holds in the database but was never
        handed (they had not started; no attempt is used).
        """
        unseen = self._unseen(owner)
        released = 0
        with self._write() as conn:
            if unseen is not None:
                released = conn.execute(sql.RELEASE_UNSEEN, (owner, unseen)).rowcount
            if started:
                with conn.cursor() as cur:
                    cur.executemany(sql.RECORD_START, [(at, job_id, owner, attempt)
                                                    for job_id, attempt, at in started])
            renewed = conn.execute(sql.RENEW, (lease, real_monotonic() + lease, owner)).rowcount
        if unseen is not None:
            self._settled(owner, released)
        return renewed

    def release(self, owner: str, jobs: Sequence[tuple[int, int]] | None = None) -> int:
        """Put back jobs ``owner`` holds (all, or these ``(id, attempt)``), using no attempt."""
        with self._write() as conn:
            if jobs is None:
                count = conn.execute(sql.RELEASE, (owner,)).rowcount
            else:
                count = sum(conn.execute(sql.RELEASE_ONE, (owner, job_id, attempt)).rowcount
                            for job_id, attempt in jobs)
        with self._held_lock:
            if jobs is None:
                self._held.pop(owner, None)
            else:
                self._held.get(owner, set()).difference_update(job_id for job_id, _ in jobs)
        return count

    def reap_expired(self, now: float, mine: Sequence[str] = ()) -> list[Reaped]:
        """Take back running jobs whose lease ran out: requeued, or failed if out of attempts.

        Never those of the owners in ``mine``. A lease held on this kernel
        boot is read on the monotonic clock, any other on the database's
        clock: a consumer never judges another host by its own wall clock.
        """
        # Without a boot id, no monotonic reading can be compared: the database's clock.
        boot = self._boot or "\x00no boot id"
        params = (list(mine), boot, real_monotonic())
        if not self._read(sql.ANY_EXPIRED, params):
            return []
        return self._reap(sql.EXPIRED, params, now, "its lease expired")

    def reap_owner(self, owner: str, now: float) -> list[Reaped]:
        """Take back every running job of a consumer known to be dead."""
        return self._reap("owner = %s", (owner,), now, "its consumer died")

    def _reap(self, cond: str, params: tuple[object, ...], now: float,
              why: str) -> list[Reaped]:
        with self._write() as conn:
            return reap(conn, sql, cond, params, now, why)

    def purge_finished(self, before: float, batch: int = 1000,
                       batches: int | None = None) -> int:
        """Delete finished jobs older than ``before``, a batch per transaction; how many.

        At most ``batches`` transactions if given.
        """
        total = 0
        for _ in itertools.count() if batches is None else range(batches):
            with self._write() as conn:
                row = conn.execute(sql.PURGE, (before, batch)).fetchone()
            deleted = int(row[0]) if row else 0
            total += deleted
            if deleted < batch:
                break
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
        with self._held_lock:
            self._held.pop(consumer_id, None)
            self._unsure.discard(consumer_id)

    def consumers(self) -> list[ConsumerInfo]:
        """Every registered consumer."""
        return [ConsumerInfo(*row) for row in self._read(sql.CONSUMERS)]

    # -- periodic tasks --------------------------------------------------------------

    def sync_periodic(self, name: str, crontab: str, first_fire: float) -> float:
        """Make sure ``name`` has a slot for this crontab; its stored next fire time."""
        with self._write() as conn:
            conn.execute(sql.PERIODIC_ADD, (name, crontab, first_fire))
            conn.execute(sql.PERIODIC_RESET, (crontab, first_fire, name, crontab))
            row = conn.execute(sql.PERIODIC_SLOT, (name,)).fetchall()
        return float(row[0][1])

    def fire_periodic(self, name: str, slot: float, next_fire: float,
                      job: NewJob | None, now: float) -> float:
        """Move ``name`` from ``slot`` to ``next_fire`` and enqueue ``job``, atomically.

        Returns ``next_fire`` if this call won, else the slot another stored.
        """
        with self._write() as conn:
            if conn.execute(sql.PERIODIC_ADVANCE, (next_fire, name, slot)).rowcount == 1:
                if job is not None:
                    conn.execute(sql.ENQUEUE, _job_row(job, now))
                    conn.execute(sql.NOTIFY, (self.channel,))
                return next_fire
            row = conn.execute(sql.PERIODIC_SLOT, (name,)).fetchall()
        return float(row[0][1]) if row else next_fire

    def periodic_slots(self) -> list[tuple[str, str, float]]:
        """``(name, crontab, next_fire)`` of every stored periodic slot."""
        return [(str(n), str(c), float(f)) for n, c, f in self._read(sql.PERIODIC_ALL)]

    # -- operating the queue -----------------------------------------------------------

    def job(self, job_id: int, now: float) -> JobDetail | None:
        """Everything stored about a job, with its history; None if there is none."""
        rows = self._read(sql.DETAIL, (job_id,))
        if not rows:
            return None
        return detail(rows[0], self._read(sql.HISTORY_OF, (job_id,)), now)

    def jobs(self, selection: Selection, limit: int, now: float) -> list[JobDetail]:
        """Up to ``limit`` jobs of ``selection``, newest first, each with its history."""
        found: list[tuple[Any, ...]] = []
        for part in parts(selection, now, "%s"):
            found += self._read(sql.LIST.format(where=part.where), (*part.params, limit))
        found.sort(key=lambda row: int(row[0]), reverse=True)
        found = found[:limit]
        history: dict[int, list[tuple[Any, ...]]] = {}
        if found:
            for row in self._read(sql.HISTORY_OF_MANY, ([r[0] for r in found],)):
                history.setdefault(int(row[0]), []).append(row)
        return [detail(row, history.get(int(row[0]), []), now) for row in found]

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
                conn.execute(sql.NOTIFY, (self.channel,))
        return state  # type: ignore[no-any-return]

    def retry_failed(self, queues: Sequence[str] | None, names: Sequence[str] | None,
                     now: float) -> int:
        """``retry`` every failed job (of these queues and task names); how many."""
        selection = Selection(("failed",), _tuple(queues), _tuple(names))
        return self._batches(sql.RETRY_BATCH, parts(selection, now, "%s"), (now,), notify=True)

    def purge(self, selection: Selection, now: float) -> int:
        """Delete the jobs of ``selection`` and their history; how many.

        Raises ``ValueError`` for a selection that may hold running jobs.
        """
        if selection.states is None or "running" in selection.states:
            raise ValueError("running jobs cannot be purged: their consumers own them")
        return self._batches(sql.DELETE_BATCH, parts(selection, now, "%s"), (),
                             forget_history=True)

    def revoke_all(self, name: str, now: float) -> int:
        """Revoke every queued or scheduled job of task ``name``; how many."""
        selection = Selection(("queued", "scheduled"), None, (name,))
        return self._batches(sql.REVOKE_ALL, parts(selection, now, "%s"), (now, REVOKED_ALL))

    def restore_all(self, name: str, now: float) -> int:
        """Queue again (or schedule, if their eta is later) the jobs ``revoke_all`` revoked."""
        part = Part("state = 'revoked' AND name = %s AND error_message = %s", (name, REVOKED_ALL))
        return self._batches(sql.RESTORE_ALL, [part], (now,), notify=True)

    def _batches(self, statement: str, where: Sequence[Part], params: tuple[object, ...],
                 forget_history: bool = False, notify: bool = False) -> int:
        # Each batch its own transaction, walking the ids upwards. A row that
        # a consumer holds locked at that moment is being claimed: it is left
        # alone, as a call that started would be.
        total = 0
        for part in where:
            batch_sql = statement.format(where=part.where)
            after = -1
            while True:
                with self._write() as conn:
                    ids = [int(r[0]) for r in conn.execute(
                        batch_sql, (*params, *part.params, after, ADMIN_BATCH)).fetchall()]
                    if forget_history and ids:
                        conn.execute(sql.HISTORY_DELETE, (ids,))
                    if notify and ids:
                        conn.execute(sql.NOTIFY, (self.channel,))
                total += len(ids)
                if len(ids) < ADMIN_BATCH:
                    break
                after = max(ids)
        return total

    def pause(self, queue: str, now: float) -> bool:
        """Stop claims from taking jobs of ``queue``; False if it was paused already."""
        with self._write() as conn:
            return conn.execute(sql.PAUSE, (queue, now)).rowcount == 1

    def resume(self, queue: str) -> bool:
        """Let claims take jobs of ``queue`` again; False if it was not paused."""
        with self._write() as conn:
            resumed = conn.execute(sql.RESUME, (queue,)).rowcount == 1
            if resumed:
                conn.execute(sql.NOTIFY, (self.channel,))
        return resumed

    def paused(self) -> dict[str, float]:
        """The paused queues, each with the epoch time it was paused."""
        return {str(q): float(at) for q, at in self._read(sql.PAUSED_SINCE)}

    def running(self) -> dict[str, list[int]]:
        """The ids of the running jobs, by the consumer that owns them."""
        found: dict[str, list[int]] = {}
        for owner, job_id in self._read(sql.RUNNING):
            found.setdefault(str(owner), []).append(int(job_id))
        return found


# -- rows -------------------------------------------------------------------------------


@contextmanager
def _one_round_trip(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """One transaction sent as one pipeline: BEGIN, the statements, COMMIT, one sync.

    ``conn.transaction()`` inside a pipeline syncs at its start and its end,
    three more round trips than the statements need; on the claim that is
    the idle consumer's latency (docs/benchmarks.md).
    """
    try:
        with conn.pipeline():
            conn.execute("BEGIN")
            yield
            conn.execute("COMMIT")
    except BaseException:
        # A failed statement leaves the transaction open and aborted.
        if not conn.closed and conn.info.transaction_status != TransactionStatus.IDLE:
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")
        raise


def _tuple(values: Sequence[str] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(values)


def _bytes(value: str | bytes | None) -> bytes | None:
    """Payloads and results live in BYTEA columns: text as UTF-8, bytes as they are."""
    return value.encode() if isinstance(value, str) else value


def _job_row(job: NewJob, now: float) -> tuple[Any, ...]:
    state = "scheduled" if job.eta > now else "queued"
    return (job.id, job.name, job.queue, job.priority, state, _bytes(job.payload), job.eta,
            job.expires, job.max_attempts, job.created_at)


def _finish_arrays(outcomes: Sequence[Outcome]) -> tuple[list[Any], ...]:
    return (
        [o.id for o in outcomes], [o.owner for o in outcomes], [o.attempt for o in outcomes],
        [o.state for o in outcomes], [o.eta for o in outcomes],
        [_bytes(o.result) for o in outcomes], [o.error_type for o in outcomes],
        [o.error_message for o in outcomes], [o.traceback for o in outcomes],
        [o.finished_at if o.state in ("done", "failed", "expired") else None
         for o in outcomes],
        [o.started_at for o in outcomes], [attempt_outcome(o) for o in outcomes],
        [o.finished_at for o in outcomes],  # when the attempt ended, for its history
    )


def _history_row(outcome: Outcome) -> tuple[object, ...]:
    # The attempt's number in the call's whole life: earlier_attempts + attempt.
    return (outcome.attempt, outcome.started_at, outcome.finished_at, attempt_outcome(outcome),
            outcome.error_type, outcome.error_message, outcome.traceback, outcome.owner,
            outcome.id)


def _claimed(row: tuple[Any, ...]) -> ClaimedJob:
    job = ClaimedJob(*row[:9])
    job.counted, job.suspect = bool(row[9]), bool(row[10])
    return job


def _hand_out_order(job: ClaimedJob) -> tuple[bool, int, float, int]:
    return (not job.counted, -job.priority, job.eta, job.id)
