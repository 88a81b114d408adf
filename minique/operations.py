"""Operating the queue: reading calls and counts, retrying, purging, pausing, revoking.

``Minique`` inherits these methods (api.md, "Working with tasks"); they are
kept here, apart from declaring and enqueueing tasks, because they are what
an operator reaches for, and they only read and change rows through the
store's protocol.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

from . import options as check
from .events import Events
from .result import Result
from .store import STATES, State, Store
from .store.selection import Selection
from .task import Task

if TYPE_CHECKING:
    from .app import Minique
    from .job import Job
    from .records import ConsumerStatus


class Operations:
    """What an operator does with a queue; mixed into ``Minique``."""

    # Set by Minique.configure and Minique's declarations.
    store: Store
    events: Events
    lease: float
    zone: dt.tzinfo
    tasks: dict[str, Task[Any, Any]]

    if TYPE_CHECKING:
        @property
        def periodic_tasks(self) -> dict[str, Task[Any, Any]]: ...

        def wake_consumers(self) -> None: ...

    def _queue(self) -> Minique:
        return cast("Minique", self)  # Operations is only ever mixed into Minique

    def counts(self, queue: str | None = None) -> dict[str, int]:
        """Tasks by status, over all queues or one; every status is a key, zeros included."""
        by_queue = self.counts_by_queue()
        return sum_counts(by_queue.values() if queue is None else
                          [by_queue[queue]] if queue in by_queue else [])

    def counts_by_queue(self) -> dict[str, dict[str, int]]:
        """Tasks by queue, then by status (every status a key), in one read of the database.

        Only queues that hold tasks are keys. ``sum_counts(counts.values())``
        gives the totals of this same read.
        """
        return self.store.counts_by_queue()

    def next_fire_times(self) -> dict[str, dt.datetime | None]:
        """When each periodic task of this queue fires next, in the queue's zone, by name.

        ``None`` until a consumer with this crontab has stored the task's
        next slot (a new task, or one whose crontab changed).
        """
        stored = {name: (expr, fire) for name, expr, fire in self.store.periodic_slots()}
        times: dict[str, dt.datetime | None] = {}
        for name, task in sorted(self.periodic_tasks.items()):
            assert task.periodic is not None
            slot = stored.get(name)
            times[name] = None if slot is None or slot[0] != task.periodic.expr \
                else dt.datetime.fromtimestamp(slot[1], self.zone)
        return times

    def consumers(self, *, live_only: bool = True) -> list[ConsumerStatus]:
        """The live consumers on this database, oldest first.

        A consumer is live while it is registered (it unregisters when it
        stops) and its heartbeat is recent: it renews its leases and
        heartbeat every lease / 3 seconds (at most every 10 s), and one that
        missed two renewals is not live ("silent": stuck, or dead on another
        host). One whose process is gone from this host is "dead" at once.
        ``live_only=False`` returns those too, each with its ``state``.
        """
        from .consumer.identity import describe_self, state_of, status_of

        now = time.time()
        me = describe_self("", "", 0, now)
        running = self.store.running()
        found = []
        for info in sorted(self.store.consumers(), key=lambda c: (c.started_at, c.id)):
            state = state_of(info, me, now, self.lease)
            if state == "live" or not live_only:
                ids = tuple(str(job_id) for job_id in running.get(info.id, ()))
                found.append(dataclasses.replace(status_of(info, state), running=ids))
        return found

    # -- operating the queue -------------------------------------------------------

    def job(self, id: str) -> Job:
        """Everything stored about the call with this id, with its history of attempts.

        Raises ``LookupError`` if the database holds no such call (never
        stored, purged, or deleted past ``result_ttl``).
        """
        record = self.store.job(_key(id), time.time())
        if record is None:
            raise LookupError(_unknown(self, id))
        from .job import job_from  # see minique/__init__.py: a Job is built on demand

        return job_from(self._queue(), record)

    def jobs(self, status: str | Sequence[str] | None = None,
             queue: str | Sequence[str] | None = None,
             task: TaskFilter | None = None, limit: int = 100) -> list[Job]:
        """Up to ``limit`` calls, newest first; ``None`` filters mean any.

        ``status``, ``queue`` and ``task`` each take a string or a list of
        strings (a task also as the task object). Raises ``ValueError`` for a
        status that does not exist or a limit below 1.
        """
        limit = check.integer(limit, "limit", "give how many calls to list at most, an int "
                              ">= 1", low=1)
        selection = Selection(_statuses(status), _names(queue, "queue"), _task_names(task))
        from .job import job_from

        return [job_from(self._queue(), r) for r in self.store.jobs(selection, limit, time.time())]

    def retry(self, id: str) -> Result[Any]:
        """Queue a failed, expired or revoked call again, with its task's retries afresh.

        Its history is kept (the new attempts number on from the old), and
        its deadline (``expires``) is dropped. Raises ``LookupError`` for an
        unknown id, and ``ValueError`` saying why for a call in any other
        status.
        """
        state = self.store.retry(_key(id), time.time())
        if state is None:
            raise LookupError(_unknown(self, id))
        if state not in ("failed", "expired", "revoked"):
            raise ValueError(f"call {id} cannot be retried: it is {state}, "
                             f"{_WHY_NOT_RETRY.get(state, '')}; only failed, expired and "
                             "revoked calls are retried")
        self.wake_consumers()
        return Result(self._queue(), str(id))

    def retry_failed(self, queue: str | Sequence[str] | None = None,
                     task: TaskFilter | None = None) -> int:
        """``retry`` every failed call, or those of these queues or tasks; returns how many."""
        count = self.store.retry_failed(_names(queue, "queue"), _task_names(task), time.time())
        if count:
            self.wake_consumers()
        return count

    def purge(self, status: str | Sequence[str], *, queue: str | Sequence[str] | None = None,
              task: TaskFilter | None = None,
              older_than: float | dt.timedelta | None = None) -> int:
        """Delete the calls in these statuses, and their history; returns how many.

        ``older_than`` (seconds or a ``timedelta``) keeps the calls that
        finished more recently than that, or, if unfinished, were enqueued
        more recently. Deletes a batch per transaction, so producers and
        consumers go on meanwhile. Raises ``ValueError`` for ``"running"``
        (their consumers own them: revoke or wait), an unknown status or a
        negative age.
        """
        statuses = _statuses(status)
        if not statuses:
            raise ValueError("give the status of the calls to purge, e.g. 'done' or 'failed'")
        if "running" in statuses:
            raise ValueError("running calls cannot be purged: their consumers own them; wait "
                             "for them to finish, then purge them")
        before = None
        if older_than is not None:
            seconds = older_than.total_seconds() if isinstance(older_than, dt.timedelta) \
                else older_than
            seconds = check.real(seconds, "older_than", "give an age in seconds or a "
                                 "timedelta, >= 0")
            before = time.time() - seconds
        selection = Selection(statuses, _names(queue, "queue"), _task_names(task), before)
        return self.store.purge(selection, time.time())

    def pause(self, queue: str) -> None:
        """Stop consumers, everywhere, from starting calls of ``queue`` until ``resume``.

        The queue still accepts calls. Kept in the database: it holds for
        every consumer, and across restarts. A consumer starts no call of it
        that it claims after this returns; the few it may have claimed just
        before (a buffer of short tasks) start within a fraction of a second.
        A call's ``expires`` still counts while its queue is paused.
        """
        self.store.pause(_name(queue, "queue"), time.time())

    def resume(self, queue: str) -> None:
        """Let consumers start calls of a paused ``queue`` again (nothing if it is not paused)."""
        if self.store.resume(_name(queue, "queue")):
            self.wake_consumers()

    def paused(self) -> set[str]:
        """The queues paused now (``pause``)."""
        return set(self.store.paused())

    def revoke_stored(self, key: int) -> bool:
        """``Result.revoke``'s work on the stored call ``key``: True if it will not run.

        Runs the ``"revoked"`` handlers when this call revoked it.
        """
        waiting = False
        if self.events.wanted("revoked"):
            record = self.store.read(key)
            waiting = record is not None and record.state in ("queued", "scheduled")
        revoked = self.store.revoke(key, time.time())
        if revoked and waiting:
            self.events.emit_now("revoked", [key])
        return revoked

    def revoke_all(self, task: str | Task[Any, Any]) -> int:
        """Revoke every call of ``task`` (its name or the task) that has not started; how many.

        As ``Result.revoke`` does for each (without their ``"revoked"``
        events). Calls made afterwards are not affected (unlike Huey's
        ``revoke()``): pause the queue to hold them. ``restore_all`` undoes it.
        """
        return self.store.revoke_all(_task_name(task), time.time())

    def restore_all(self, task: str | Task[Any, Any]) -> int:
        """Queue again the calls of ``task`` that ``revoke_all`` revoked; how many.

        A call revoked on its own (``Result.revoke``) stays revoked; retry it
        with ``retry``.
        """
        count = self.store.restore_all(_task_name(task), time.time())
        if count:
            self.wake_consumers()
        return count


TaskFilter = str | Task[Any, Any] | Sequence[str | Task[Any, Any]]

_WHY_NOT_RETRY = {
    "queued": "waiting for a consumer",
    "scheduled": "waiting for its time (or its next retry)",
    "running": "a consumer runs it now",
    "done": "it ran and succeeded",
}


def _key(id: str) -> int:
    """The stored key of a call id; ``LookupError`` for what no call id looks like."""
    try:
        key = int(id)
    except (TypeError, ValueError):
        key = -1
    if not 0 <= key < 2**63:
        raise LookupError(f"{id!r} is not a minique call id (ids are decimal numbers such as "
                          "the Result.id of a call)")
    return key


def _unknown(mq: Operations, id: str) -> str:
    return (f"no call with id {id} in {mq.store.location}: it was never stored there, or it "
            "finished longer ago than the queue's result_ttl (or was purged) and was deleted")


def _name(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} {value!r}: give a {what} name, a non-empty string")
    return value


def _names(value: str | Sequence[str] | None, what: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return (_name(value, what),)
    names = tuple(_name(v, what) for v in value)
    if not names:
        raise ValueError(f"an empty list of {what}s matches nothing; give None for any {what}")
    return names


def _statuses(value: str | Sequence[str] | None) -> tuple[State, ...] | None:
    names = _names(value, "status")
    for name in names or ():
        if name not in STATES:
            raise ValueError(f"{name!r} is not a status; the statuses are "
                             f"{', '.join(STATES)}")
    return names  # type: ignore[return-value]


def _task_name(task: str | Task[Any, Any]) -> str:
    return _name(task.name if isinstance(task, Task) else task, "task")


def _task_names(task: TaskFilter | None) -> tuple[str, ...] | None:
    if task is None or isinstance(task, str | Task):
        return None if task is None else (_task_name(task),)
    return _names([_task_name(t) for t in task], "task")


def sum_counts(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    """The totals by status of several queues' counts; every status is a key, zeros included."""
    totals: dict[str, int] = dict.fromkeys(STATES, 0)
    for per_state in counts:
        for state, count in per_state.items():
            totals[state] += count
    return totals
