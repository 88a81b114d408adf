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


def boot_id() -> str:
    """This kernel boot's id ("" where the system does not say).

    ``real_monotonic()`` readings of processes on the same boot compare:
    the clock is the kernel's, counted from its boot.
    """
    try:
        with open("/proc/sys/kernel/random/boot_id") as file:
            return file.read().strip()
    except OSError:
        return ""
