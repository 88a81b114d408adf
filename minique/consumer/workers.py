"""Worker threads: each takes claimed jobs from the ledger's queue and runs them.

With process workers (``-k process``) each thread owns one child process
that runs the attempts (processes.py). A thread worker cannot be stopped
from outside: past a task's timeout the dispatcher records the timeout, this
module starts a replacement thread, and the stuck one's late outcome is
dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from ..attempt import Ran, WorkerClosed, execute, internal_error, timed_out
from ..errors import ConfigurationError, MiniqueError
from ..store import ClaimedJob
from .ledger import Ledger, Watch

if TYPE_CHECKING:
    from ..app import Minique
    from .processes import ProcessRunner

log = logging.getLogger("minique")


class Workers:
    """The worker threads of one consumer (and their child processes with ``-k process``)."""

    def __init__(self, mq: Minique, ledger: Ledger, owner: str, processes: bool,
                 max_tasks: int | None = None, max_memory: float | None = None) -> None:
        self.mq = mq
        self.max_tasks = max_tasks  # per child process (the consumer recycles itself otherwise)
        self.max_memory = max_memory
        self.ledger = ledger
        self.owner = owner
        self.processes = processes
        self.threads: list[threading.Thread] = []
        self.runners: list[ProcessRunner] = []
        self._spare: list[ProcessRunner] = []  # started before the threads, by check_processes

    def check_processes(self) -> None:
        """With process workers, start them now: raise ``ConfigurationError`` if they cannot work.

        A child that cannot find the queue (an app built by a factory, tasks
        defined in ``__main__``) would otherwise fail every task with
        ``WorkerCrashed``; better to refuse at start, with its reason. The
        children start side by side, before anything is claimed: a call
        claimed for a free worker counts its attempt at once, and a consumer
        killed while a worker's child was still starting would charge it an
        attempt it never ran.
        """
        if not self.processes:
            return
        from .processes import ProcessRunner, WorkerCrashed

        runners = [ProcessRunner(self.mq, self.max_tasks, self.max_memory)
                   for _ in range(self.ledger.workers)]
        try:
            for runner in runners:
                runner.launch()
            for runner in runners:
                runner.wait_ready()
        except BaseException as exc:
            for runner in runners:
                runner.close()
            if not isinstance(exc, WorkerCrashed):
                raise
            if exc.answered:
                raise ConfigurationError(
                    f"-k process cannot work here: {exc}. Worker processes import the modules "
                    "that define the tasks and look for the same queue there; define the "
                    "Minique and its tasks at module level in an importable module (not in "
                    "__main__ nor inside a factory function), or use thread workers") from None
            raise ConfigurationError(
                f"-k process cannot work here: {exc}. A worker process writes why it "
                f"exited to the consumer's output, above. The {len(runners)} worker processes "
                "start side by side, each importing the tasks' modules: if that is slow or "
                "memory is short, use fewer workers (-w), or thread workers") from None
        self._spare.extend(runners)

    def start_one(self) -> None:
        thread = threading.Thread(target=self._work, daemon=True,
                                  name=f"minique-worker-{len(self.threads) + 1}")
        self.threads.append(thread)
        thread.start()

    def send_stop(self) -> None:
        """Ask every thread to leave once it is idle."""
        for _ in self.threads:
            self.ledger.jobs.put(None)

    def close_processes(self) -> None:
        """Kill the worker processes and wait (briefly) for their threads to hand back.

        A thread whose child was killed mid-attempt leaves without an outcome
        (the job is put back); one that got its outcome just before hands it in.
        """
        with self.ledger.cond:  # the worker threads take their runners under it
            owned, spare = list(self.runners), self._spare
            self._spare = []
        # A worker thread closes its runner's pipes itself as it leaves.
        for runner in owned:
            try:
                runner.interrupt()
            except Exception:
                log.exception("could not stop a worker process")
        for runner in spare:
            try:
                runner.close()
            except Exception:
                log.exception("could not stop a worker process")
        if self.runners:
            self.send_stop()
            deadline = time.monotonic() + 5.0
            for thread in self.threads:
                thread.join(max(deadline - time.monotonic(), 0.0))

    def _work(self) -> None:
        ledger = self.ledger
        runner = None
        if self.processes:
            # Imported here: subprocess and multiprocessing cost every consumer
            # start-up time, and most consumers run threads.
            from .processes import ProcessRunner

            with ledger.cond:
                runner = self._spare.pop() if self._spare \
                    else ProcessRunner(self.mq, self.max_tasks, self.max_memory)
                self.runners.append(runner)
        try:
            while True:
                job = ledger.jobs.get()
                if job is None:
                    return
                with ledger.cond:
                    ledger.waiting -= 1
                if not self.begin(job):
                    with ledger.cond:
                        ledger.handed -= 1
                        ledger.notify()
                    continue
                ran = self._run(job, runner)
                if ran is None:
                    return  # this thread was replaced at the attempt's timeout
                # A child killed (timeout, crash) or worn out is replaced now,
                # not when the next call comes: a call claimed for a free
                # worker counts its attempt at once, so this worker does not
                # count as free until its child is ready.
                replace = runner is not None and runner.needs_replacing()
                with ledger.cond:
                    ledger.ended(job, ran)
                    ledger.handed -= 1
                    replace = replace and not ledger.stopping
                    ledger.starting += replace
                    ledger.notify()
                if replace:
                    assert runner is not None
                    try:
                        runner.replace()
                    finally:
                        with ledger.cond:
                            ledger.starting -= 1
                            ledger.notify()
        except WorkerClosed:
            # stop() closed the worker processes after the grace period: the
            # attempt is put back (see Consumer.stop), not failed.
            return
        finally:
            if runner is not None:
                runner.close()

    def _run(self, job: ClaimedJob, runner: ProcessRunner | None) -> Ran | None:
        task = self.mq.tasks.get(job.name)
        timeout = None if task is None else task.options.timeout
        if runner is not None or timeout is None or task is None:
            return self.attempt(job, runner, timeout)
        ledger = self.ledger
        with ledger.cond:
            ledger.watched[job.id, job.attempt] = Watch(
                job, task.options, timeout, time.monotonic() + timeout)
            ledger.notify()
        ran = self.attempt(job, None, timeout)
        with ledger.cond:
            if ledger.watched.pop((job.id, job.attempt), None) is None:
                # The dispatcher gave up on this attempt at its timeout,
                # recorded it, and started a worker in this one's place.
                log.warning("%s[%s] ended %.1f s after its timeout; its outcome is ignored",
                            job.name, job.id, ran.duration - timeout)
                return None
        return ran

    def begin(self, job: ClaimedJob) -> bool:
        """Get ready to start a claimed job; False if it must not run here after all.

        A job claimed ahead counts its attempt once its start is recorded,
        normally later and in a batch. A suspect one (taken from a consumer
        that died: it may be what killed it) is recorded now, before it runs,
        so that a call that kills every consumer runs out of attempts; the
        outcomes held here are written in the same transaction, so that the
        calls that ran before it are not lost with this consumer.
        """
        ledger = self.ledger
        if not job.suspect:
            if not job.counted:
                ledger.started(job, time.time())
            return True
        failures = 0
        while True:
            with ledger.cond:
                ran, ledger.ran = ledger.ran, []
            try:
                written, ours = self.mq.store.record_start(
                    self.owner, job.id, job.attempt, time.time(), [r.outcome for r in ran])
            except MiniqueError as exc:
                failures += 1
                log.error("cannot record the start of %s[%s] (attempt %d): %s", job.name,
                          job.id, failures, exc)
                with ledger.cond:
                    ledger.ran[:0] = ran
                    if ledger.stopping or ledger.abandon:
                        break  # stop() puts it back
                time.sleep(min(0.05 * 2 ** failures, 2.0))
                continue
            ledger.settle(ran, written, [], 0)
            if ours:
                return True
            log.warning("%s[%s] was taken back from this consumer before it started",
                        job.name, job.id)
            break
        with ledger.cond:
            ledger.inflight -= 1
        return False

    def attempt(self, job: ClaimedJob, runner: ProcessRunner | None,
                timeout: float | None) -> Ran:
        """Run one attempt here (or in ``runner``'s child); never raises but ``WorkerClosed``."""
        self.mq.events.started(job)
        # execute() handles the task's own errors; this is for minique's: a
        # worker that died would leave its job "running" with a renewed lease.
        try:
            if runner is not None:
                return runner.run(job, self.owner, timeout)
            return execute(self.mq, job, self.owner)
        except WorkerClosed:
            raise
        except BaseException as exc:
            log.exception("%s[%s]: the worker failed around the task", job.name, job.id)
            return internal_error(job, self.owner, exc)

    def take_timed_out(self) -> list[Ran]:
        """The outcomes of watched attempts past their timeout (cond held)."""
        # A thread cannot be killed: record the timeout now, keep the worker
        # count by starting a replacement, and let the stuck thread's eventual
        # outcome be dropped (see _run).
        ledger = self.ledger
        now = time.monotonic()
        expired = [w for w in ledger.watched.values() if w.deadline <= now]
        for watch in expired:
            del ledger.watched[watch.job.id, watch.job.attempt]
            ledger.unrecorded.pop((watch.job.id, watch.job.attempt), None)
            ledger.handed -= 1
            log.error("%s[%s] passed its timeout of %g s; a new worker thread takes its place "
                      "(the old one cannot be stopped)", watch.job.name, watch.job.id,
                      watch.timeout)
            self.start_one()
        return [timed_out(w.job, self.owner, w.options, w.timeout) for w in expired]
