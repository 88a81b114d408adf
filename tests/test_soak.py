"""Long runs (deselected by default; run with `pytest -m soak`): the WAL stays bounded.

A reader left open, or checkpoints that never complete, let SQLite's -wal
file grow without end while producers and consumers keep working. Here a
producer and a consumer run together for SOAK_SECONDS (default 60) and the WAL
must stay within a bound.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from minique import Minique
from minique.consumer import Consumer

SECONDS = float(os.environ.get("SOAK_SECONDS", "60"))
WAL_LIMIT = 64 * 1024 * 1024  # the automatic checkpoint alone bounds it near 40 MB


@pytest.mark.soak
@pytest.mark.timeout(SECONDS * 3 + 60)
def test_wal_stays_bounded_while_producers_and_a_consumer_run(
        mq: Minique, db_path: Path, start_consumer: Callable[..., Consumer]) -> None:
    @mq.task
    def work(n: int) -> int:
        return n

    start_consumer(mq, workers=4)
    stop = threading.Event()
    sent = [0]

    def produce() -> None:
        while not stop.is_set():
            work.map(range(50))
            work(1)
            sent[0] += 51

    producer = threading.Thread(target=produce)
    producer.start()
    wal = Path(f"{db_path}-wal")
    biggest = 0
    deadline = time.monotonic() + SECONDS
    try:
        while time.monotonic() < deadline:
            biggest = max(biggest, wal.stat().st_size if wal.exists() else 0)
            time.sleep(0.2)
    finally:
        stop.set()
        producer.join(30)
    counts = mq.counts()
    print(f"soak: {sent[0]} tasks sent in {SECONDS:g} s, {counts['done']} done; "
          f"largest WAL {biggest / 1e6:.1f} MB")
    assert biggest < WAL_LIMIT
    assert mq.counts()["done"] > 0
