"""The task object that ``@mq.task`` returns, and its options."""

from __future__ import annotations

import datetime as dt
import inspect
import random
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from . import options as check
from .errors import OptionError
from .result import Result

if TYPE_CHECKING:
    from .app import Minique
    from .crontab import Crontab

P = ParamSpec("P")
R = TypeVar("R")

Expires = float | int | dt.timedelta | dt.datetime


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """The options of a task; see ``Minique.task``."""

    name: str
    queue: str = "default"
    priority: int = 0
    retries: int = 0
    retry_delay: float = 1.0
    retry_backoff: float = 2.0
    retry_max_delay: float = 3600.0
    retry_jitter: float = 0.1
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    timeout: float | None = None
    expires: Expires | None = None

    def __post_init__(self) -> None:
        try:
            self._check()
        except OptionError as exc:
            raise OptionError(f"task {self.name!r}: {exc}") from None

    def _check(self) -> None:
        for name in ("name", "queue"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise OptionError(f"{name}={value!r}: give a non-empty string")
        # Ints go to 64-bit columns as they are: store Python ints, checked.
        object.__setattr__(self, "priority", check.priority(self.priority))
        object.__setattr__(self, "retries", check.integer(
            self.retries, "retries", "give an int >= 0, the times a failed call is tried "
            "again", low=0, high=check.INT64_MAX - 1))
        check.real(self.retry_delay, "retry_delay",
                   "give the seconds before the first retry, a finite number >= 0")
        check.real(self.retry_backoff, "retry_backoff",
                   "give the factor by which each further retry waits longer, a finite number "
                   ">= 1 (1 waits retry_delay each time)", low=1.0)
        check.real(self.retry_max_delay, "retry_max_delay",
                   "give the longest wait between tries in seconds, a finite number >= 0")
        check.real(self.retry_jitter, "retry_jitter",
                   "give a fraction between 0 and 1 (0 for exact waits)", high=1.0)
        if not isinstance(self.retry_on, tuple) or not all(
                isinstance(t, type) and issubclass(t, BaseException) for t in self.retry_on):
            raise OptionError(f"retry_on={self.retry_on!r}: give an exception class or a tuple "
                              "of them, e.g. retry_on=(ConnectionError, TimeoutError)")
        if self.timeout is not None:
            check.real(self.timeout, "timeout",
                       "give the seconds one attempt may run, a finite number > 0 (at most "
                       f"{threading.TIMEOUT_MAX:.0f}), or None for no limit", low_open=True,
                       high=threading.TIMEOUT_MAX)
        expires = self.expires
        if isinstance(expires, dt.datetime):
            check.epoch(expires, "expires")
        elif expires is not None:
            seconds = (expires.total_seconds() if isinstance(expires, dt.timedelta)
                       else check.real(expires, "expires", _EXPIRES, low_open=True))
            if not 0 < seconds < check.LAST_SECOND:
                raise OptionError(f"expires={expires!r}: {_EXPIRES}")

    def retries_on(self, error: BaseException) -> bool:
        """Whether ``error`` calls for another attempt (if any remain).

        ``Retry`` and a timeout always do; anything else when it is one of
        ``retry_on``.
        """
        from .errors import Retry, TaskTimeout

        return isinstance(error, (Retry, TaskTimeout, *self.retry_on))

    def retry_wait(self, retry_number: int) -> float:
        """Seconds to wait before retry ``retry_number`` (1 for the first retry)."""
        try:
            wait = min(self.retry_delay * self.retry_backoff ** (retry_number - 1),
                       self.retry_max_delay)
        except OverflowError:  # the backoff passed the largest float long before
            wait = self.retry_max_delay
        if self.retry_jitter:
            wait *= random.uniform(1 - self.retry_jitter, 1 + self.retry_jitter)
        return wait

    def expires_at(self, enqueued_at: float) -> float | None:
        """The epoch second after which a call enqueued at ``enqueued_at`` is not run."""
        return to_deadline(self.expires, enqueued_at)


_EXPIRES = ("give the seconds (a finite number > 0) or the timedelta after which a call not "
            "started is not run, a datetime, or None")


def to_deadline(when: Expires | None, base: float) -> float | None:
    """``when`` as epoch seconds: seconds or a timedelta after ``base``, or a datetime.

    A naive datetime is local time.
    """
    if when is None:
        return None
    if isinstance(when, dt.datetime):
        return when.timestamp()
    if isinstance(when, dt.timedelta):
        return base + when.total_seconds()
    return base + float(when)


class Task(Generic[P, R]):
    """A function registered with a queue: call it to enqueue, ``call_local`` to run it here."""

    def __init__(self, mq: Minique, fn: Callable[P, R], options: TaskOptions,
                 periodic: Crontab | None = None) -> None:
        self.mq = mq
        self.fn = fn
        self.options = options
        self.periodic = periodic  # fired by the consumer's scheduler when set
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    # Built at the first call, not at @mq.task: a consumer imports every task and
    # enqueues few of them, and building one takes about 35 us. Once built it
    # sits in the instance's __dict__, so a call finds it as before.
    @cached_property
    def check_call(self) -> Callable[..., None]:
        """Takes the arguments ``fn`` takes and does nothing.

        Calling it raises ``TypeError`` where a call of ``fn`` could not bind,
        before anything is stored.
        """
        return _call_checker(self.fn)

    @property
    def name(self) -> str:
        """The registered name, stored with each call; the consumer finds the function by it."""
        return self.options.name

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.options.queue}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Result[R]:
        """Enqueue a call now. Raises ``SerializationError`` if the arguments cannot be stored."""
        return self.mq.enqueue(self, args, kwargs)

    def schedule(
        self, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None, *,
        delay: float | dt.timedelta | None = None, eta: dt.datetime | None = None,
        priority: int | None = None,
    ) -> Result[R]:
        """Enqueue a call to run after ``delay`` (seconds or timedelta) or at ``eta``.

        A naive ``eta`` is local time. ``priority`` overrides the task's own.
        Raises ``OptionError`` (a ``ValueError``) for a bad ``delay``, ``eta``
        or ``priority``, and ``TypeError`` for arguments the function does not
        take; nothing is stored then.
        """
        if isinstance(args, str | bytes) or not isinstance(args, Iterable):
            raise TypeError(f"{self.name}.schedule: args={args!r} is not a sequence of "
                            "positional arguments; give a tuple or a list, e.g. args=(1, 2)")
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise TypeError(f"{self.name}.schedule: kwargs={kwargs!r} is not a dict of keyword "
                            "arguments, e.g. kwargs={'to': 'ann@example.com'}")
        return self.mq.enqueue(self, tuple(args), dict(kwargs) if kwargs else {}, delay=delay,
                               eta=eta, priority=priority)

    def map(self, iterable: Iterable[Any]) -> list[Result[R]]:
        """Enqueue one call per item, all in one transaction.

        An item that is a tuple is the call's arguments; anything else is its
        single argument.
        """
        calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
            (item if type(item) is tuple else (item,), {}) for item in iterable]
        return self.mq.enqueue_many(self, calls)

    def call_local(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function here and now, without the queue."""
        return self.fn(*args, **kwargs)


def _accept_anything(*args: Any, **kwargs: Any) -> None:
    """The check of a callable whose signature cannot be read: every call may be right."""


def _call_checker(fn: Callable[..., Any]) -> Callable[..., None]:
    """A function with ``fn``'s parameters and an empty body.

    Calling it makes Python itself bind the arguments: about 0.1 us, where
    ``inspect.Signature.bind`` takes 2 us, on a path that runs on every
    call of a task. The signature is ``fn``'s own, not that of a function it
    wraps: a decorator may take other arguments than the function it wraps.
    """
    try:
        signature = inspect.signature(fn, follow_wrapped=False)
    except (TypeError, ValueError):  # a builtin or an object without a readable signature
        return _accept_anything
    empty = inspect.Parameter.empty
    parameters = [p.replace(annotation=empty, default=None if p.default is not empty else empty)
                  for p in signature.parameters.values()]
    text = str(signature.replace(parameters=parameters, return_annotation=empty))
    name = getattr(fn, "__name__", "")
    if not name.isidentifier():
        name = "task"
    namespace: dict[str, Any] = {}
    exec(f"def {name}{text}: pass", namespace)  # noqa: S102 - names and None only
    checker: Callable[..., None] = namespace[name]
    return checker


def required_parameters(fn: Callable[..., Any]) -> list[str]:
    """The parameters of ``fn`` that a call must give (none if its signature cannot be read)."""
    try:
        signature = inspect.signature(fn, follow_wrapped=False)
    except (TypeError, ValueError):
        return []
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [p.name for p in signature.parameters.values()
            if p.default is inspect.Parameter.empty and p.kind not in variadic]


def argument_name(
    fn: Callable[..., Any], path: tuple[object, ...],
) -> tuple[str, tuple[object, ...]]:
    """Name the argument that ``path`` leads to in a stored call ``[args, kwargs]``.

    Returns the argument's name (``x``, ``args[2]`` for a ``*args`` item) and
    the rest of the path inside it. Used to say where an argument that cannot
    be stored sits.
    """
    if len(path) < 2:
        return "", path
    where, key, rest = path[0], path[1], path[2:]
    if where == 1:
        return str(key), rest
    try:
        parameters = list(inspect.signature(fn, follow_wrapped=False).parameters.values())
    except (TypeError, ValueError):
        return f"args[{key}]", rest
    positional = [p.name for p in parameters if p.kind in (
        inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    assert isinstance(key, int)
    if key < len(positional):
        return positional[key], rest
    star = next((p.name for p in parameters if p.kind is inspect.Parameter.VAR_POSITIONAL),
                "args")
    return f"{star}[{key - len(positional)}]", rest
