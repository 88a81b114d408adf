"""A monotonic clock that tests freezing time cannot stop."""

from __future__ import annotations

import time


def real_monotonic() -> float:
    """Seconds on the system's monotonic clock, for bounding waits.

    Not ``time.monotonic()``: freezegun freezes that in the tests of
    applications that use minique, and a wait with a timeout must still come
    to an end there.
    """
    return time.clock_gettime(time.CLOCK_MONOTONIC)
