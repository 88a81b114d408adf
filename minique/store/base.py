"""What a store is: the only seam between minique and a database engine.

The app, the consumer, the CLI and the integrations speak to a ``Store`` and
its ``Notifier`` and to nothing else: no SQL, no file path, no engine option
outside ``minique/store/``. Each engine keeps its own hot-path SQL behind
these methods (``sqlite.py``; a PostgreSQL store joins beside it), and one
contract suite (tests/test_store_contract.py) holds every store to the same
behaviour.

Rules every store keeps, whatever its engine:

- Each method is one transaction, or a few short ones that are each safe to
  repeat; none keeps a transaction open when it returns.
- A call that returned from ``enqueue`` survives the crash of any process.
- The attempt number of a running job is the same before and after its start
  is recorded; every write of an attempt is guarded by its owner and number,
  so an attempt that lost its lease cannot overwrite what came after it.
- Errors are ``minique.errors`` types (``DatabaseError``, ``ConfigurationError``)
  with a message that says what to do; never an engine's own exception.

Part two grows this protocol where its features need the database (keys,
locks and limits inside ``exchange``'s claim; attempt history and counters
inside its finish; workflow releases in the same transaction; admin queries
for listing, retrying, purging and pausing): each as a method here, with the
contract tests that define it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from .records import (
    ClaimedJob,
    ConsumerInfo,
    JobDetail,
    JobRecord,
    NewJob,
    Outcome,
    Reaped,
    State,
)
from .selection import Selection


class Listener(Protocol):
    """A consumer's end of the wake-up channel: readable when a producer has nudged it."""

    def fileno(self) -> int:
        """A descriptor that polls readable after a nudge (for ``select.poll``)."""
        ...

    def drain(self) -> None:
        """Consume the nudges that woke it, so that the descriptor reads idle again."""
        ...

    def ready_in(self) -> float:
        """Seconds to leave the descriptor unwatched: 0, or more while nudges flood in.

        A flood of nudges must not cost the consumer a core: it looks at
        them at a bounded rate and polls the store meanwhile.
        """
        ...

    def close(self) -> None:
        """Stop listening; idempotent."""
        ...


class Notifier(Protocol):
    """Wake-ups from producers to sleeping consumers; a lost one only delays a task by a poll."""

    def notify(self) -> None:
        """Wake the consumers of this store, after a commit. Cheap when nobody listens."""
        ...

    def listen(self, consumer_id: str) -> Listener | None:
        """Start listening for ``consumer_id``; None where wake-ups cannot work (poll only)."""
        ...

    def after_fork(self) -> None:
        """In a forked child: drop what belongs to the parent (locks, sockets)."""
        ...


