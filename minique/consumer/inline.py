"""The one-worker mode: the dispatcher runs the tasks itself.

With a single thread worker, handing each job to another thread and back
would cost a queue and a thread switch per task, more than a no-op task. So
the dispatcher runs the claimed jobs in its own thread, a few milliseconds'
worth at a time, and writes their outcomes in its next exchange. Tasks with a
timeout still go to the worker thread, which the dispatcher watches. A
flusher thread writes the outcomes that would otherwise wait behind a long
task: a finished task must not stay unrecorded, where a crash would run it
again.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from ..errors import MiniqueError
from .ledger import Ledger
from .workers import Workers

if TYPE_CHECKING:
    from ..app import Minique

log = logging.getLogger("minique")

# A dispatcher running tasks itself writes their outcomes at least this often;
# while one task runs longer, the flusher writes those finished before it.
INLINE_WRITE_EVERY = 0.005


class InlineRunner:
    """Runs claimed jobs in the dispatcher's thread, with a flusher beside it."""

    def __init__(self, mq: Minique, ledger: Ledger, workers: Workers) -> None:
        self.mq = mq
        self.ledger = ledger
        self.workers = workers
        self.busy = threading.Event()  # the dispatcher has jobs of its own to run
        self.flusher = threading.Thread(target=self._flush_held, name="minique-flusher",
                                        daemon=True)

    def start(self) -> None:
        self.flusher.start()

    def stop(self) -> None:
        """Let the flusher leave (once the dispatcher is gone or abandoned) and wait for it."""
        self.busy.set()
        self.flusher.join()

    def run_pending(self) -> bool:
        """Run claimed jobs in this (the dispatcher's) thread, for a while.

        Returns after INLINE_WRITE_EVERY, so that outcomes are written and
        more jobs claimed; when no job is left; or after handing a job with a
        timeout to the worker thread, which the dispatcher then watches while
        the rest wait (one task at a time, in order). Returns False if
        ``stop()`` gave up waiting for a task that ran past the grace period:
        everything was put back for this thread, which must leave without a
        write.
        """
        ledger = self.ledger
        began = time.monotonic()
        self.busy.set()  # the flusher looks in while tasks run here
        while ledger.pending:
            with ledger.cond:
                if ledger.stopping or ledger.abandon or ledger.handed:
                    return True  # the loop puts back what was not started
                job = ledger.pending.popleft()
                task = self.mq.tasks.get(job.name)
                if task is not None and task.options.timeout is not None:
                    ledger.handed += 1
                    ledger.waiting += 1
                    ledger.jobs.put(job)
                    return True
            if not self.workers.begin(job):
                continue
            with ledger.cond:
                if ledger.stopping or ledger.abandon:
                    # stop() came while its start was recorded: it is put back
                    # with the others not started, and stop() need not wait.
                    ledger.pending.appendleft(job)
                    return True
                ledger.in_task = True
                ledger.task_seq += 1
            ran = self.workers.attempt(job, None, None)
            with ledger.cond:
                ledger.in_task = False
                if ledger.taken_over:
                    log.warning("%s: ignored, the task ran past the grace period and was put "
                                "back", ran.message)
                    return False
                ledger.ended(job, ran)  # where stop() finds it, should a later task hang
            if time.monotonic() - began >= INLINE_WRITE_EVERY:
                break
        return True

    def _flush_held(self) -> None:
        # Wakes every INLINE_WRITE_EVERY while the dispatcher runs tasks (never
        # per task). Once one task has run for a whole period, it writes the
        # outcomes held behind it, once: nothing new is added until that task
        # ends, so it sleeps until run_pending is entered again. After a
        # failed write too: the dispatcher tries again after the task, with
        # its back-off.
        ledger = self.ledger
        seen = -1
        while True:
            self.busy.wait()
            time.sleep(INLINE_WRITE_EVERY)
            with ledger.cond:
                if ledger.dispatched or ledger.abandon:
                    return
                if not ledger.in_task:
                    if not ledger.pending:
                        self.busy.clear()
                    continue
                if ledger.task_seq != seen:
                    seen = ledger.task_seq  # a task started since the last look
                    continue
                self.busy.clear()  # this task has had its look
                ran, ledger.ran = ledger.ran, []
            if not ran:
                continue
            try:
                written = self.mq.store.finish([r.outcome for r in ran])
            except Exception as exc:
                if isinstance(exc, MiniqueError):
                    log.error("cannot reach the queue database: %s", exc)
                else:
                    log.exception("could not record finished tasks; the dispatcher will retry")
                with ledger.cond:
                    ledger.ran[:0] = ran  # the dispatcher writes them after its task
                    ledger.notify()
                continue
            ledger.settle(ran, written, [], 0)
