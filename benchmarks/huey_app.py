"""The benchmark tasks on Huey's ``SqliteHuey``; ``BENCH_DB`` and ``BENCH_MODE`` as for minique.

``durable`` is Huey's default (it leaves SQLite's ``synchronous`` at the
build's default, FULL); ``fast`` is ``fsync=False`` (``synchronous`` OFF).
"""

from __future__ import annotations

import os
from typing import Any

from huey import SqliteHuey  # type: ignore[import-untyped]

from benchmarks import marks

_options: dict[str, Any] = {"fsync": False} if os.environ.get("BENCH_MODE") == "fast" else {}
huey = SqliteHuey(filename=os.environ["BENCH_DB"], **_options)


@huey.task()  # type: ignore[untyped-decorator]
def noop(i: int = 0) -> None:
    marks.tick()


@huey.task()  # type: ignore[untyped-decorator]
def stamp(enqueued_at: float) -> None:
    marks.stamp(enqueued_at)


@huey.task()  # type: ignore[untyped-decorator]
def hold() -> None:
    marks.hold()


def enqueue_one(i: int) -> None:
    noop(i)


def enqueue_map(n: int) -> None:
    raise NotImplementedError("the benchmarks compare minique's map with Huey's one-at-a-time")


def fill(n: int) -> None:
    """Queue ``n`` no-op tasks; Huey has no batch enqueue, so one call each."""
    for i in range(n):
        noop(i)
