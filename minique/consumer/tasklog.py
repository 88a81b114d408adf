"""The lines a consumer logs: its banner as it starts, and one line per task it finishes."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .lifecycle import Consumer
    from .periodic import PeriodicScheduler

log = logging.getLogger("minique")


def log_task_line(level: int, message: str) -> None:
    """``log.log(level, message)`` for a task's line, as if called where this is called.

    Plain ``Logger.log`` on purpose: a record copied by hand was measured to
    save too little to pay for its reach into the logging module's internals
    (docs/benchmarks.md, "Speed that pays for its code").
    """
    log.log(level, message, stacklevel=2)


def log_banner(consumer: Consumer, scheduler: PeriodicScheduler | None) -> None:
    """The lines a consumer logs as it starts: where, what it serves, its tasks."""
    mq = consumer.mq
    queues = ", ".join(consumer.queues) if consumer.queues else "all"
    log.info("minique consumer %s started on %s", consumer.id[:8], mq.store.location)
    kind = "threads" if consumer.worker_type == "thread" else "processes"
    log.info("  queues: %s; workers: %d %s; periodic: %s; lease: %g s", queues,
             consumer.workers, kind, "on" if consumer.periodic else "off", mq.lease)
    names = sorted(mq.tasks)
    log.info("  %d tasks: %s", len(names), ", ".join(names) or "(none registered)")
    if scheduler is not None:
        for name, task in sorted(scheduler.tasks.items()):
            assert task.periodic is not None
            log.info("  periodic: %s on %s, next at %s", name, task.periodic.expr,
                     mq.local_time(scheduler.slots[name]))
