"""The consumer's scheduler thread: leases, dead consumers, expired results.

It renews the leases of the jobs this consumer holds, takes back the jobs of
consumers that are gone (at once when they are certainly dead on this host,
when their lease runs out otherwise), and deletes results past their TTL.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import MiniqueError
from ..store import Reaped
from .failures import FailureLog
from .identity import certainly_dead, renew_interval, resident_bytes

if TYPE_CHECKING:
    from .lifecycle import Consumer

log = logging.getLogger("minique")

DEAD_CHECK_EVERY = 1.0
# Commits poke the store's own checkpointer thread; this catches the rest.
CHECKPOINT_EVERY = 1.0
PURGE_EVERY = 60.0
MEMORY_CHECK_EVERY = 1.0
# While the database fails, wait this long before trying again, doubling up to MAX_BACKOFF.
MIN_BACKOFF = 0.1
MAX_BACKOFF = 5.0


class Housekeeper:
    """One thread of periodic chores for one consumer."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.mq = consumer.mq
        self.lease = consumer.mq.lease
        # Renew well before expiry; readers judge liveness by the same interval.
        self.renew_every = renew_interval(self.lease)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="minique-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(5.0)

    def _loop(self) -> None:
        # Each chore keeps its own schedule, and one that fails waits a
        # growing while (no longer than a renewal) before its next try: a
        # chore that keeps failing (a checkpoint, a purge) must not keep the
        # lease renewal from running, nor flood the log.
        chores: list[tuple[Callable[[], None], float]] = [
            (self.renew, self.renew_every),
            (self._check_others, DEAD_CHECK_EVERY),
            (self.mq.store.maintenance, CHECKPOINT_EVERY),
            (self.purge, PURGE_EVERY),
            (self.check_memory, MEMORY_CHECK_EVERY),
        ]
        due = [time.monotonic()] * len(chores)
        failures = FailureLog("housekeeping")
        backoff = 0.0
        while not self._stop.is_set():
            failed = False
            for i, (chore, every) in enumerate(chores):
                now = time.monotonic()
                if now < due[i]:
                    continue
                try:
                    chore()
                    due[i] = now + every
                except Exception as exc:
                    if not isinstance(exc, MiniqueError):
                        log.exception("housekeeping failed unexpectedly")
                    failed = True
                    failures.failed(exc)
                    due[i] = now + min(max(2 * backoff, MIN_BACKOFF), MAX_BACKOFF,
                                       self.renew_every)
            if failed:
                backoff = min(max(2 * backoff, MIN_BACKOFF), MAX_BACKOFF, self.renew_every)
            elif backoff:
                failures.succeeded()
                backoff = 0.0
            self._stop.wait(max(min(due) - time.monotonic(), 0.01))

    def _check_others(self) -> None:
        self.recover_dead_consumers()
        self.reap_expired()

    def check_memory(self) -> None:
        """Past ``max_memory`` (thread workers), stop taking work so that a fresh consumer runs."""
        consumer = self.consumer
        if consumer.max_memory is None or consumer.worker_type == "process":
            return
        rss = resident_bytes()
        if rss is not None and rss > consumer.max_memory * 2**20:
            log.info("resident memory %.0f MB passed --max-memory %g MB: stopping, to be "
                     "replaced by a fresh one", rss / 2**20, consumer.max_memory)
            consumer.request_stop()

    def renew(self) -> None:
        """Extend the leases of this consumer's jobs, and note that it is alive."""
        if self.consumer.failed:
            return  # its dispatcher gave up: let its leases run out, and stop looking alive
        now = time.time()
        if self.consumer.holds_jobs():
            # Calls claimed ahead that have run since the last renewal count
            # their attempts now, in the same transaction.
            started = self.consumer.ledger.unrecorded_starts()
            self.mq.store.renew(self.consumer.id, self.lease, now, started)
            self.consumer.ledger.starts_recorded(started)
        self.mq.store.consumer_heartbeat(self.consumer.id, now)

    def recover_dead_consumers(self) -> None:
        """Take back at once the jobs of consumers on this host that are certainly dead."""
        me = self.consumer.identity
        if me is None:
            return
        for other in self.mq.store.consumers():
            if other.id == me.id:
                continue
            if certainly_dead(other, me):
                reaped = self.mq.store.reap_owner(other.id, time.time())
                self.mq.store.unregister_consumer(other.id)
                log.warning("consumer %s (pid %d) is gone; took back %d task(s)",
                            other.id[:8], other.pid, len(reaped))
                self._report(reaped, "that consumer is gone")
            elif other.heartbeat_at < time.time() - max(10 * self.lease, 3600):
                # Silent for that long: its leases ran out long ago; forget it.
                self.mq.store.unregister_consumer(other.id)

    def reap_expired(self) -> None:
        """Take back running jobs whose lease ran out (their consumer stopped renewing)."""
        # Never its own: this consumer is alive, whatever the clocks say.
        reaped = self.mq.store.reap_expired(time.time(), mine=(self.consumer.id,))
        self._report(reaped, "its lease expired")

    def purge(self) -> None:
        """Delete finished jobs older than the queue's ``result_ttl``."""
        if self.mq.result_ttl is None:
            return
        deleted = self.mq.store.purge_finished(time.time() - self.mq.result_ttl)
        if deleted:
            log.info("deleted %d finished task(s) older than %g s", deleted, self.mq.result_ttl)

    def _report(self, reaped: list[Reaped], why: str) -> None:
        self.mq.events.lost(reaped, why)
        for job in reaped:
            if not job.started:
                log.warning("%s[%s] was claimed by consumer %s and had not started as far as "
                            "the database knows; %s: queued again, no attempt used",
                            job.name, job.id, job.owner[:8], why)
            elif job.state == "queued":
                log.warning("%s[%s] was running on consumer %s and %s: queued again "
                            "(attempt %d lost)", job.name, job.id, job.owner[:8], why,
                            job.attempt)
            else:
                log.error("%s[%s] was running on consumer %s and %s, with no attempts left: "
                          "failed", job.name, job.id, job.owner[:8], why)
        if any(job.state == "queued" for job in reaped):
            self.consumer.wake()
