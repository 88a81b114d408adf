"""The dispatcher: the one thread of a consumer that claims jobs and writes outcomes.

In one transaction it writes the outcomes the workers handed back and claims
as many new jobs as there are free workers (plus a small buffer while tasks
are short). A busy consumer therefore finishes and claims in batches, one
commit each; an idle one sleeps until a producer's nudge, a poll of the
store's change counter, or the next scheduled eta. It sleeps in ``poll()`` on
both the store's wake-up descriptor and a pipe the other threads of the
consumer write to, so that a nudge wakes the thread that claims, with no
thread between them.
"""

from __future__ import annotations

import logging
import os
import queue
import select
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import MiniqueError
from ..store import ClaimedJob, Listener
from .inline import InlineRunner
from .ledger import Ledger
from .workers import Workers

if TYPE_CHECKING:
    from ..app import Minique

log = logging.getLogger("minique")

# Unexpected errors in a row, with no write between them, after which the
# dispatcher stops and run() raises ConsumerFailed.
GIVES_UP_AFTER = 8


class Dispatcher:
    """Claims, hands out and records; runs the tasks itself in the one-worker mode."""

    def __init__(self, mq: Minique, ledger: Ledger, workers: Workers, owner: str,
                 queues: tuple[str, ...] | None, poll_interval: float,
                 listener: Listener | None, inline: InlineRunner | None,
                 gave_up: Callable[[], None], recycle: Callable[[], None]) -> None:
        self.mq = mq
        self.ledger = ledger
        self.workers = workers
        self.owner = owner
        self.queues = queues
        self.poll_interval = poll_interval
        self.listener = listener
        self.inline = inline
        self._gave_up = gave_up
        self._recycle = recycle
        self._errors = 0  # unexpected errors since the last write
        self.thread = threading.Thread(target=self._run, name="minique-dispatcher", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def alive(self) -> bool:
        return self.thread.is_alive()

    def _run(self) -> None:
        ledger = self.ledger
        try:
            while True:
                try:
                    self._loop()
                    return
                except Exception as exc:
                    # A bug of ours, or a row no check foresaw: never leave the
                    # consumer alive and idle. Start the loop again; a loop that
                    # keeps failing without a write in between gives up, and
                    # run() exits non-zero for a supervisor to restart it.
                    self._errors += 1
                    log.exception("the dispatcher failed (%d in a row); it starts again",
                                  self._errors)
                    if self._errors >= GIVES_UP_AFTER:
                        log.critical("the dispatcher keeps failing; the consumer stops")
                        with ledger.cond:
                            ledger.failed = exc
                        self._gave_up()
                        return
                    time.sleep(min(0.05 * 2 ** self._errors, 2.0))
        finally:
            with ledger.cond:
                ledger.dispatched = True
                ledger.notify()
                ledger.close_pipe_when_done()
            if self.inline is not None:
                self.inline.busy.set()

    def _loop(self) -> None:
        ledger = self.ledger
        store = self.mq.store
        version = self._changes()
        ledger.refresh_next_eta()
        failures = 0
        while True:
            with ledger.cond:
                sleep = None if self._should_wake() else self._sleep_time()
                ledger.sleeping = sleep is not None
            if sleep is not None:
                self._sleep(sleep)
            with ledger.cond:
                stopping = ledger.stopping
            if stopping:
                self._release_buffered()
            elif self.inline is not None and ledger.pending and not ledger.handed \
                    and not self.inline.run_pending():
                return
            with ledger.cond:
                # The timed-out first: should starting a replacement worker
                # fail, the outcomes held stay held for the next round.
                timed = self.workers.take_timed_out() if ledger.watched else []
                ran, ledger.ran = ledger.ran + timed, []
                leave = ledger.abandon or (ledger.stopping and ledger.inflight == len(ran))
                # The outcomes written in this transaction free their slots in it.
                limit = 0 if ledger.stopping or ledger.abandon \
                    else ledger.capacity(len(ran))
                start_now = ledger.free_workers(len(ran))
                hint = ledger.hint
                if limit > 0:
                    ledger.hint = False  # consumed: a nudge from now on sets it again
                next_eta = ledger.next_eta
            now = time.time()
            if limit > 0 and not hint:
                current = self._changes()
                hint = current != version or (next_eta is not None and next_eta <= now)
                version = current
            if limit <= 0 or not hint:
                limit = 0
            if not ran and not limit and not leave:
                continue
            try:
                # Every claim first promotes scheduled jobs whose time has come
                # (cheap: an index range), so they never wait behind a backlog.
                written, claimed = store.exchange(
                    [r.outcome for r in ran], self.owner, self.mq.lease, now, limit,
                    self.queues, promote=limit > 0, start_now=start_now)
            except Exception as exc:
                failures += 1
                if isinstance(exc, MiniqueError):
                    log.error("cannot reach the queue database (attempt %d): %s", failures, exc)
                else:
                    log.exception("writing outcomes and claiming failed (attempt %d)", failures)
                with ledger.cond:
                    ledger.ran[:0] = ran
                    ledger.hint = ledger.hint or hint
                if leave:
                    return
                time.sleep(min(0.05 * 2 ** failures, 2.0))
                continue
            failures = 0
            self._errors = 0
            ledger.settle(ran, written, claimed, limit)
            if leave:
                return
            if ledger.budget == 0 and ledger.inflight == 0 and not ledger.stopping:
                log.info("ran its --max-tasks: stopping, to be replaced by a fresh one")
                self._recycle()

    def _changes(self) -> int:
        try:
            return self.mq.store.changes()
        except MiniqueError:
            return -1  # unknown: the next look claims, and reports the error if it persists

    def _should_wake(self) -> bool:
        ledger = self.ledger
        if ledger.ran or ledger.abandon or (ledger.pending and not ledger.handed):
            return True
        if ledger.watched and \
                min(w.deadline for w in ledger.watched.values()) <= time.monotonic():
            return True
        if ledger.stopping:
            return ledger.inflight == 0
        return ledger.hint and ledger.capacity() > 0

    def _sleep_time(self) -> float:
        ledger = self.ledger
        wait = self.poll_interval
        # The next eta only matters when a job could be claimed for it; while
        # every worker is busy (or we are stopping) it would make a busy loop.
        if ledger.next_eta is not None and not ledger.stopping and ledger.capacity() > 0:
            wait = min(wait, max(ledger.next_eta - time.time(), 0.0))
        if ledger.watched:
            deadline = min(w.deadline for w in ledger.watched.values())
            wait = min(wait, max(deadline - time.monotonic(), 0.0))
        return wait

    def _sleep(self, timeout: float) -> None:
        """Sleep until poked, nudged by a producer, or ``timeout``."""
        ledger = self.ledger
        listener = self.listener
        fd = listener.fileno() if listener is not None else None
        if listener is not None:
            hold = listener.ready_in()
            if hold > 0:  # nudges flood in: look at them again in a moment
                fd, timeout = None, min(timeout, hold)
        # poll(), not select(): a process may already hold more than 1,024
        # descriptors when the consumer starts (select() refuses those).
        poller = select.poll()
        poller.register(ledger.wake_r, select.POLLIN)
        if fd is not None:
            poller.register(fd, select.POLLIN)
        try:
            ready = {ready_fd for ready_fd, _ in poller.poll(timeout * 1000)}
        except OSError as exc:
            # Never return at once: the dispatcher would spin. Sleep instead,
            # and let the poll of the change counter find the work.
            log.error("cannot wait for nudges (%s); polling every %g s", exc, timeout)
            time.sleep(timeout)
            ready = set()
        finally:
            with ledger.cond:
                ledger.sleeping = False
        if ledger.wake_r in ready:
            try:
                while os.read(ledger.wake_r, 64):
                    pass
            except OSError:  # BlockingIOError once empty
                pass
        nudged = fd is not None and fd in ready
        if nudged:
            assert listener is not None
            listener.drain()
        with ledger.cond:
            ledger.poked = False
            if nudged:
                ledger.hint = True

    def _release_buffered(self) -> None:
        # Jobs claimed ahead of free workers have not started: give them back
        # without using an attempt, so another consumer can take them now.
        ledger = self.ledger
        buffered: list[ClaimedJob] = list(ledger.pending)
        ledger.pending.clear()
        handed = 0
        while True:
            try:
                job = ledger.jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                buffered.append(job)
                handed += 1
        with ledger.cond:
            ledger.handed -= handed
            ledger.waiting -= handed
        if not buffered:
            return
        try:
            self.mq.store.release(self.owner, [(job.id, job.attempt) for job in buffered])
        except MiniqueError as exc:
            # Not fatal: their leases run out and another consumer takes them.
            log.error("could not put back %d unstarted task(s): %s", len(buffered), exc)
        with ledger.cond:
            ledger.inflight -= len(buffered)
            ledger.notify()

