"""The benchmark tasks on minique; ``BENCH_DB`` and ``BENCH_MODE`` pick the file and pairing.

``durable`` is ``synchronous="full"``; ``fast`` is minique's default, ``"normal"``.
``BENCH_DB`` may be a PostgreSQL URL (``benchmarks/postgres.py``, mode ``postgres``):
any mode but ``durable`` gives ``"normal"``, the only setting that store takes.
"""

from __future__ import annotations

import os

from benchmarks import marks
from minique import Minique

FILL_CHUNK = 10_000

mq = Minique(os.environ["BENCH_DB"],
             synchronous="full" if os.environ.get("BENCH_MODE") == "durable" else "normal")


@mq.task
def noop(i: int = 0) -> None:
    marks.tick()


@mq.task
def stamp(enqueued_at: float) -> None:
    marks.stamp(enqueued_at)


@mq.task
def hold() -> None:
    marks.hold()


def enqueue_one(i: int) -> None:
    noop(i)


def enqueue_map(n: int) -> None:
    noop.map(range(n))


def fill(n: int) -> None:
    """Queue ``n`` no-op tasks as fast as the public API allows: ``map`` in chunks."""
    for start in range(0, n, FILL_CHUNK):
        noop.map(range(start, min(n, start + FILL_CHUNK)))
