"""The scheduler of periodic tasks: enqueue each crontab slot once, on time.

Each periodic task has one stored slot, its next fire time. The thread sleeps
until the earliest slot and fires it with a compare-and-set on that slot in
the same transaction as the enqueue, so however many consumers share the
database each slot becomes exactly one job, and a restart never fires a slot
twice. A slot that came due before this scheduler started was missed while no
consumer ran: it is skipped, not replayed.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from ..errors import MiniqueError
from .failures import FailureLog

if TYPE_CHECKING:
    from ..task import Task
    from .lifecycle import Consumer

log = logging.getLogger("minique")

# Slots are re-read from the database this often, in case another consumer
# with another version of the code changed them.
RESYNC_EVERY = 60.0
MISSED_AFTER = 1.0


class PeriodicScheduler:
    """One thread that fires the periodic tasks of one consumer's queue."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.mq = consumer.mq
        self.tasks: dict[str, Task[Any, Any]] = dict(self.mq.periodic_tasks)
        self.slots: dict[str, float] = {}
        self.started_at = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="minique-periodic", daemon=True)

    def start(self) -> None:
        """Store a slot for every periodic task, then start firing them."""
        self.started_at = time.time()
        self.sync()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)

    def sync(self) -> None:
        """Read (or create) the stored slot of each periodic task."""
        now = time.time()
        for name, task in self.tasks.items():
            assert task.periodic is not None
            first = task.periodic.next_timestamp(now, self.mq.zone)
            self.slots[name] = self.mq.store.sync_periodic(name, task.periodic.expr, first)

    def _loop(self) -> None:
        next_sync = time.monotonic() + RESYNC_EVERY
        failures = FailureLog("the periodic scheduler")
        while not self._stop.is_set():
            try:
                if time.monotonic() >= next_sync:
                    self.sync()
                    next_sync = time.monotonic() + RESYNC_EVERY
                self.fire_due(time.time())
            except MiniqueError as exc:
                failures.failed(exc)
                self._stop.wait(1.0)
                continue
            failures.succeeded()
            wait = min(self.slots.values(), default=time.time() + RESYNC_EVERY) - time.time()
            self._stop.wait(min(max(wait, 0.0), RESYNC_EVERY))

    def fire_due(self, now: float) -> None:
        """Fire (or skip, if missed before this scheduler started) every slot that is due."""
        fired = False
        for name, slot in list(self.slots.items()):
            if slot > now:
                continue
            task = self.tasks[name]
            assert task.periodic is not None
            # Fire a late slot at most once: the next one is the first after
            # now, so a stalled scheduler never replays a backlog of slots.
            next_fire = task.periodic.next_timestamp(max(slot, now), self.mq.zone)
            # Missed while no consumer ran: it came due before this scheduler
            # started, and by more than another running one could be late.
            missed = slot < self.started_at - MISSED_AFTER
            stored, result = self.mq.fire_periodic(task, slot, next_fire, now,
                                                   enqueue=not missed)
            self.slots[name] = stored
            if result is not None:  # this scheduler, not another one, enqueued it
                fired = True
                log.info("%s[%s] enqueued by its crontab %s (%.1f ms after its time)",
                         name, result.id, task.periodic.expr, (now - slot) * 1000)
            elif missed and stored == next_fire:
                log.info("%s: skipped the slot missed while no consumer ran; next at %s",
                         name, self.mq.local_time(next_fire))
        if fired:
            self.mq.wake_consumers()
