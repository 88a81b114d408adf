"""The consumer: starting and stopping its threads, and the signals that stop it.

A consumer is a dispatcher thread that claims and records (dispatcher.py),
worker threads that run tasks (workers.py; with one worker the dispatcher
runs them itself, inline.py), a housekeeping thread for leases, dead
consumers and old results (housekeeping.py), and a periodic scheduler
(periodic.py). They share what the consumer holds through a ``Ledger``.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal

from .. import options as check
from ..errors import ConsumerFailed, MiniqueError, OptionError
from ..store import ConsumerInfo, Listener
from .dispatcher import Dispatcher
from .housekeeping import Housekeeper
from .identity import describe_self
from .inline import InlineRunner
from .ledger import Ledger
from .periodic import PeriodicScheduler
from .tasklog import log_banner
from .workers import Workers

if TYPE_CHECKING:
    from ..app import Minique

log = logging.getLogger("minique")

WorkerType = Literal["thread", "process"]


class Consumer:
    """Runs the tasks of one ``Minique`` in worker threads.

    ``start()``/``stop()`` run it in the background (callable from any thread;
    no signal handlers); ``run()`` blocks and handles SIGTERM/SIGINT when
    called from the main thread; ``with consumer:`` starts and stops it.
    """

    def __init__(
        self, mq: Minique, workers: int = 4, queues: Sequence[str] | None = None,
        periodic: bool = True, grace: float = 30.0, poll_interval: float = 0.25,
        worker_type: WorkerType = "thread", max_tasks: int | None = None,
        max_memory: float | None = None,
    ) -> None:
        # Checked here, in the caller: a bad value would otherwise stop a
        # thread of the running consumer (a NaN grace, a string queue name).
        self.workers = check.integer(
            workers, "workers", "a consumer needs at least one worker: give an int >= 1",
            low=1)
        if worker_type not in ("thread", "process"):
            raise OptionError(f"worker_type must be 'thread' or 'process', not {worker_type!r}")
        self.worker_type = worker_type
        self.mq = mq
        # 32 random hex digits, as uuid4().hex gave, without importing uuid
        # (and platform) at every consumer's start.
        self.id = os.urandom(16).hex()
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
        # Recycling: thread workers stop the consumer (run() returns, for its
        # supervisor to start a fresh one); process workers replace their child.
        self.max_tasks = None if max_tasks is None else check.integer(
            max_tasks, "max_tasks", "give the number of tasks after which the consumer is "
            "replaced, an int >= 1, or None", low=1)
        self.max_memory = None if max_memory is None else check.real(
            max_memory, "max_memory", "give the resident memory in MB past which the "
            "consumer is replaced, a number > 0, or None", low_open=True)
        self.identity: ConsumerInfo | None = None
        inline = self.workers == 1 and worker_type == "thread"
        processes = worker_type == "process"
        #: What the consumer's threads share (see ledger.py).
        self.ledger = Ledger(mq, self.workers, inline)
        if not processes:
            self.ledger.budget = self.max_tasks
        self._workers = Workers(
            mq, self.ledger, self.id, processes, self.max_tasks if processes else None,
            None if self.max_memory is None or not processes else self.max_memory * 2**20)
        self._inline = InlineRunner(mq, self.ledger, self._workers) if inline else None
        self._dispatcher: Dispatcher | None = None
        self._listener: Listener | None = None
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

    # -- starting ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker, dispatcher and scheduler threads and return.

        Raises ``ConfigurationError``/``DatabaseError`` if the database cannot
        be opened or written, or what an ``on_consumer_start`` hook raised;
        then nothing of the consumer is left running or registered.
        """
        if self._started:
            raise RuntimeError("this consumer was already started; make a new one")
        self._started = True
        try:
            self._prepare()
        except BaseException:
            self._undo_start()
            raise
        # The banner comes before the first task line: no thread runs yet.
        log_banner(self, self._scheduler)
        for _ in range(self.workers):
            self._workers.start_one()
        assert self._dispatcher is not None and self._housekeeper is not None
        self._dispatcher.start()
        if self._inline is not None:
            self._inline.start()
        self._housekeeper.start()
        if self._scheduler is not None:
            self._scheduler.start()

    def _prepare(self) -> None:
        """Everything of start() that may fail, before any thread runs."""
        now = time.time()
        queues = ",".join(self.queues) if self.queues else "*"
        self.identity = describe_self(self.id, queues, self.workers, now)
        self.mq.store.register_consumer(self.identity)
        self._housekeeper = Housekeeper(self)
        self._housekeeper.recover_dead_consumers()
        for hook in self.mq.start_hooks:
            hook(self)
        self._workers.check_processes()
        self.ledger.open_pipe()
        self._listener = self.mq.store.notifier.listen(self.id)
        self.mq.add_waker(self.ledger.wake)
        self._dispatcher = Dispatcher(
            self.mq, self.ledger, self._workers, self.id, self.queues, self.poll_interval,
            self._listener, self._inline, self._stop_requested.set, self._stop_requested.set)
        if self.periodic and self.mq.periodic_tasks:
            self._scheduler = PeriodicScheduler(self)
            self._scheduler.sync()  # the slots, for the banner

    def _undo_start(self) -> None:
        self._workers.close_processes()
        self.mq.remove_waker(self.ledger.wake)
        with self.ledger.cond:
            self.ledger.dispatched = True  # none was started
        self._let_go()

    # -- stopping ------------------------------------------------------------------------

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop claiming, let running tasks finish for up to ``timeout`` seconds, put back the rest.

        Returns once the consumer has stopped. Tasks still running after the
        timeout are returned to the queue (without using an attempt); their
        threads are abandoned and whatever they finish is ignored.
        """
        if not self._started or self._stopped.is_set():
            return
        ledger = self.ledger
        if self._scheduler is not None:
            self._scheduler.stop()  # enqueue nothing more while we drain
        with ledger.cond:
            ledger.stopping = True
            ledger.notify()
        if timeout is None:
            log.info("stopping: no new tasks; waiting for running ones")
        else:
            log.info("stopping: no new tasks; waiting up to %g s for running ones", timeout)
        assert self._dispatcher is not None
        with ledger.cond:
            # Until the dispatcher is done, the grace is over, or a second
            # signal says not to wait.
            ledger.cond.wait_for(lambda: ledger.dispatched or ledger.abandon, timeout)
            if not ledger.dispatched:
                ledger.abandon = True
                # A dispatcher inside a task of its own cannot come back now:
                # put back for it, and have it drop what it finishes.
                ledger.taken_over = ledger.in_task
                ledger.notify()
        if not ledger.taken_over:
            self._dispatcher.thread.join()
        if self._inline is not None:
            self._inline.stop()
        try:
            # Kill process workers first: a released attempt must not go on
            # running in a child while another consumer starts it again.
            try:
                self._workers.close_processes()
            finally:
                self.ledger.let_go(self.id)
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        self.mq.remove_waker(self.ledger.wake)
        if self._housekeeper is not None:
            self._housekeeper.stop()
        self._workers.send_stop()
        self._let_go()
        for hook in self.mq.stop_hooks:
            hook(self)
        log.info("minique consumer %s stopped", self.id[:8])

    def _let_go(self) -> None:
        """Stop listening, close the pipe (once the dispatcher is gone too), unregister."""
        if self._listener is not None:
            self._listener.close()
        with self.ledger.cond:
            self.ledger.shut = True
            self.ledger.close_pipe_when_done()
        try:
            self.mq.store.unregister_consumer(self.id)
        except MiniqueError as exc:
            log.warning("could not unregister consumer %s: %s", self.id[:8], exc)
        self._stopped.set()

    # -- running in the foreground -------------------------------------------------------

    def run(self) -> None:
        """Run until SIGTERM or SIGINT (when on the main thread) or ``request_stop()``.

        A second SIGINT skips the rest of the grace period. Raises
        ``ConsumerFailed`` after stopping if the dispatcher gave up.
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
        failed = self.ledger.failed
        if failed is not None:
            raise ConsumerFailed(
                f"the consumer stopped: its dispatcher kept failing "
                f"({type(failed).__name__}: {failed}); see the log, and restart it"
            ) from failed

    def request_stop(self) -> None:
        """Ask ``run()`` to stop, from any thread (it also stops itself to be recycled)."""
        self._stop_requested.set()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stop_requested.is_set():
            log.warning("second signal: putting back running tasks now")
            with self.ledger.cond:
                self.ledger.abandon = True
                self.ledger.notify()
            return
        self._stop_requested.set()

    # -- state, for callers and the housekeeper ------------------------------------------

    @property
    def running(self) -> bool:
        """True between ``start()`` and the end of ``stop()``."""
        return self._started and not self._stopped.is_set()

    @property
    def failed(self) -> bool:
        """True once the dispatcher has given up (see ``ConsumerFailed``)."""
        return self.ledger.failed is not None

    def wake(self) -> None:
        """Tell the dispatcher that new work may be ready (cheap; any thread)."""
        self.ledger.wake()

    def holds_jobs(self) -> bool:
        """True while some claimed job has not been written back by a live dispatcher.

        Leases are renewed only then: were the dispatcher gone, its jobs must
        be let go to another consumer when their leases run out.
        """
        dispatcher = self._dispatcher
        return self.ledger.inflight > 0 and dispatcher is not None and dispatcher.alive()
