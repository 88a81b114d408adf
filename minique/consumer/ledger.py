"""What a consumer holds, and the one condition that guards it.

The dispatcher, the worker threads, the one-worker mode's flusher and
``stop()`` share the claimed jobs, the outcomes waiting to be written and
their counts. All of it lives here, changed only with ``cond`` held; every
change that another thread may wait for ends with ``notify()``, which also
pokes the dispatcher out of ``poll()`` through a pipe.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..attempt import Ran
from ..errors import MiniqueError
from ..store import ClaimedJob
from ..task import TaskOptions
from .tasklog import log_task_line

if TYPE_CHECKING:
    from ..app import Minique

log = logging.getLogger("minique")

# Tasks shorter than this on average are claimed ahead of free workers (a
# buffer of BUFFER_PER_WORKER each), so that claims and finishes batch. Long
# tasks are never buffered: another consumer may be idle and should get them.
SHORT_TASK = 0.02
BUFFER_PER_WORKER = 4
MIN_BUFFER = 32
# Tasks so short that MIN_BUFFER of them is a fraction of a millisecond are
# claimed AHEAD_SECONDS of work at a time, up to MAX_BUFFER: fewer, larger
# commits, and no other consumer waits long for what this one holds.
AHEAD_SECONDS = 0.005
MAX_BUFFER = 128


@dataclass(slots=True)
class Watch:
    """A thread worker's attempt that has a timeout."""

    job: ClaimedJob
    options: TaskOptions
    timeout: float
    deadline: float  # time.monotonic()