class Store(Protocol):
    """Moves job rows through their states; knows nothing of tasks as functions."""

    @property
    def location(self) -> str:
        """Where the data lives, for people and for worker processes to find the same queue.

        An absolute file path, or a URL without its password.
        """
        ...

    @property
    def notifier(self) -> Notifier:
        """The wake-ups of this store."""
        ...

    # -- producers -------------------------------------------------------------------

    def enqueue(self, jobs: Sequence[NewJob], now: float) -> None:
        """Store ``jobs`` in one transaction: ``queued``, or ``scheduled`` if their eta is later.

        Raises ``DuplicateJobId`` if an id is taken (the caller picks new ids).
        """
        ...

    def record_finished(self, job: NewJob, outcome: Outcome,
                        earlier: Sequence[Outcome] = ()) -> None:
        """Store a call that already ran (immediate mode) and its outcome, in one transaction.

        ``earlier`` are the outcomes of the attempts before the last (immediate
        mode retries at once): each gets its history row, as ``finish``
        writes them, in the same transaction.
        """
        ...

    def revoke(self, job_id: int, now: float) -> bool:
        """Mark a job that has not started ``revoked``; True if it will not run."""
        ...

    # -- readers ---------------------------------------------------------------------

    def read(self, job_id: int) -> JobRecord | None:
        """The job's row, or None; a call past its expiry reads as ``expired``."""
        ...

    def counts_by_queue(self) -> dict[str, dict[str, int]]:
        """``{queue: {state: count}}`` with every state present, in one read."""
        ...

    def next_scheduled_eta(self) -> float | None:
        """The earliest eta of a scheduled job, or None if none waits."""
        ...

    def changes(self) -> int:
        """A number that changes when another connection commits (-1: cannot tell).

        The consumer's cheap poll: it claims only when this moved, or when
        told by a nudge. A store that cannot tell returns a new number each
        time, and the consumer claims at each poll.
        """
        ...

    # -- consumers: the hot path -----------------------------------------------------

    def exchange(
        self, outcomes: Sequence[Outcome], owner: str, lease: float, now: float,
        limit: int, queues: Sequence[str] | None = None, promote: bool = False,
        start_now: int | None = None,
    ) -> tuple[list[bool], list[ClaimedJob]]:
        """Write these outcomes and claim up to ``limit`` jobs for ``lease`` seconds, atomically.

        Outcomes write history as ``finish`` says. The claim never takes a
        job of a paused queue (see ``pause``).

        Returns, per outcome, whether it was written (False: the attempt no
        longer owned its job), and the claimed jobs best first. The first
        ``start_now`` claimed (default all) count their attempt at once; the
        rest are claimed ahead and count it when their start is recorded.
        ``promote`` first makes due scheduled jobs ready.
        """
        ...

    def claim(
        self, owner: str, lease: float, now: float, limit: int,
        queues: Sequence[str] | None = None, promote: bool = False, start_now: int | None = None,
    ) -> list[ClaimedJob]:
        """``exchange`` with no outcomes."""
        ...

    def finish(self, outcomes: Sequence[Outcome]) -> list[bool]:
        """``exchange`` with nothing to claim.

        Every outcome written also writes its attempt's history row in the
        same transaction (table ``history``, key ``(job_id, number)`` where
        number is the row's ``earlier_attempts`` + the outcome's attempt),
        except a ``done`` outcome (the job's row is the record of its last
        attempt, and keeps its ``owner``) and an ``expired`` one (the call
        never started). The row's outcome is ``records.attempt_outcome(o)``:
        ``timeout`` for error type TaskTimeout, ``cancelled`` for Cancelled,
        else ``failed``, or ``retry`` for a state of queued/scheduled. An
        outcome that completes ``done`` after its attempt was taken back as
        lost turns that attempt's history row to ``done``. A batch of outcomes
        writes its history rows in one statement (executemany / unnest).
        """
        ...

    def record_start(self, owner: str, job_id: int, attempt: int, now: float,
                     outcomes: Sequence[Outcome] = ()) -> tuple[list[bool], bool]:
        """Count a claimed-ahead job's attempt before it runs, and ``finish`` ``outcomes``.

        Returns what ``finish`` returns, and False if the job is no longer
        ``owner``'s (it must not run).
        """
        ...

    def renew(self, owner: str, lease: float, now: float,
              started: Sequence[tuple[int, int, float]] = ()) -> int:
        """Extend ``owner``'s leases; record the starts ``(id, attempt, started_at)`` given."""
        ...

    def release(self, owner: str, jobs: Sequence[tuple[int, int]] | None = None) -> int:
        """Put back ``owner``'s jobs (all, or these ``(id, attempt)``) without using an attempt."""
        ...

    def reap_expired(self, now: float, mine: Sequence[str] = ()) -> list[Reaped]:
        """Take back running jobs whose lease ran out, never those of the owners in ``mine``.

        A job whose start was recorded gets a ``lost`` history row (error type
        WorkerLost, consumer: its owner) in the same transaction; one never
        started gets none.
        """
        ...

    def reap_owner(self, owner: str, now: float) -> list[Reaped]:
        """Take back every running job of a consumer known to be dead (as ``reap_expired``)."""
        ...

    def purge_finished(self, before: float, batch: int = 1000,
                       batches: int | None = None) -> int:
        """Delete jobs that finished before ``before`` and their history; how many.

        A batch per transaction; at most ``batches`` of them if given (a
        producer's sweep of results past their TTL does one batch a minute).
        """
        ...

    def maintenance(self) -> None:
        """The engine's own chores, called about once a second by each consumer (may do nothing)."""
        ...

    # -- operating the queue (mq.job, mq.jobs, mq.retry, mq.purge, mq.pause...) -------
    #
    # Not hot: plain statements, a batch per transaction where many rows may
    # change (ADMIN_BATCH = 500, walking ids upwards), so that producers and
    # consumers go on meanwhile. minique/store/selection.py turns a Selection
    # into SQL conditions either engine runs (pass the engine's placeholder),
    # and rows into records (``detail``).

    def job(self, job_id: int, now: float) -> JobDetail | None:
        """Everything stored about a job, with its history oldest first; None if there is none.

        Read as ``selection.detail`` reads a row of ``DETAIL_COLUMNS`` and the
        job's history rows (``HISTORY_COLUMNS``, by number): it adds the
        record of a done call's last attempt, and reads a call past its
        expiry as ``expired`` at ``now``.
        """
        ...

    def jobs(self, selection: Selection, limit: int, now: float) -> list[JobDetail]:
        """Up to ``limit`` jobs of ``selection`` (statuses as a reader sees them at ``now``).

        Newest first (by id, which grows with time), each with its history.
        Run each of ``selection.parts(selection, now, mark)`` with ``ORDER BY
        id DESC LIMIT limit`` and merge: each part is cheap on its own (the
        failed one uses the jobs_failed partial index).
        """
        ...

    def retry(self, job_id: int, now: float) -> State | None:
        """Queue a failed, expired or revoked job again, with a fresh count of attempts.

        In one transaction: read the status (a queued or scheduled call past
        its expiry is ``expired``); if it is one of those three, set state
        queued, eta ``now``, expires NULL, ``earlier_attempts +=
        attempts``, attempts 0, started 0, suspect 0, and clear the owner,
        lease, started_at, finished_at, result and error. Returns the status
        it had (the caller says why another cannot be retried), or None if
        there is no such job. Its history is kept.
        """
        ...

    def retry_failed(self, queues: Sequence[str] | None, names: Sequence[str] | None,
                     now: float) -> int:
        """``retry`` every failed job, or those of these queues and task names; how many."""
        ...

    def purge(self, selection: Selection, now: float) -> int:
        """Delete the jobs of ``selection`` and their history rows; how many.

        ``selection.before``: finished before it, or if unfinished enqueued
        before it. Raises ``ValueError`` if the selection may hold running
        jobs (no states, or "running"). A batch per transaction.
        """
        ...

    def revoke_all(self, name: str, now: float) -> int:
        """Revoke every queued or scheduled (and not expired) job of task ``name``; how many.

        As ``revoke`` does, with ``selection.REVOKED_ALL`` as their error
        message: ``restore_all`` puts back exactly these.
        """
        ...

    def restore_all(self, name: str, now: float) -> int:
        """Undo ``revoke_all``: its jobs of task ``name`` are queued again; how many.

        ``scheduled`` instead if their eta is after ``now``; finished_at and
        the error are cleared. Jobs revoked one by one stay revoked.
        """
        ...

    def pause(self, queue: str, now: float) -> bool:
        """Pause ``queue``: from this commit on, no claim takes its jobs; False if it was paused.

        Kept in table ``paused_queues``. Every claim (``exchange``) reads that
        table in its own transaction and leaves out the paused queues, so
        the pause holds for consumers anywhere at once; while none is
        paused the claim statement is the plain one.
        """
        ...

    def resume(self, queue: str) -> bool:
        """Let claims take jobs of ``queue`` again; False if it was not paused."""
        ...

    def paused(self) -> dict[str, float]:
        """The paused queues, each with the epoch time it was paused."""
        ...

    def running(self) -> dict[str, list[int]]:
        """The ids of the running jobs (oldest first), by the consumer that owns them."""
        ...

    # -- consumers: who is alive ----------------------------------------------------

    def register_consumer(self, info: ConsumerInfo) -> None:
        """Record a consumer's identity so that others can tell when it is gone."""
        ...

    def consumer_heartbeat(self, consumer_id: str, now: float) -> None:
        """Note that a consumer is alive."""
        ...

    def unregister_consumer(self, consumer_id: str) -> None:
        """Forget a consumer."""
        ...

    def consumers(self) -> list[ConsumerInfo]:
        """Every registered consumer."""
        ...

    # -- periodic tasks --------------------------------------------------------------

    def sync_periodic(self, name: str, crontab: str, first_fire: float) -> float:
        """Make sure ``name`` has a slot for this crontab; its stored next fire time."""
        ...

    def fire_periodic(self, name: str, slot: float, next_fire: float,
                      job: NewJob | None, now: float) -> float:
        """Move ``name`` from ``slot`` to ``next_fire`` and enqueue ``job``, atomically.

        Returns ``next_fire`` if this call won, else the slot another stored.
        """
        ...

    def periodic_slots(self) -> list[tuple[str, str, float]]:
        """``(name, crontab, next_fire)`` of every stored periodic slot."""
        ...

    def close(self) -> None:
        """Close this thread's connection (others close with their threads)."""
        ...
