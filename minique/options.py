"""Checks of the options users pass, so that a bad value fails where it is given.

A value that slipped through would fail later and elsewhere: a string
priority stored in the database stops the consumer that claims it, a NaN
lease makes the housekeeper spin. Each check here raises ``OptionError`` (a
``ConfigurationError`` and a ``ValueError``) naming the option, the value and
what to give instead, and returns the value in the form the code uses.

The queue's own options may also be strings, because configuration often
comes from environment variables: see ``flag`` and ``real(text=True)``.
"""

from __future__ import annotations

import datetime as dt
import math
import numbers
import operator
from collections.abc import Mapping
from typing import Any

from .errors import OptionError

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# The last epoch second a datetime can show: an eta or expiry past it could
# not be displayed, and is a mistake (a delay in ms given as seconds...).
LAST_SECOND = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC).timestamp()

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
BOOLEAN_WORDS = "true/false, yes/no, on/off or 1/0"


def flag(value: object, name: str) -> bool:
    """``value`` as a bool: a bool, 0 or 1, or a word such as ``"false"`` or ``"Yes"``.

    Anything else is refused: ``bool("False")`` is true, and a setting read
    from the environment as ``"False"`` must not turn immediate mode on.
    """
    if value is True or value is False:
        return value
    if type(value) is int and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise OptionError(f"{name}={value!r} is not a boolean: give True or False (in a config "
                      f"file or an environment variable, {BOOLEAN_WORDS}, any case)")


def real(value: object, name: str, need: str, *, low: float = 0.0, low_open: bool = False,
         high: float = math.inf, text: bool = False) -> float:
    """``value`` as a finite float in ``[low, high]`` (``(low, high]`` with ``low_open``).

    ``need`` says what to give, for the error. Booleans are refused (``True``
    seconds is a mistake); with ``text``, so are strings other than numbers.
    """
    number: float | None = None
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
    elif text and isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not math.isfinite(number) or number < low or number > high or (
            low_open and number == low):
        raise OptionError(f"{name}={value!r}: {need}")
    return number


def integer(value: object, name: str, need: str, *, low: int = INT64_MIN,
            high: int = INT64_MAX) -> int:
    """``value`` as an int in ``[low, high]``; bools and floats are refused."""
    number: int | None = None
    if not isinstance(value, bool | float | str):
        try:
            number = operator.index(value)  # type: ignore[arg-type]
        except TypeError:
            number = None
    if number is None or not low <= number <= high:
        raise OptionError(f"{name}={value!r}: {need}")
    return number


def priority(value: object, name: str = "priority") -> int:
    """A task's or a call's priority: an int that fits the database's 64-bit column."""
    return integer(value, name, "give an int between -2**63 and 2**63 - 1 (higher runs "
                                "first; the default is 0)")


def delay_seconds(value: object, now: float) -> float:
    """A call's ``delay``: seconds (a finite number >= 0) or a timedelta, as seconds."""
    need = "give the seconds to wait, a finite number >= 0, or a datetime.timedelta >= 0"
    seconds = (value.total_seconds() if isinstance(value, dt.timedelta)
               else real(value, "delay", need))
    if seconds < 0:
        raise OptionError(f"delay={value!r}: {need}")
    if now + seconds > LAST_SECOND:
        raise OptionError(f"delay={value!r} is past the year 9999: give seconds (not "
                          "milliseconds) or a timedelta")
    return seconds


def epoch(value: object, name: str) -> float:
    """A datetime (``eta``, ``expires``) as epoch seconds; a naive one is local time."""
    if not isinstance(value, dt.datetime):
        raise OptionError(f"{name}={value!r}: give a datetime.datetime (a naive one is local "
                          "time), or use delay= for a number of seconds")
    try:
        return value.timestamp()
    except (OverflowError, ValueError, OSError) as exc:
        raise OptionError(f"{name}={value!r} cannot be turned into a time ({exc})") from None


def queue_names(value: object) -> tuple[str, ...] | None:
    """A consumer's ``queues``: None (all), one name, or a list of names, as a tuple."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        raise OptionError(
            f"queues={value!r}: queue weights are not supported yet; give a list of queue "
            f"names, e.g. queues={list(value)!r}")
    if isinstance(value, str):
        names: tuple[Any, ...] = (value,)  # a plain string names one queue
    else:
        try:
            names = tuple(value)  # type: ignore[arg-type]
        except TypeError:
            raise OptionError(
                f"queues={value!r}: give None (every queue), a queue name or a list of queue "
                "names, e.g. queues=['emails']") from None
        if not names:
            return None  # an empty list serves every queue, as None does
    for name in names:
        if not isinstance(name, str) or not name:
            raise OptionError(
                f"queues={value!r}: {name!r} is not a queue name; queue names are non-empty "
                "strings, e.g. queues=['emails']")
    return tuple(dict.fromkeys(names))