class Ledger:
    """The claimed jobs and pending outcomes of one consumer, under one condition."""

    def __init__(self, mq: Minique, workers: int, inline: bool) -> None:
        self.mq = mq
        self.workers = workers
        self.inline = inline  # one thread worker: the dispatcher runs the tasks
        self.cond = threading.Condition()
        self.ran: list[Ran] = []  # outcomes to write
        self.jobs: queue.SimpleQueue[ClaimedJob | None] = queue.SimpleQueue()  # for workers
        self.pending: deque[ClaimedJob] = deque()  # claimed, for the inline dispatcher to run
        self.inflight = 0  # claimed and not yet written back
        self.handed = 0  # given to worker threads and not yet handed back
        self.starting = 0  # process workers replacing their child between attempts
        self.waiting = 0  # put in the worker threads' queue, not yet taken
        # (id, attempt) -> (id, attempt, started_at) of calls claimed ahead that
        # have started and whose start the store does not know yet: the next
        # lease renewal records them (see Housekeeper.renew)
        self.unrecorded: dict[tuple[int, int], tuple[int, int, float]] = {}
        # keyed by (job id, attempt): a stale attempt must not touch its retry's entry
        self.watched: dict[tuple[int, int], Watch] = {}
        self.hint = True  # the store may hold ready work
        self.stopping = False
        self.abandon = False  # grace is over: write what is done and leave
        self.dispatched = False  # the dispatcher has left
        self.shut = False  # stop() is over
        self.in_task = False  # the inline dispatcher is running a task
        self.task_seq = 0  # tasks the inline dispatcher has started
        self.taken_over = False  # stop() gave up waiting for the inline dispatcher's task
        self.failed: BaseException | None = None  # the dispatcher could not go on
        # Recycling (thread workers): claim no more than this many jobs in all,
        # then stop (Consumer's max_tasks); None for no limit.
        self.budget: int | None = None
        self.avg_duration: float | None = None
        self.next_eta: float | None = None
        self.sleeping = False  # the dispatcher is in poll(): poke it through the pipe
        self.poked = False
        self.wake_r, self.wake_w = -1, -1

    # -- waking the dispatcher ----------------------------------------------------------

    def open_pipe(self) -> None:
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)

    def notify(self) -> None:
        """Wake whoever waits on the condition, and the dispatcher in ``poll()`` (cond held)."""
        self.cond.notify_all()
        if self.sleeping and not self.poked:
            self.poked = True
            # (a full pipe means it is being woken anyway)
            with contextlib.suppress(OSError):
                os.write(self.wake_w, b"!")

    def wake(self) -> None:
        """New work may be ready (cheap; any thread)."""
        with self.cond:
            self.hint = True
            self.notify()

    def close_pipe_when_done(self) -> None:
        # Called with cond held, by stop() and by the dispatcher as it leaves:
        # whichever comes last closes the pipe (a dispatcher stuck in a task
        # past the grace leaves after stop() has returned).
        if self.dispatched and self.shut and self.wake_r >= 0:
            for fd in (self.wake_r, self.wake_w):
                os.close(fd)
            self.wake_r = self.wake_w = -1

    # -- counts ---------------------------------------------------------------------------

    def capacity(self, finished: int = 0) -> int:
        """How many more jobs to claim now, once ``finished`` outcomes are written (cond held)."""
        buffer = 0
        avg = self.avg_duration
        if avg is not None and avg < SHORT_TASK:
            ahead = MAX_BUFFER if avg <= 0 else int(AHEAD_SECONDS * self.workers / avg)
            buffer = max(MIN_BUFFER, BUFFER_PER_WORKER * self.workers, min(MAX_BUFFER, ahead))
        room = self.workers + buffer - self.inflight + finished
        return room if self.budget is None else min(room, self.budget)

    def free_workers(self, finished: int) -> int:
        """How many of the jobs claimed now will start at once (cond held).

        None while jobs wait in this consumer: new ones queue behind them.
        """
        if self.waiting or (self.inline and self.pending):
            return 0
        return max(0, self.workers - (self.inflight - finished) - self.starting)

    # -- after a write --------------------------------------------------------------------

    def settle(self, ran: list[Ran], written: list[bool], claimed: list[ClaimedJob],
               limit: int) -> None:
        """Account for outcomes just written and jobs just claimed, and hand the jobs out."""
        # Their events are queued before the claimed jobs are handed out, so
        # that a retry's "started" never comes before the "retrying" it follows;
        # the jobs are handed out whatever happens there.
        try:
            self.mq.events.finished(ran, written)
        finally:
            self._hand_out(ran, claimed, limit)
        # Logged after the jobs are handed out: a log filter or handler that
        # raises must not leave claimed jobs unknown to the workers.
        self._log_written(ran, written)

    def _log_written(self, ran: list[Ran], written: list[bool]) -> None:
        """Log each outcome as written, or as ignored (it had been taken back)."""
        for r, ok in zip(ran, written, strict=True):
            if ok:
                log_task_line(r.level, r.message)
            else:
                log.warning("%s: ignored, the task had been taken back from this consumer",
                            r.message)

    def _hand_out(self, ran: list[Ran], claimed: list[ClaimedJob], limit: int) -> None:
        requeued = False
        # Under the lock: the flusher and the workers' start records write too.
        with self.cond:
            for r in ran:
                eta = r.outcome.eta
                if r.outcome.state == "queued":
                    requeued = True  # a retry without a wait: ready now
                elif r.outcome.state == "scheduled" and eta is not None:
                    self.next_eta = eta if self.next_eta is None else min(self.next_eta, eta)
                self.avg_duration = r.duration if self.avg_duration is None \
                    else 0.8 * self.avg_duration + 0.2 * r.duration
            self.inflight += len(claimed) - len(ran)
            if self.budget is not None:
                self.budget -= len(claimed)
            if self.inline:
                self.pending.extend(claimed)  # the dispatcher runs them, in order
            else:
                self.handed += len(claimed)
                self.waiting += len(claimed)
                for job in claimed:
                    self.jobs.put(job)
            if requeued or (limit and len(claimed) == limit):
                self.hint = True  # there may be more where these came from
            self.notify()
        if limit and len(claimed) < limit:
            self.refresh_next_eta()

    def refresh_next_eta(self) -> None:
        try:
            eta = self.mq.store.next_scheduled_eta()
        except MiniqueError as exc:
            log.debug("could not read the next scheduled time: %s", exc)
            eta = None
        with self.cond:
            self.next_eta = eta

    def started(self, job: ClaimedJob, at: float) -> None:
        """Note that a job claimed ahead has started, for the next lease renewal to record."""
        with self.cond:
            self.unrecorded[job.id, job.attempt] = (job.id, job.attempt, at)

    def ended(self, job: ClaimedJob, ran: Ran) -> None:
        """Hold an attempt's outcome for the next write (cond held)."""
        self.unrecorded.pop((job.id, job.attempt), None)
        self.ran.append(ran)

    def unrecorded_starts(self) -> list[tuple[int, int, float]]:
        """``(id, attempt, started_at)`` of running jobs claimed ahead whose start is not stored."""
        with self.cond:
            return list(self.unrecorded.values())

    def starts_recorded(self, starts: list[tuple[int, int, float]]) -> None:
        """Forget these starts: the store has them now."""
        with self.cond:
            for job_id, attempt, _ in starts:
                self.unrecorded.pop((job_id, attempt), None)

    def let_go(self, owner: str) -> None:
        """At the end of a stop: write the outcomes still held, put back every job still held."""
        # Outcomes that came in after the dispatcher's last write are of tasks
        # that finished: write them, so that the release below cannot requeue
        # a finished task.
        with self.cond:
            late, self.ran = self.ran, []
        if late:
            try:
                written = self.mq.store.finish([r.outcome for r in late])
            except MiniqueError as exc:
                log.error("could not record %d finished task(s) at shutdown (%s); they will "
                          "run again when their lease runs out", len(late), exc)
                return  # releasing now would requeue them at once
            self.mq.events.finished(late, written)
            self._log_written(late, written)
        # Whatever still runs after the grace period goes back to the queue now;
        # a stale outcome of it can no longer be written (the owner guard).
        try:
            released = self.mq.store.release(owner)
        except MiniqueError as exc:
            log.error("could not put back the running tasks (%s); they will run again when "
                      "their lease runs out", exc)
            return
        if released:
            log.warning("put back %d task(s) still running after the grace period", released)
