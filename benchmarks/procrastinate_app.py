"""The benchmark tasks on Procrastinate 3; ``BENCH_DB`` is the PostgreSQL URL, as for minique.

The worker is Procrastinate's own command, as its users run it::

    python -m procrastinate --app=benchmarks.procrastinate_app.app worker --concurrency=4

Producers (``benchmarks.probe``) use the synchronous API its documentation
gives for code that is not async: ``app.open()`` once, then ``defer`` and
``batch_defer``, each call one transaction of its own.
"""

from __future__ import annotations

import os
from typing import Any

from procrastinate import App, PsycopgConnector

from benchmarks import marks

FILL_CHUNK = 10_000

app = App(connector=PsycopgConnector(conninfo=os.environ["BENCH_DB"]))
_opened = False


@app.task(name="noop")
def noop(i: int = 0) -> None:
    marks.tick()


@app.task(name="stamp")
def stamp_task(enqueued_at: float) -> None:
    marks.stamp(enqueued_at)


@app.task(name="hold")
def hold_task() -> None:
    marks.hold()


def _open() -> None:
    # Opened on the producer's first call, not at import: the worker command
    # imports this module too, and opens the app (asynchronously) itself.
    global _opened
    if not _opened:
        app.open()
        _opened = True


def _kwargs(numbers: range) -> list[dict[str, Any]]:
    return [{"i": i} for i in numbers]


def enqueue_one(i: int) -> None:
    _open()
    noop.defer(i=i)


def enqueue_map(n: int) -> None:
    _open()
    noop.batch_defer(*_kwargs(range(n)))


def fill(n: int) -> None:
    """Queue ``n`` no-op tasks the fastest way Procrastinate offers: ``batch_defer`` in chunks."""
    _open()
    for start in range(0, n, FILL_CHUNK):
        noop.batch_defer(*_kwargs(range(start, min(n, start + FILL_CHUNK))))


def stamp(enqueued_at: float) -> None:
    _open()
    stamp_task.defer(enqueued_at=enqueued_at)


def hold() -> None:
    _open()
    hold_task.defer()
