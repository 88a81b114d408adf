"""Job ids: 63-bit integers that grow with time, stored as the jobs table's rowid.

An id is the milliseconds since 2026-01-01 (41 bits, good until 2095), then
22 bits that start at a random point (20 random bits) each millisecond and
count up within a process. So ids are unique within a process, ordered by time across
processes, and land at the end of the table's b-tree: enqueueing touches no
separate id index. Two processes that pick the same id in the same
millisecond (about one chance in a million) get a clean retry, see
``DuplicateJobId``. ``Result.id`` is the id in decimal.
"""

from __future__ import annotations

import os
import random
import threading
import time

_EPOCH_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
_LOW_BITS = 22

_lock = threading.Lock()
_last = 0


def new_ids(count: int, collided: bool = False) -> range:
    """``count`` fresh ids, increasing.

    ``collided`` after ``DuplicateJobId``: the ids that follow the one that
    collided may be the other process's too (it counts up within the
    millisecond as well), so the count jumps ahead past them.
    """
    global _last
    # The random module reseeds itself in a forked child, so siblings differ.
    # A clock set before 2026 (a test's frozen time, a bad clock) counts as
    # 2026-01-01: ids stay positive and the random bits keep processes apart.
    millis = max(time.time_ns() // 1_000_000 - _EPOCH_MS, 0)
    base = (millis << _LOW_BITS) | random.getrandbits(_LOW_BITS - 2)
    with _lock:
        if collided:
            # Up to 2**16 ahead: far past any run of ids one process makes in
            # a millisecond, and still inside the millisecond's 22 bits.
            _last += 1 + random.getrandbits(16)
        first = max(base, _last + 1)
        _last = first + count - 1
    return range(first, first + count)


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # a thread of the parent may have held it at fork


os.register_at_fork(after_in_child=_after_fork_in_child)


def new_id() -> int:
    """One fresh id."""
    return new_ids(1)[0]
