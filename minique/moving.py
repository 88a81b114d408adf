"""Moving a queue's waiting calls from one store to another (``minique move``).

A team that outgrows one machine moves its queue from a SQLite file to
PostgreSQL; the calls that wait (queued, or scheduled for later, retries
included) go with it, with their ids, so that a ``Result`` handle saved
before the move finds its call in the new store. Finished calls stay where
they are. Nothing here knows an engine: it reads and writes through the
``Store`` protocol.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence

from .errors import DuplicateJobId
from .store import NewJob, Store
from .store.records import JobDetail
from .store.selection import Selection

log = logging.getLogger("minique")

BATCH = 500


def move_waiting(source: Store, target: Store, *, queues: Sequence[str] | None = None,
                 batch: int = BATCH) -> int:
    """Move the queued and scheduled calls of ``source`` (or of these queues) to ``target``.

    Each batch is stored in ``target`` first, keeping each call's id, task,
    queue, priority, arguments, time to run, expiry and remaining attempts,
    then revoked in ``source``: a move cut short by a crash can be run again,
    and copies nothing twice (a call already in ``target`` keeps that copy).
    Returns how many calls were moved. Run it while no consumer serves
    ``source``: a call a consumer starts meanwhile is not moved.
    """
    if source.location == target.location:
        raise ValueError(f"the source and the target are the same store ({source.location})")
    selection = Selection(states=("queued", "scheduled"), queues=tuple(queues) if queues else None)
    moved = 0
    while True:
        now = time.time()
        waiting = source.jobs(selection, batch, now)
        if not waiting:
            return moved
        _store(target, [_as_new(job) for job in waiting], now)
        # Revoked only once stored there; a call that started meanwhile stays.
        for job in waiting:
            if source.revoke(job.id, now):
                moved += 1
            else:
                log.warning("call %s started in the source while it was moved: it runs "
                            "there, and its copy in the target is revoked", job.id)
                target.revoke(job.id, now)


def _as_new(job: JobDetail) -> NewJob:
    # The attempts it has used stay used: the copy may try what remains.
    return NewJob(job.id, job.name, job.queue, job.priority, job.payload, job.eta, job.expires,
                  max(job.max_attempts - job.attempts, 1), job.created_at)


def _store(target: Store, jobs: list[NewJob], now: float) -> None:
    try:
        target.enqueue(jobs, now)
    except DuplicateJobId:
        # Some were moved by a run cut short: store the others one by one.
        for job in jobs:
            with contextlib.suppress(DuplicateJobId):
                target.enqueue([job], now)
