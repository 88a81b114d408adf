"""The consumer: worker threads that run tasks, one dispatcher thread that talks to the store.

The dispatcher is the only thread on the hot path of the database: in one
transaction it writes the outcomes the workers handed back and claims as many
new jobs as there are free workers (plus a small buffer while tasks are
short). A busy consumer therefore finishes and claims in batches, one commit
each; an idle one sleeps until a producer's nudge, a poll of the database's
data version, or the next scheduled eta. It sleeps in ``poll()`` on both
the socket producers nudge and a pipe the other threads of the consumer
write to, so that a nudge wakes the thread that claims, with no thread
between them.

With a single thread worker the dispatcher runs the tasks itself (see
``_run_pending``): handing each job to another thread and back would cost a
queue and a thread switch per task, more than a no-op task. Tasks with a
timeout still go to a worker thread, which the dispatcher watches, and a
flusher thread writes the outcomes that would otherwise wait behind a long
task (a finished task must not stay unrecorded, where a crash would run it
again).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import signal
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal
from uuid import uuid4

from ..attempt import Ran, WorkerClosed, execute, internal_error, timed_out
from ..errors import ConsumerFailed, MiniqueError
from ..store import ClaimedJob, ConsumerInfo, Listener
from ..task import TaskOptions
from .housekeeping import Housekeeper
from .identity import describe_self
from .periodic import PeriodicScheduler
from .tasklog import log_task_line

if TYPE_CHECKING:
    from ..app import Minique
    from .processes import ProcessRunner

log = logging.getLogger("minique")

# Tasks shorter than this on average are claimed ahead of free workers (a
# buffer of BUFFER_PER_WORKER each), so that claims and finishes batch. Long
# tasks are never buffered: another consumer may be idle and should get them.
SHORT_TASK = 0.02
BUFFER_PER_WORKER = 4
MIN_BUFFER = 32
# Unexpected errors in a row, with no write between them, after which the
# dispatcher stops and run() raises ConsumerFailed.
DISPATCHER_GIVES_UP_AFTER = 8
# A dispatcher running tasks itself writes their outcomes at least this often;
# while one task runs longer, the flusher writes those finished before it.
INLINE_WRITE_EVERY = 0.005


WorkerType = Literal["thread", "process"]


@dataclass(slots=True)
class _Watch:
    """A thread worker's attempt that has a timeout."""

    job: ClaimedJob
    options: TaskOptions
    timeout: float
    deadline: float  # time.monotonic()


