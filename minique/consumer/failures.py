"""Logging a failure that repeats: once when it starts, then one line per interval with a count.

A background thread that cannot reach the database (disk full, a read-only
file, a lock held for minutes) tries again and again; a line per try buries
everything else in the log, and a line that never comes again hides that the
trouble lasts.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("minique")

# One line per this many seconds while the same failure repeats.
REPEAT_EVERY = 30.0


class FailureLog:
    """The log lines of one thread's failures, with repeats of the same one counted.

    ``failed(exc)`` logs a new failure at once and counts repeats of the same
    message, logging the count once every ``every`` seconds (``REPEAT_EVERY``
    unless given); ``succeeded()`` logs that it works again, if it had failed.
    """

    def __init__(self, what: str, every: float | None = None) -> None:
        self.what = what
        self.every = REPEAT_EVERY if every is None else every
        self._message: str | None = None
        self._first = 0.0  # when the current failure began
        self._since = 0.0  # when it was last logged
        self._repeats = 0  # since then
        self._total = 0

    def failed(self, exc: BaseException) -> None:
        """Note one failure: log it if it is new, or if its repeats are due to be counted."""
        now = time.monotonic()
        message = str(exc) or type(exc).__name__
        self._total += 1
        if message != self._message:
            self._log_repeats(now)
            log.error("%s failed, will try again: %s", self.what, message)
            self._message, self._since, self._repeats = message, now, 0
            if self._total == 1:
                self._first = now
            return
        self._repeats += 1
        if now - self._since >= self.every:
            self._log_repeats(now)

    def succeeded(self) -> None:
        """Note a success: if it follows failures, log their count and that it works again."""
        if self._message is None:
            return
        now = time.monotonic()
        self._log_repeats(now)
        log.info("%s works again (after %d failed tries over %.3g s)", self.what, self._total,
                 now - self._first)
        self._message, self._repeats, self._total = None, 0, 0

    def _log_repeats(self, now: float) -> None:
        if self._repeats:
            log.error("%s failed, will try again: %s (repeated %d times in the last %.3g s)",
                      self.what, self._message, self._repeats, now - self._since)
        self._since, self._repeats = now, 0
