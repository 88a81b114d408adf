"""The line a consumer logs for each task it finishes, at a fraction of ``Logger.log``'s cost.

A busy consumer logs thousands of these a second, and ``Logger.log`` spends
most of its time on what is the same for every one of them: finding the
caller's file and line (a walk up the stack), the thread's and process's
names, the file name split from its path. Measured with one worker and no-op
tasks: 40,000 tasks/s without a line each, 26,000/s with ``Logger.log``.

So the first line that each thread logs from a given place is a record made
by the logging module itself, and later lines from there are copies of it
with their own level, message and time. Handlers, filters and formatters see
ordinary ``LogRecord`` objects with every attribute set (4.3 us a record
with ``Logger.log``, 3.0 us this way); the thread's name is read anew for
each. Wherever a copy could differ from what ``Logger.log`` would make, the
line goes through ``Logger.log`` as before: an application that installed
its own record factory (``logging.setLogRecordFactory``) or wraps
``Logger.makeRecord`` (as tracing libraries do to add trace ids), since
those may add something different to each record; a line logged inside a
running asyncio loop (its task's name is in the record); and a process that
turned off caller information (``logging._srcfile = None``).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from types import CodeType, FunctionType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .lifecycle import Consumer
    from .periodic import PeriodicScheduler

log = logging.getLogger("minique")


class _Prototypes(threading.local):
    def __init__(self) -> None:
        # By calling line: the caller's file, line and function are in the record.
        self.records: dict[tuple[CodeType, int], logging.LogRecord] = {}
        # What the records were made under: the process, and the logging
        # module's switches for thread and process names.
        self.made_under: tuple[object, ...] = ()


_local = _Prototypes()
_forks = 0


def _after_fork_in_child() -> None:
    # The thread that forked carries its prototype into the child, with the
    # parent's process id in it.
    global _forks
    _forks += 1


os.register_at_fork(after_in_child=_after_fork_in_child)


_stock_make: list[object] = []  # the makeRecord found to be the logging module's own


def _stock_make_record(logger: logging.Logger) -> bool:
    make = type(logger).makeRecord
    if _stock_make and make is _stock_make[0]:
        return True
    if isinstance(make, FunctionType) and make.__code__.co_filename == logging.__file__:
        _stock_make[:] = [make]
        return True
    return False


def _in_running_loop() -> bool:
    asyncio = sys.modules.get("asyncio")
    return asyncio is not None and asyncio._get_running_loop() is not None


def log_task_line(level: int, message: str) -> None:
    """``log.log(level, message)`` for a task's line, as if called where this is called."""
    if not log.isEnabledFor(level):
        return
    if (logging.getLogRecordFactory() is not logging.LogRecord or not _stock_make_record(log)
            or not logging._srcfile or _in_running_loop()):
        log.log(level, message, stacklevel=2)
        return
    made_under = (_forks, logging.logThreads, logging.logProcesses, logging.logMultiprocessing)
    if _local.made_under != made_under:
        _local.records.clear()
        _local.made_under = made_under
    caller = sys._getframe(1)
    where = (caller.f_code, caller.f_lineno)
    proto = _local.records.get(where)
    if proto is None:
        path, line, function, _ = log.findCaller(stacklevel=2)
        proto = _local.records[where] = log.makeRecord(log.name, level, path, line, "", (),
                                                       None, function)
    record = logging.LogRecord.__new__(logging.LogRecord)
    record.__dict__.update(proto.__dict__)
    now = time.time()
    record.msg = message
    record.levelno = level
    record.levelname = logging.getLevelName(level)
    record.created = now
    record.msecs = int((now - int(now)) * 1000) + 0.0
    record.relativeCreated = proto.relativeCreated + (now - proto.created) * 1000
    if proto.threadName is not None:  # a task may have renamed its thread
        record.threadName = threading.current_thread().name
    log.handle(record)


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