class Consumer:
    """Runs the tasks of one ``Minique`` in worker threads.

    ``start()``/``stop()`` run it in the background (callable from any thread;
    no signal handlers); ``run()`` blocks and handles SIGTERM/SIGINT when
    called from the main thread; ``with consumer:`` starts and stops it.
    """

    def __init__(
        self, mq: Minique, workers: int = 4, queues: Sequence[str] | None = None,
        periodic: bool = True, grace: float = 30.0, poll_interval: float = 0.25,
        worker_type: WorkerType = "thread",
    ) -> None:
        from .. import options as check
        from ..errors import OptionError

        # Checked here, in the caller: a bad value would otherwise stop a
        # thread of the running consumer (a NaN grace, a string queue name).
        self.workers = check.integer(
            workers, "workers", "a consumer needs at least one worker: give an int >= 1",
            low=1)
        if worker_type not in ("thread", "process"):
            raise OptionError(f"worker_type must be 'thread' or 'process', not {worker_type!r}")
        self.worker_type = worker_type
        self.mq = mq
        self.id = uuid4().hex
        self.queues = check.queue_names(queues)
        self.periodic = check.flag(periodic, "periodic")
        self.grace = None if grace is None else check.real(
            grace, "grace", "give the seconds running tasks may take to finish at stop, a "
            f"finite number >= 0 (at most {threading.TIMEOUT_MAX:.0f}), or None to wait for "
            "them however long they take", high=threading.TIMEOUT_MAX)
        self.poll_interval = check.real(
            poll_interval, "poll_interval", "give the seconds between looks at the database "
            "when no wake-up comes, a finite number > 0 and at most 3600", low_open=True,
            high=3600.0)
        self.identity: ConsumerInfo | None = None

        self._cond = threading.Condition()
        self._ran: list[Ran] = []
        self._jobs: queue.SimpleQueue[ClaimedJob | None] = queue.SimpleQueue()
        self._inflight = 0  # claimed and not yet written back
        self._handed = 0  # given to worker threads and not yet handed back
        self._waiting = 0  # put in the worker threads' queue, not yet taken
        # (id, attempt) -> (id, attempt, started_at) of calls claimed ahead that
        # have started and whose start the store does not know yet: the next
        # lease renewal records them (see Housekeeper.renew)
        self._unrecorded: dict[tuple[int, int], tuple[int, int, float]] = {}
        self._failed: BaseException | None = None  # the dispatcher could not go on
        self._loop_errors = 0  # the dispatcher's unexpected errors since its last write
        # One thread worker: the dispatcher runs the tasks (module docstring).
        self._inline = workers == 1 and worker_type == "thread"
        self._pending: deque[ClaimedJob] = deque()  # claimed, for the dispatcher to run
        self._in_task = False  # the dispatcher is running a task
        self._task_seq = 0  # tasks the dispatcher has started
        self._busy = threading.Event()  # the dispatcher has jobs of its own to run
        self._flusher: threading.Thread | None = None
        self._taken_over = False  # stop() gave up waiting for the dispatcher's task
        self._dispatched = False  # the dispatcher has left
        self._hint = True  # the store may hold ready work
        self._stopping = False
        self._abandon = False  # grace is over: write what is done and leave
        self._avg_duration: float | None = None
        self._next_eta: float | None = None
        self._threads: list[threading.Thread] = []
        # keyed by (job id, attempt): a stale attempt must not touch its retry's entry
        self._watched: dict[tuple[int, int], _Watch] = {}
        self._runners: list[ProcessRunner] = []
        self._dispatcher: threading.Thread | None = None
        self._listener: Listener | None = None
        self._sleeping = False  # the dispatcher is in poll(): poke it through the pipe
        self._poked = False
        self._wake_r, self._wake_w = -1, -1
        self._shut = False  # stop() is over
        self._housekeeper: Housekeeper | None = None
        self._scheduler: PeriodicScheduler | None = None
        self._started = False
        self._stopped = threading.Event()
        self._stop_requested = threading.Event()

    def __enter__(self) -> Consumer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(self.grace)

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        """Start the worker, dispatcher and scheduler threads and return.

        Raises ``ConfigurationError``/``DatabaseError`` if the database cannot
        be opened or written.
        """
        if self._started:
            raise RuntimeError("this consumer was already started; make a new one")
        self._started = True
        now = time.time()
        queues = ",".join(self.queues) if self.queues else "*"
        self.identity = describe_self(self.id, queues, self.workers, now)
        self.mq.store.register_consumer(self.identity)
        self._housekeeper = Housekeeper(self)
        self._housekeeper.recover_dead_consumers()
        for hook in self.mq.start_hooks:
            hook(self)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._listener = self.mq.store.notifier.listen(self.id)
        self.mq._local_wakers.append(self.wake)
        for _ in range(self.workers):
            self._start_worker()
        self._dispatcher = threading.Thread(target=self._dispatch, name="minique-dispatcher",
                                            daemon=True)
        self._dispatcher.start()
        if self._inline:
            self._flusher = threading.Thread(target=self._flush_held, name="minique-flusher",
                                             daemon=True)
            self._flusher.start()
        self._housekeeper.start()
        if self.periodic and self.mq.periodic_tasks:
            self._scheduler = PeriodicScheduler(self)
            self._scheduler.start()
        self._log_banner()

    def _log_banner(self) -> None:
        queues = ", ".join(self.queues) if self.queues else "all"
        log.info("minique consumer %s started on %s", self.id[:8], self.mq.store.location)
        kind = "threads" if self.worker_type == "thread" else "processes"
        log.info("  queues: %s; workers: %d %s; periodic: %s; lease: %g s", queues,
                 self.workers, kind, "on" if self.periodic else "off", self.mq.lease)
        names = sorted(self.mq.tasks)
        log.info("  %d tasks: %s", len(names), ", ".join(names) or "(none registered)")
        if self._scheduler is not None:
            for name, task in sorted(self._scheduler.tasks.items()):
                assert task.periodic is not None
                log.info("  periodic: %s on %s, next at %s", name, task.periodic.expr,
                         self.mq.local_time(self._scheduler.slots[name]))

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop claiming, let running tasks finish for up to ``timeout`` seconds, put back the rest.

        Returns once the consumer has stopped. Tasks still running after the
        timeout are returned to the queue (without using an attempt); their
        threads are abandoned and whatever they finish is ignored.
        """
        if not self._started or self._stopped.is_set():
            return
        if self._scheduler is not None:
            self._scheduler.stop()  # enqueue nothing more while we drain
        with self._cond:
            self._stopping = True
            self._notify()
        if timeout is None:
            log.info("stopping: no new tasks; waiting for running ones")
        else:
            log.info("stopping: no new tasks; waiting up to %g s for running ones", timeout)
        assert self._dispatcher is not None
        with self._cond:
            # Until the dispatcher is done, the grace is over, or a second
            # signal says not to wait.
            self._cond.wait_for(lambda: self._dispatched or self._abandon, timeout)
            if not self._dispatched:
                self._abandon = True
                # A dispatcher inside a task of its own cannot come back now:
                # put back for it, and have it drop what it finishes.
                self._taken_over = self._in_task
                self._notify()
        if not self._taken_over:
            self._dispatcher.join()
        if self._flusher is not None:
            self._busy.set()  # it leaves once it sees the dispatcher gone or abandoned
            self._flusher.join()
        try:
            self._put_back_the_rest()
        finally:
            self._shutdown()

    def _put_back_the_rest(self) -> None:
        # Kill process workers first: a released attempt must not go on
        # running in a child while another consumer starts it again.
        for runner in list(self._runners):
            runner.close()
        if self._runners:
            # Their threads hand back what finished just before the close, or
            # leave (WorkerClosed): wait for that before writing below.
            for _ in self._threads:
                self._jobs.put(None)
            deadline = time.monotonic() + 5.0
            for thread in self._threads:
                thread.join(max(deadline - time.monotonic(), 0.0))
        # Outcomes that came in after the dispatcher's last write are of tasks
        # that finished: write them, so that the release below cannot requeue
        # a finished task.
        with self._cond:
            late, self._ran = self._ran, []
        if late:
            try:
                self.mq.store.finish([r.outcome for r in late])
            except MiniqueError as exc:
                log.error("could not record %d finished task(s) at shutdown (%s); they will "
                          "run again when their lease runs out", len(late), exc)
                return  # releasing now would requeue them at once
            for r in late:
                log_task_line(r.level, r.message)
        # Whatever still runs after the grace period goes back to the queue now;
        # a stale outcome of it can no longer be written (the owner guard).
        try:
            released = self.mq.store.release(self.id)
        except MiniqueError as exc:
            log.error("could not put back the running tasks (%s); they will run again when "
                      "their lease runs out", exc)
            return
        if released:
            log.warning("put back %d task(s) still running after the grace period", released)

    def _shutdown(self) -> None:
        if self.wake in self.mq._local_wakers:
            self.mq._local_wakers.remove(self.wake)
        if self._housekeeper is not None:
            self._housekeeper.stop()
        for _ in self._threads:
            self._jobs.put(None)
        if self._listener is not None:
            self._listener.close()
        with self._cond:
            self._shut = True
            self._close_pipe_when_done()
        try:
            self.mq.store.unregister_consumer(self.id)
        except MiniqueError as exc:
            log.warning("could not unregister consumer %s: %s", self.id[:8], exc)
        self._stopped.set()
        for hook in self.mq.stop_hooks:
            hook(self)
        log.info("minique consumer %s stopped", self.id[:8])

    def run(self) -> None:
        """Run until SIGTERM or SIGINT (when on the main thread) or ``request_stop()``.

        A second SIGINT skips the rest of the grace period.
        """
        previous: dict[signal.Signals, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, self._on_signal)
        try:
            self.start()
            while not self._stop_requested.wait(1.0):
                pass
            self.stop(self.grace)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if self._failed is not None:
            raise ConsumerFailed(
                f"the consumer stopped: its dispatcher kept failing "
                f"({type(self._failed).__name__}: {self._failed}); see the log, and restart it"
            ) from self._failed

    @property
    def failed(self) -> bool:
        """True once the dispatcher has given up (see ``ConsumerFailed``)."""
        return self._failed is not None

    def request_stop(self) -> None:
        """Ask ``run()`` to stop, from any thread."""
        self._stop_requested.set()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stop_requested.is_set():
            log.warning("second signal: putting back running tasks now")
            with self._cond:
                self._abandon = True
                self._notify()
            return
        self._stop_requested.set()

    @property
    def running(self) -> bool:
        """True between ``start()`` and the end of ``stop()``."""
        return self._started and not self._stopped.is_set()

    # -- waking ----------------------------------------------------------------------

    def wake(self) -> None:
        """Tell the dispatcher that new work may be ready (cheap; any thread)."""
        with self._cond:
            self._hint = True
            self._notify()

    def _notify(self) -> None:
        # Called with self._cond held: wakes stop() waiting on the condition,
        # and the dispatcher if it sleeps in poll() (one byte per sleep).
        self._cond.notify_all()
        if self._sleeping and not self._poked:
            self._poked = True
            # (a full pipe means it is being woken anyway)
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"!")

    def _sleep(self, timeout: float) -> None:
        """Sleep in the dispatcher until poked, nudged by a producer, or ``timeout``."""
        listener = self._listener
        fd = listener.fileno() if listener is not None else None
        if listener is not None:
            hold = listener.ready_in()
            if hold > 0:  # nudges flood in: look at them again in a moment
                fd, timeout = None, min(timeout, hold)
        # poll(), not select(): a process may already hold more than 1,024
        # descriptors when the consumer starts (select() refuses those).
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        if fd is not None:
            poller.register(fd, select.POLLIN)
        try:
            ready = {fd for fd, _ in poller.poll(timeout * 1000)}
        except OSError as exc:
            # Never return at once: the dispatcher would spin. Sleep instead,
            # and let the poll of the data version find the work.
            log.error("cannot wait for nudges (%s); polling every %g s", exc, timeout)
            time.sleep(timeout)
            ready = set()
        finally:
            with self._cond:
                self._sleeping = False
        if self._wake_r in ready:
            try:
                while os.read(self._wake_r, 64):
                    pass
            except OSError:  # BlockingIOError once empty
                pass
        nudged = fd is not None and fd in ready
        if nudged:
            assert listener is not None
            listener.drain()
        with self._cond:
            self._poked = False
            if nudged:
                self._hint = True

    # -- workers -----------------------------------------------------------------------

    def _start_worker(self) -> None:
        thread = threading.Thread(target=self._work, daemon=True,
                                  name=f"minique-worker-{len(self._threads) + 1}")
        self._threads.append(thread)
        thread.start()

    def _work(self) -> None:
        runner = None
        if self.worker_type == "process":
            # Imported here: subprocess and multiprocessing cost every consumer
            # start-up time, and most consumers run threads.
            from .processes import ProcessRunner

            runner = ProcessRunner(self.mq)
            with self._cond:
                self._runners.append(runner)
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    return
                with self._cond:
                    self._waiting -= 1
                if not self._begin(job):
                    with self._cond:
                        self._handed -= 1
                        self._notify()
                    continue
                task = self.mq.tasks.get(job.name)
                timeout = None if task is None else task.options.timeout
                if runner is not None or timeout is None or task is None:
                    ran = self._attempt(job, runner, timeout)
                else:
                    with self._cond:
                        self._watched[job.id, job.attempt] = _Watch(
                            job, task.options, timeout, time.monotonic() + timeout)
                        self._notify()
                    ran = self._attempt(job, None, timeout)
                    with self._cond:
                        if self._watched.pop((job.id, job.attempt), None) is None:
                            # The dispatcher gave up on this attempt at its timeout,
                            # recorded it, and started a worker in this one's place.
                            log.warning("%s[%s] ended %.1f s after its timeout; its outcome is "
                                        "ignored", job.name, job.id, ran.duration - timeout)
                            return
                with self._cond:
                    self._unrecorded.pop((job.id, job.attempt), None)
                    self._ran.append(ran)
                    self._handed -= 1
                    self._notify()
        except WorkerClosed:
            # stop() closed the worker processes after the grace period: the
            # attempt is put back (see _put_back_the_rest), not failed.
            return
        finally:
            if runner is not None:
                runner.close()

    def _begin(self, job: ClaimedJob) -> bool:
        """Get ready to start a claimed job; False if it must not run here after all.

        A job claimed ahead counts its attempt once its start is recorded,
        normally later and in a batch. A suspect one (taken from a consumer
        that died: it may be what killed it) is recorded now, before it runs,
        so that a call that kills every consumer runs out of attempts; the
        outcomes held here are written in the same transaction, so that the
        calls that ran before it are not lost with this consumer.
        """
        if not job.suspect:
            if not job.counted:
                self._unrecorded[job.id, job.attempt] = (job.id, job.attempt, time.time())
            return True
        failures = 0
        while True:
            with self._cond:
                ran, self._ran = self._ran, []
            try:
                written, ours = self.mq.store.record_start(
                    self.id, job.id, job.attempt, time.time(), [r.outcome for r in ran])
            except MiniqueError as exc:
                with self._cond:
                    self._ran[:0] = ran
                failures += 1
                log.error("cannot record the start of %s[%s] (attempt %d): %s", job.name,
                          job.id, failures, exc)
                with self._cond:
                    if self._stopping or self._abandon:
                        break  # stop() puts it back
                time.sleep(min(0.05 * 2 ** failures, 2.0))
                continue
            self._after_exchange(ran, written, [], 0)
            if ours:
                return True
            log.warning("%s[%s] was taken back from this consumer before it started",
                        job.name, job.id)
            break
        with self._cond:
            self._inflight -= 1
        return False

    def _attempt(self, job: ClaimedJob, runner: ProcessRunner | None,
                 timeout: float | None) -> Ran:
        # execute() handles the task's own errors; this is for minique's: a
        # worker that died would leave its job "running" with a renewed lease.
        try:
            if runner is not None:
                return runner.run(job, self.id, timeout)
            return execute(self.mq, job, self.id)
        except WorkerClosed:
            raise
        except BaseException as exc:
            log.exception("%s[%s]: the worker failed around the task", job.name, job.id)
            return internal_error(job, self.id, exc)

    def _take_timed_out(self) -> list[Ran]:
        # Called with self._cond held. A thread cannot be killed: record the
        # timeout now, keep the worker count by starting a replacement, and let
        # the stuck thread's eventual outcome be dropped (see _work).
        now = time.monotonic()
        expired = [w for w in self._watched.values() if w.deadline <= now]
        for watch in expired:
            del self._watched[watch.job.id, watch.job.attempt]
            self._unrecorded.pop((watch.job.id, watch.job.attempt), None)
            self._handed -= 1
            log.error("%s[%s] passed its timeout of %g s; a new worker thread takes its place "
                      "(the old one cannot be stopped)", watch.job.name, watch.job.id,
                      watch.timeout)
            self._start_worker()
        return [timed_out(w.job, self.id, w.options, w.timeout) for w in expired]

    # -- dispatcher ----------------------------------------------------------------------

    def _free_workers(self, finished: int) -> int:
        """How many of the jobs claimed now will start at once (called with self._cond held).

        None while jobs wait in this consumer: new ones queue behind them.
        """
        waiting = self._waiting + (len(self._pending) if self._inline else 0)
        if waiting:
            return 0
        running = self._inflight - finished
        return max(0, self.workers - running)

    def _capacity(self) -> int:
        buffer = 0
        if self._avg_duration is not None and self._avg_duration < SHORT_TASK:
            buffer = max(MIN_BUFFER, BUFFER_PER_WORKER * self.workers)
        return self.workers + buffer - self._inflight

    def _dispatch(self) -> None:
        try:
            while True:
                try:
                    self._dispatch_loop()
                    return
                except Exception as exc:
                    # A bug of ours, or a row no check foresaw: never leave the
                    # consumer alive and idle. Start the loop again; a loop that
                    # keeps failing without a write in between gives up, and
                    # run() exits non-zero for a supervisor to restart it.
                    self._loop_errors += 1
                    log.exception("the dispatcher failed (%d in a row); it starts again",
                                  self._loop_errors)
                    if self._loop_errors >= DISPATCHER_GIVES_UP_AFTER:
                        log.critical("the dispatcher keeps failing; the consumer stops")
                        with self._cond:
                            self._failed = exc
                        self._stop_requested.set()
                        return
                    time.sleep(min(0.05 * 2 ** self._loop_errors, 2.0))
        finally:
            with self._cond:
                self._dispatched = True
                self._notify()
                self._close_pipe_when_done()
            self._busy.set()

    def _close_pipe_when_done(self) -> None:
        # Called with self._cond held, by stop() and by the dispatcher as it
        # leaves: whichever comes last closes the pipe (a dispatcher stuck in
        # a task past the grace leaves after stop() has returned).
        if self._dispatched and self._shut and self._wake_r >= 0:
            for fd in (self._wake_r, self._wake_w):
                os.close(fd)
            self._wake_r = self._wake_w = -1

    def _dispatch_loop(self) -> None:
        store = self.mq.store
        version = self._data_version()
        self._refresh_next_eta()
        failures = 0
        while True:
            with self._cond:
                sleep = None if self._should_wake() else self._sleep_time()
                self._sleeping = sleep is not None
            if sleep is not None:
                self._sleep(sleep)
            with self._cond:
                stopping = self._stopping
            if stopping:
                self._release_buffered()
            elif self._pending and not self._handed and not self._run_pending():
                return
            with self._cond:
                ran, self._ran = self._ran, []
                if self._watched:
                    ran.extend(self._take_timed_out())
                leave = self._abandon or (self._stopping and self._inflight == len(ran))
                # The outcomes written in this transaction free their slots in it.
                limit = 0 if self._stopping or self._abandon \
                    else self._capacity() + len(ran)
                start_now = self._free_workers(len(ran))
                hint = self._hint
                if limit > 0:
                    self._hint = False  # consumed: a nudge from now on sets it again
            now = time.time()
            if limit > 0 and not hint:
                current = self._data_version()
                hint = current != version or (self._next_eta is not None
                                              and self._next_eta <= now)
                version = current
            if limit <= 0 or not hint:
                limit = 0
            if not ran and not limit and not leave:
                continue
            try:
                # Every claim first promotes scheduled jobs whose time has come
                # (cheap: an index range), so they never wait behind a backlog.
                written, claimed = store.exchange(
                    [r.outcome for r in ran], self.id, self.mq.lease, now, limit,
                    self.queues, promote=limit > 0, start_now=start_now)
            except Exception as exc:
                failures += 1
                if isinstance(exc, MiniqueError):
                    log.error("cannot reach the queue database (attempt %d): %s", failures, exc)
                else:
                    log.exception("writing outcomes and claiming failed (attempt %d)", failures)
                with self._cond:
                    self._ran[:0] = ran
                    self._hint = self._hint or hint
                if leave:
                    return
                time.sleep(min(0.05 * 2 ** failures, 2.0))
                continue
            failures = 0
            self._loop_errors = 0
            self._after_exchange(ran, written, claimed, limit)
            if leave:
                return

    def _after_exchange(self, ran: list[Ran], written: list[bool], claimed: list[ClaimedJob],
                        limit: int) -> None:
        self._hand_out(ran, claimed, limit)
        # Logged after the jobs are handed out: a log filter or handler that
        # raises must not leave claimed jobs unknown to the workers.
        for r, ok in zip(ran, written, strict=True):
            if ok:
                log_task_line(r.level, r.message)
            else:
                log.warning("%s: ignored, the task had been taken back from this consumer",
                            r.message)

    def _hand_out(self, ran: list[Ran], claimed: list[ClaimedJob], limit: int) -> None:
        requeued = False
        # Under the lock: with one worker, the flusher's writes come here too.
        with self._cond:
            for r in ran:
                eta = r.outcome.eta
                if r.outcome.state == "queued":
                    requeued = True  # a retry without a wait: ready now
                elif r.outcome.state == "scheduled" and eta is not None:
                    self._next_eta = eta if self._next_eta is None else min(self._next_eta, eta)
                self._avg_duration = r.duration if self._avg_duration is None \
                    else 0.8 * self._avg_duration + 0.2 * r.duration
            self._inflight += len(claimed) - len(ran)
            if self._inline:
                # The dispatcher runs them, in order (see _run_pending).
                self._pending.extend(claimed)
            else:
                self._handed += len(claimed)
                self._waiting += len(claimed)
                for job in claimed:
                    self._jobs.put(job)
            if requeued or (limit and len(claimed) == limit):
                self._hint = True  # there may be more where these came from
            self._notify()  # the flusher writes from its own thread: slots freed
        if limit and len(claimed) < limit:
            self._refresh_next_eta()

    def _timeout_of(self, job: ClaimedJob) -> float | None:
        task = self.mq.tasks.get(job.name)
        return None if task is None else task.options.timeout

    def _run_pending(self) -> bool:
        """Run claimed jobs in this (the dispatcher's) thread, for a while.

        Returns after INLINE_WRITE_EVERY, so that outcomes are written and
        more jobs claimed; when no job is left; or after handing a job with a
        timeout to the worker thread, which the dispatcher then watches while
        the rest wait (one task at a time, in order). Returns False if
        ``stop()`` gave up waiting for a task that ran past the grace period:
        everything was put back for this thread, which must leave without a
        write.
        """
        began = time.monotonic()
        self._busy.set()  # the flusher looks in while tasks run here
        while self._pending:
            with self._cond:
                if self._stopping or self._abandon or self._handed:
                    return True  # the loop puts back what was not started
                job = self._pending.popleft()
                if self._timeout_of(job) is not None:
                    self._handed += 1
                    self._waiting += 1
                    self._jobs.put(job)
                    return True
            if not self._begin(job):
                continue
            with self._cond:
                self._in_task = True
                self._task_seq += 1
            ran = self._attempt(job, None, None)
            with self._cond:
                self._unrecorded.pop((job.id, job.attempt), None)
                self._in_task = False
                if self._taken_over:
                    log.warning("%s: ignored, the task ran past the grace period and was put "
                                "back", ran.message)
                    return False
                self._ran.append(ran)  # where stop() finds it, should a later task hang
            if time.monotonic() - began >= INLINE_WRITE_EVERY:
                break
        return True

    def _flush_held(self) -> None:
        # Wakes every INLINE_WRITE_EVERY while the dispatcher runs tasks (never
        # per task). Once one task has run for a whole period, it writes the
        # outcomes held behind it, once: nothing new is added until that task
        # ends, so it sleeps until _run_pending is entered again. After a
        # failed write too: the dispatcher tries again after the task, with
        # its back-off.
        seen = -1
        while True:
            self._busy.wait()
            time.sleep(INLINE_WRITE_EVERY)
            with self._cond:
                if self._dispatched or self._abandon:
                    return
                if not self._in_task:
                    if not self._pending:
                        self._busy.clear()
                    continue
                if self._task_seq != seen:
                    seen = self._task_seq  # a task started since the last look
                    continue
                self._busy.clear()  # this task has had its look
                ran, self._ran = self._ran, []
            if not ran:
                continue
            try:
                written = self.mq.store.finish([r.outcome for r in ran])
            except Exception as exc:
                if isinstance(exc, MiniqueError):
                    log.error("cannot reach the queue database: %s", exc)
                else:
                    log.exception("could not record finished tasks; the dispatcher will retry")
                with self._cond:
                    self._ran[:0] = ran  # the dispatcher writes them after its task
                    self._notify()
                continue
            self._after_exchange(ran, written, [], 0)

    def _data_version(self) -> int:
        try:
            return self.mq.store.changes()
        except MiniqueError:
            return -1  # unknown: the next look claims, and reports the error if it persists

    def _refresh_next_eta(self) -> None:
        try:
            self._next_eta = self.mq.store.next_scheduled_eta()
        except MiniqueError as exc:
            log.debug("could not read the next scheduled time: %s", exc)
            self._next_eta = None

    def _should_wake(self) -> bool:
        if self._ran or self._abandon or (self._pending and not self._handed):
            return True
        if self._watched and min(w.deadline for w in self._watched.values()) <= time.monotonic():
            return True
        if self._stopping:
            return self._inflight == 0
        return self._hint and self._capacity() > 0

    def _sleep_time(self) -> float:
        wait = self.poll_interval
        # The next eta only matters when a job could be claimed for it; while
        # every worker is busy (or we are stopping) it would make a busy loop.
        if self._next_eta is not None and not self._stopping and self._capacity() > 0:
            wait = min(wait, max(self._next_eta - time.time(), 0.0))
        if self._watched:
            deadline = min(w.deadline for w in self._watched.values())
            wait = min(wait, max(deadline - time.monotonic(), 0.0))
        return wait

    def _release_buffered(self) -> None:
        # Jobs claimed ahead of free workers have not started: give them back
        # without using an attempt, so another consumer can take them now.
        buffered: list[ClaimedJob] = list(self._pending)
        self._pending.clear()
        handed = 0
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                buffered.append(job)
                handed += 1
        with self._cond:
            self._handed -= handed
            self._waiting -= handed
        if not buffered:
            return
        try:
            self.mq.store.release(self.id, [(job.id, job.attempt) for job in buffered])
        except MiniqueError as exc:
            # Not fatal: their leases run out and another consumer takes them.
            log.error("could not put back %d unstarted task(s): %s", len(buffered), exc)
        with self._cond:
            self._inflight -= len(buffered)
            self._notify()

    # -- for the housekeeper -----------------------------------------------------------------

    def holds_jobs(self) -> bool:
        """True while some claimed job has not been written back by a live dispatcher.

        Leases are renewed only then: were the dispatcher gone, its jobs must
        be let go to another consumer when their leases run out.
        """
        dispatcher = self._dispatcher
        return self._inflight > 0 and dispatcher is not None and dispatcher.is_alive()

    def unrecorded_starts(self) -> list[tuple[int, int, float]]:
        """``(id, attempt, started_at)`` of running jobs claimed ahead whose start is not stored."""
        return list(self._unrecorded.values())

    def starts_recorded(self, starts: list[tuple[int, int, float]]) -> None:
        """Forget these starts: the store has them now."""
        for job_id, attempt, _ in starts:
            self._unrecorded.pop((job_id, attempt), None)
