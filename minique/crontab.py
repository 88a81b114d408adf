"""``crontab``: when a periodic task fires, on top of croniter, read in a time zone."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if TYPE_CHECKING:
    from croniter import croniter as Croniter


def _croniter() -> type[Croniter]:
    # Imported on first use: croniter (and dateutil) add ~30 ms to every
    # process start, and most processes that import minique fire no crontab.
    from croniter import croniter

    found: type[Croniter] = croniter
    return found

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
            zone = local_zone()
            found = _at(self.next_timestamp(after.replace(tzinfo=zone).timestamp(), zone), zone)
            return found.replace(tzinfo=None)  # keeps fold: which 01:30 it is
        return _at(self.next_timestamp(after.timestamp(), after.tzinfo), after.tzinfo)

    def next_timestamp(self, after: float, zone: dt.tzinfo) -> float:
        """The next fire time after the instant ``after`` (epoch seconds), reading the
        crontab in ``zone``.

        croniter answers in wall-clock time, which is ambiguous when clocks fall
        back, so the instant is worked out here from both readings, without
        trusting ``fold`` (freezegun, for one, loses it).
        """
        croniter = _croniter()
        bound = after  # the answer must be later than this
        for _ in range(4):
            wall: dt.datetime = croniter(self.fields, _at(bound, zone), day_or=True).get_next(
                dt.datetime)
            first, second = wall.replace(fold=0).timestamp(), wall.replace(fold=1).timestamp()
            repeated = first != second and _at(first, zone).replace(tzinfo=None) \
                == _at(second, zone).replace(tzinfo=None)
            later: list[float] = sorted(t for t in ({first, second} if repeated else {first})
                                        if t > bound)
            if not later:
                break  # croniter lost track of which 01:30 it started from
            if repeated and self._hour_restricted and later[0] == max(first, second):
                bound = later[0]  # the hour came round again: a fixed-hour job ran already
                continue
            return later[0]
        return self._next_by_wall(bound, zone)

    def _next_by_wall(self, after: float, zone: dt.tzinfo) -> float:
        """The slow, sure way through a repeated hour: list wall-clock matches around
        ``after`` and take the earliest instant after it.

        Used only where croniter's own reading went wrong: its arithmetic loses
        ``fold`` when ``datetime`` is replaced (freezegun does that).
        """
        wall = _at(after, zone).replace(tzinfo=None, fold=0)
        matches = _croniter()(self.fields, wall - _WINDOW, day_or=True)
        best: float | None = None
        while True:
            candidate: dt.datetime
            candidate = matches.get_next(dt.datetime)
            if candidate > wall + _WINDOW and best is not None:
                return best
            # Only instants whose wall time is the match: a time that does not
            # exist (clocks sprang forward) has none here; this path never meets one.
            instants = {t for t in (candidate.replace(tzinfo=zone, fold=fold).timestamp()
                                    for fold in (0, 1))
                        if _at(t, zone).replace(tzinfo=None) == candidate}
            if len(instants) == 2 and self._hour_restricted:
                instants = {min(instants)}  # a fixed-hour job runs in the first pass only
            for instant in instants:
                if instant > after and (best is None or instant < best):
                    best = instant


_WINDOW = dt.timedelta(hours=3)  # wider than any daylight-saving shift


def _at(timestamp: float, zone: dt.tzinfo) -> dt.datetime:
    """The instant ``timestamp`` in ``zone``, with the right offset in a repeated hour.

    Built with ``fromutc`` because ``datetime.fromtimestamp`` under freezegun
    reads a repeated hour's second instant as its first.
    """
    return zone.fromutc(_EPOCH.replace(tzinfo=zone) + dt.timedelta(seconds=timestamp))


_EPOCH = dt.datetime(1970, 1, 1)


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
    croniter = _croniter()
    if croniter.is_valid(expr):
        _check_it_fires(expr)
        return
    # Name the culprit: test each field alone, with every other field '*'.
    for index, value in enumerate(fields):
        probe = ["*"] * len(fields)
        probe[index] = value
        if not croniter.is_valid(" ".join(probe)):
            raise ValueError(
                f"invalid crontab {expr!r}: the {_FIELDS[index]} field {value!r} is not valid")
    raise ValueError(f"invalid crontab {expr!r}: the fields do not make a valid schedule")


def _check_it_fires(expr: str) -> None:
    # "0 0 30 2 *" is well formed but no date ever matches it; say so now,
    # not in the consumer's scheduler.
    try:
        _croniter()(expr, dt.datetime(2026, 1, 1), day_or=True).get_next(dt.datetime)
    except Exception as exc:  # croniter's CroniterBadDateError, after searching years
        raise ValueError(
            f"invalid crontab {expr!r}: it never fires, no date matches its day and month "
            "fields") from exc


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
