"""The task object that ``@mq.task`` returns, and its options."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

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
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ValueError(f"task {self.name!r}: {what}")

        need(bool(self.name) and isinstance(self.name, str), "name must be a non-empty string")
        need(bool(self.queue) and isinstance(self.queue, str), "queue must be a non-empty string")
        need(isinstance(self.priority, int) and -(2**63) <= self.priority < 2**63,
             "priority must be an int that fits in 64 bits")
        need(isinstance(self.retries, int) and self.retries >= 0, "retries must be an int >= 0")
        need(self.retry_delay >= 0, "retry_delay must be >= 0 seconds")
        need(self.retry_backoff >= 1, "retry_backoff must be >= 1")
        need(self.retry_max_delay >= 0, "retry_max_delay must be >= 0 seconds")
        need(0 <= self.retry_jitter <= 1, "retry_jitter must be between 0 and 1")
        need(all(isinstance(t, type) and issubclass(t, BaseException) for t in self.retry_on),
             "retry_on must be a tuple of exception classes")
        need(self.timeout is None or self.timeout > 0, "timeout must be None or > 0 seconds")
        need(self.expires is None or isinstance(self.expires, int | float | dt.timedelta
                                                  | dt.datetime),
             "expires must be seconds, a timedelta or a datetime")

    def retries_on(self, error: BaseException) -> bool:
        """Whether ``error`` calls for another attempt (if any remain).

        ``Retry`` and a timeout always do; anything else when it is one of
        ``retry_on``.
        """
        from .errors import Retry, TaskTimeout

        return isinstance(error, (Retry, TaskTimeout, *self.retry_on))

    def retry_wait(self, retry_number: int) -> float:
        """Seconds to wait before retry ``retry_number`` (1 for the first retry)."""
        wait = min(self.retry_delay * self.retry_backoff ** (retry_number - 1),
                   self.retry_max_delay)
        if self.retry_jitter:
            wait *= random.uniform(1 - self.retry_jitter, 1 + self.retry_jitter)
        return wait

    def expires_at(self, enqueued_at: float) -> float | None:
        """The epoch second after which a call enqueued at ``enqueued_at`` is not run."""
        return to_deadline(self.expires, enqueued_at)


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
        """
        if delay is not None and eta is not None:
            raise ValueError("give delay or eta, not both")
        return self.mq.enqueue(self, tuple(args), kwargs or {}, delay=delay, eta=eta,
                               priority=priority)

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
