"""The chaos soak's tasks, and the records they keep of every run, outside minique.

Imported by the soak's consumers (``minique consume benchmarks.chaos_app``)
and producers. ``CHAOS_DB`` names the database (a path, or a URL for another
store), ``CHAOS_QUEUE`` the queue of this run (so that a database used before
or by others changes nothing), ``CHAOS_EVENTS`` the folder of records and
``CHAOS_LABEL`` the name of this process in the run.

Each process appends its records to a file of its own, one line per
``write()`` on a descriptor opened with ``O_APPEND``: a line is in the kernel
once the call returns, so it survives the SIGKILL of the process (not a power
cut, which the soak does not test). Lines, space-separated:

- ``S id attempt token label pid time``: a run of call ``id`` started;
- ``E id attempt token label pid time ok|raised``: that run reached its end
  (``ok``: the task is about to return; ``raised``: it is about to fail, for
  a retry);
- ``R id token time``: written by a producer once ``id`` was returned to it.

The call id and the attempt number come from an ``around_task`` hook (there
is no ``current_job()`` yet); the token is the task's argument, made by the
producer, so that a run can be matched with the call its producer got back.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from minique import Minique
from minique.hooks import Attempt

QUEUE = os.environ.get("CHAOS_QUEUE", "chaos")
LABEL = os.environ.get("CHAOS_LABEL", f"pid{os.getpid()}")

mq = Minique(os.environ["CHAOS_DB"])

_lock = threading.Lock()
_fd = -1
_running = threading.local()


class Flaky(Exception):
    """Raised by ``flaky`` on its first attempt, so that it is retried."""


def record(line: str) -> None:
    """Append one line to this process's file of records (one ``write()``: never torn)."""
    global _fd
    if _fd < 0:
        with _lock:
            if _fd < 0:
                path = os.path.join(os.environ["CHAOS_EVENTS"], f"{LABEL}.events")
                _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(_fd, line.encode())


@mq.around_task
@contextmanager
def _remember_attempt(attempt: Attempt) -> Iterator[None]:
    _running.attempt = attempt
    try:
        yield
    finally:
        _running.attempt = None


def _run(token: str, seconds: float = 0.0, fail_first: bool = False) -> None:
    attempt: Attempt | None = getattr(_running, "attempt", None)
    call = attempt.id if attempt is not None else "?"
    number = attempt.number if attempt is not None else 0
    head = f"{call} {number} {token} {LABEL} {os.getpid()}"
    record(f"S {head} {time.time():.6f}\n")
    if seconds:
        time.sleep(seconds)
    if fail_first and number == 1:
        record(f"E {head} {time.time():.6f} raised\n")
        raise Flaky(f"{token}: the first attempt of a flaky call fails on purpose")
    record(f"E {head} {time.time():.6f} ok\n")


@mq.task(name="chaos.quick", queue=QUEUE)
def quick(token: str) -> None:
    """A no-op, but for its records."""
    _run(token)


# Slow runs are the ones a kill interrupts: with retries, a call whose every
# attempt was killed mid-run (which ends it failed, as documented) needs three
# kills of its consumers within its few runs, which a soak does not meet.
@mq.task(name="chaos.slow", queue=QUEUE, retries=2, retry_delay=0.05)
def slow(token: str, seconds: float) -> None:
    """Sleeps tens of milliseconds."""
    _run(token, seconds)


@mq.task(name="chaos.flaky", queue=QUEUE, retries=2, retry_delay=0.05)
def flaky(token: str) -> None:
    """Fails its first attempt, then succeeds on a retry."""
    _run(token, fail_first=True)


def returned(results: list[tuple[Any, str]]) -> None:
    """Record calls whose enqueue returned (``(Result, token)`` pairs), in one write."""
    now = f"{time.time():.6f}"
    record("".join(f"R {result.id} {token} {now}\n" for result, token in results))
