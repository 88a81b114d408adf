"""``crontab``: when a periodic task fires, on top of croniter, read in a time zone."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

_FIELDS = ("minute", "hour", "day", "month", "day_of_week", "second")
_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


class Crontab:
    """A validated cron expression; ``next(after)`` gives the next fire time after a datetime."""

    __slots__ = ("_hour_restricted", "expr", "fields")

    def __init__(self, expr: str) -> None:
        self.expr = expr
        self.fields = _ALIASES.get(expr.lower(), expr)
        # Cron fires an hour-restricted job once when the clock falls back and
        # repeats that hour; a job for every hour fires in both real hours.
        self._hour_restricted = self.fields.split(" ")[1] != "*"

    def __repr__(self) -> str:
        return f"crontab({self.expr!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Crontab) and other.expr == self.expr

    def __hash__(self) -> int:
        return hash(self.expr)

    def next(self, after: dt.datetime) -> dt.datetime:
        """The first matching time strictly after ``after``.

        An aware ``after`` is read in its own zone and the result is aware in
        that zone; a naive one is local time and so is the result.
        """
        if after.tzinfo is None:
            local = after.replace(tzinfo=local_zone())
            return self.next(local).replace(tzinfo=None, fold=0)
        found: dt.datetime = croniter(self.fields, after, day_or=True).get_next(dt.datetime)
        while self._hour_restricted and _second_occurrence(found):
            found = croniter(self.fields, found, day_or=True).get_next(dt.datetime)
        return found

    def next_timestamp(self, after: float, zone: dt.tzinfo) -> float:
        """``next`` in epoch seconds, reading the crontab in ``zone``."""
        return self.next(dt.datetime.fromtimestamp(after, zone)).timestamp()


def _second_occurrence(moment: dt.datetime) -> bool:
    """True for the later of two instants that share a wall-clock time (clocks fell back)."""
    first = moment.replace(fold=0).utcoffset()
    second = moment.replace(fold=1).utcoffset()
    return first != second and moment.utcoffset() == second and moment.fold == 1


def crontab(
    expr: str | None = None, *, minute: str = "*", hour: str = "*", day: str = "*",
    month: str = "*", day_of_week: str = "*", second: str | None = None,
) -> Crontab:
    """A cron schedule: ``crontab("*/5 * * * *")``, 6 fields with seconds last, an ``@alias``,
    or Huey's keywords ``crontab(minute="0", hour="*/3")``.

    When both day and day_of_week are restricted, a day matching either one
    fires, as in standard cron. Raises ``ValueError`` naming the bad field for
    an invalid expression.
    """
    if expr is None:
        fields = [str(minute), str(hour), str(day), str(month), str(day_of_week)]
        if second is not None:
            fields.append(str(second))
        expr = " ".join(fields)
    elif not isinstance(expr, str):
        raise ValueError(f"a crontab expression must be a string, not {type(expr).__name__}")
    expr = " ".join(expr.split())
    _validate(expr)
    return Crontab(expr)


def _validate(expr: str) -> None:
    if expr.startswith("@"):
        if expr.lower() not in _ALIASES:
            raise ValueError(
                f"invalid crontab {expr!r}: unknown alias; use one of {', '.join(_ALIASES)}")
        return
    fields = expr.split(" ")
    if len(fields) not in (5, 6):
        raise ValueError(
            f"invalid crontab {expr!r}: it has {len(fields)} fields; give 5 (minute hour day "
            "month day_of_week) or 6 (the same, then second)")
    if croniter.is_valid(expr):
        return
    # Name the culprit: test each field alone, with every other field '*'.
    for index, value in enumerate(fields):
        probe = ["*"] * len(fields)
        probe[index] = value
        if not croniter.is_valid(" ".join(probe)):
            raise ValueError(
                f"invalid crontab {expr!r}: the {_FIELDS[index]} field {value!r} is not valid")
    raise ValueError(f"invalid crontab {expr!r}: the fields do not make a valid schedule")


def resolve_zone(name: str | None) -> dt.tzinfo:
    """The zone called ``name``, or the machine's local zone for None; ``ValueError`` if unknown."""
    if name is None:
        return local_zone()
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"unknown time zone {name!r}: give an IANA name such as 'Europe/Berlin' or 'UTC' "
            "(on Windows, pip install tzdata)") from exc


def local_zone() -> dt.tzinfo:
    """The machine's local zone as an IANA zone when it can be found, so DST rules apply.

    Read from $TZ, then /etc/localtime; falls back to the current fixed UTC offset.
    """
    candidates = []
    tz_env = os.environ.get("TZ", "").lstrip(":")
    if tz_env:
        candidates.append(tz_env)
    try:
        target = str(Path("/etc/localtime").resolve())
    except OSError:
        target = ""
    if "zoneinfo/" in target:
        candidates.append(target.split("zoneinfo/", 1)[1])
    for name in candidates:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            continue
    fixed = dt.datetime.now().astimezone().tzinfo
    return fixed if fixed is not None else dt.UTC
