"""``crontab``: when a periodic task fires, on top of croniter."""

from __future__ import annotations

import datetime as dt

from croniter import croniter

_FIELDS = ("minute", "hour", "day", "month", "day_of_week", "second")
_ALIASES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


class Crontab:
    """A parsed cron expression; ``next(after)`` gives the next fire time after a datetime."""

    __slots__ = ("expr",)

    def __init__(self, expr: str) -> None:
        self.expr = expr

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
            local = after.astimezone()  # naive means local time, as cron reads it
            return self.next(local).replace(tzinfo=None)
        found: dt.datetime = croniter(self.expr, after, day_or=True).get_next(dt.datetime)
        return found


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
