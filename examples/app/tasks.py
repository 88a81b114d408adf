"""The example's queue and tasks. Run a consumer for them from ``examples/``:

    minique consume app.tasks -w 4
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from minique import Minique

# The database sits beside the example, whatever the current directory is, so
# the demo script and the consumer it starts share one file.
DATABASE = Path(__file__).resolve().parent.parent / "demo.db"

mq = Minique(DATABASE)


@mq.task
def add(a: int, b: int) -> int:
    """A plain task."""
    return a + b


# Which calls of fetch_price have already failed once. Kept in the consumer's
# memory, which is enough for a demo with one consumer; a real task would not
# fail on purpose.
_failed_once: set[str] = set()
_lock = threading.Lock()


@mq.task(retries=3, retry_delay=0.5, retry_on=(ConnectionError,))
def fetch_price(symbol: str) -> float:
    """A task that fails on its first attempt and succeeds on its retry."""
    with _lock:
        first_attempt = symbol not in _failed_once
        _failed_once.add(symbol)
    if first_attempt:
        raise ConnectionError(f"price service unreachable for {symbol} (simulated)")
    return {"ACME": 12.5, "INITECH": 3.25}.get(symbol, 1.0)


@mq.task
def send_reminder(text: str) -> str:
    """A task the demo schedules to run a little later (with ``schedule(delay=...)``)."""
    return f"reminder sent at {time.strftime('%H:%M:%S')}: {text}"
