"""What the benchmark tasks do, the same for both systems: count, stamp times, hold.

Configured by the environment the harness gives each process: ``BENCH_MARKER``
is a file the tasks append lines to; ``BENCH_MARKS`` lists the counts of
finished no-op tasks at which to append ``"<count> <time>"``. Imports neither
queue, so each app module pays only for its own system.
"""

from __future__ import annotations

import itertools
import os
import time

MARKER = os.environ.get("BENCH_MARKER", "")
MARKS = frozenset(int(m) for m in os.environ.get("BENCH_MARKS", "").split(",") if m)
HOLD_SECONDS = 120.0

# next() on itertools.count is one C call, atomic under the GIL: worker
# threads share it without a lock.
_finished = itertools.count(1)


def _append(line: str) -> None:
    if not MARKER:
        return
    # One write() with O_APPEND: lines from several threads never interleave,
    # and the harness reading the file sees whole lines or none.
    fd = os.open(MARKER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def tick() -> None:
    """The no-op task's body: count it, and note the time at the marked counts."""
    n = next(_finished)
    if n in MARKS:
        _append(f"{n} {time.time()!r}\n")


def stamp(enqueued_at: float) -> None:
    """The latency task's body: note when it was enqueued and when it started."""
    started = time.time()
    _append(f"{enqueued_at!r} {started!r}\n")


def hold() -> None:
    """The crash task's body: say it started (with this process's pid), then run on."""
    _append(f"{os.getpid()}\n")
    time.sleep(HOLD_SECONDS)
