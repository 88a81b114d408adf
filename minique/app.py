"""``Minique``: the queue's options, its task registry, enqueueing and result lookup."""

from __future__ import annotations

import datetime as dt
import inspect
import logging
import os
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar, overload

from . import options as check
from .attempt import execute
from .clock import real_monotonic
from .crontab import Crontab, resolve_zone
from .errors import (
    ConfigurationError,
    DuplicateJobId,
    MiniqueError,
    OptionError,
    SerializationError,
)
from .events import Events, Handler
from .hooks import Attempt, TaskHook
from .ids import new_id, new_ids
from .operations import Operations
from .result import Result
from .serializers import explain, get_serializer
from .store import (
    ClaimedJob,
    NewJob,
    Outcome,
    Synchronous,
    is_url,
    open_store,
)
from .task import Expires, Task, TaskOptions, argument_name, required_parameters

if TYPE_CHECKING:
    from .consumer import Consumer

P = ParamSpec("P")
R = TypeVar("R")

_TASK_OPTIONS = frozenset({
    "name", "queue", "priority", "retries", "retry_delay", "retry_backoff", "retry_max_delay",
    "retry_jitter", "retry_on", "timeout", "expires",
})


# Producers delete results past result_ttl (see Minique._sweep): a batch at
# most this often, and sooner while batches come back full.
SWEEP_EVERY = 60.0
SWEEP_AGAIN = 1.0
SWEEP_BATCH = 1000

log = logging.getLogger("minique")

_queues: weakref.WeakSet[Minique] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # The wakers are consumers of the parent process: the child has none, and
    # calling one could block on a lock held by a thread that did not fork.
    for mq in list(_queues):
        mq._local_wakers = []
        # Read from the instance itself: a queue configured later (Flask,
        # Django) raises ConfigurationError for an attribute it lacks yet,
        # which would stop this hook before the queues after it.
        store = vars(mq).get("store")
        if store is not None:
            store.notifier.after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Minique(Operations):
    """A durable task queue in one SQLite file.

    ``path`` is the database file (created with its tables on first use);
    many processes may open it at once. See the docs for every option.
    Raises ``ConfigurationError`` at once if the file's folder is missing or
    the file is read-only.
    """

    #: The class of the task objects ``@mq.task`` returns; integrations may extend it.
    task_class: type[Task[Any, Any]] = Task

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        immediate: bool = False,
        serializer: Literal["json", "pickle"] = "json",
        result_ttl: float | None = 7 * 24 * 3600,
        tz: str | None = None,
        synchronous: Synchronous = "normal",
        lease: float = 60.0,
        busy_timeout: float = 30.0,
    ) -> None:
        self._declare()
        self.configure(path, immediate=immediate, serializer=serializer, result_ttl=result_ttl,
                       tz=tz, synchronous=synchronous, lease=lease, busy_timeout=busy_timeout)

    def _declare(self) -> None:
        """Set up what the application declares: tasks and hooks (no database needed)."""
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.task_hooks: list[TaskHook] = []
        self.start_hooks: list[Callable[[Consumer], None]] = []
        self.stop_hooks: list[Callable[[Consumer], None]] = []
        self._local_wakers: list[Callable[[], None]] = []
        self._next_sweep = 0.0  # real_monotonic() of the next sweep of old results
        #: The handlers of ``@mq.on(...)``.
        self.events = Events(self)
        _queues.add(self)

    def configure(
        self,
        path: str | os.PathLike[str],
        *,
        immediate: bool = False,
        serializer: Literal["json", "pickle"] = "json",
        result_ttl: float | None = 7 * 24 * 3600,
        tz: str | None = None,
        synchronous: Synchronous = "normal",
        lease: float = 60.0,
        busy_timeout: float = 30.0,
    ) -> None:
        """Point the queue at a database with these options (what the constructor does).

        Tasks and hooks declared so far are kept. Everything is checked before
        anything changes: on ``ConfigurationError`` the queue is as it was.
        Integrations whose configuration arrives late (Flask, Django) use it.

        Options may be strings, as configuration read from the environment is:
        ``immediate`` takes true/false, yes/no, on/off or 1/0 (any case);
        ``lease``, ``result_ttl`` and ``busy_timeout`` take numbers such as
        ``"30"`` or ``"0.5"`` (and ``result_ttl`` ``"none"``). Anything else
        raises ``ConfigurationError`` naming the option. An in-memory database
        (``":memory:"``) is refused: each process and thread opens the file.
        """
        if self._local_wakers:
            raise ConfigurationError(
                "cannot change the database of a queue while a consumer of it runs in this "
                "process; stop the consumer first")
        immediate = check.flag(immediate, "immediate")
        if isinstance(synchronous, str):
            synchronous = synchronous.strip().lower()  # type: ignore[assignment]
        lease = check.real(
            lease, "lease", "give the seconds a running task stays reserved to its consumer "
            "without a heartbeat, a finite number > 0 (the default is 60)", low_open=True,
            text=True)
        if isinstance(result_ttl, str) and result_ttl.strip().lower() == "none":
            result_ttl = None
        if result_ttl is not None:
            result_ttl = check.real(
                result_ttl, "result_ttl", "give the seconds finished tasks and their results "
                "are kept, a finite number >= 0, or None to keep them for ever", text=True)
        busy_timeout = check.real(
            busy_timeout, "busy_timeout", "give the seconds a write may wait for the "
            "database's lock, a finite number >= 0 (0 fails at once)", text=True)
        if tz is not None and not isinstance(tz, str):
            raise OptionError(f"tz={tz!r}: give an IANA zone name such as 'Europe/Berlin' or "
                              "'UTC', or None for the machine's zone")
        try:
            zone = resolve_zone(tz)
            chosen = get_serializer(serializer)
        except ValueError as exc:
            raise OptionError(str(exc)) from None
        store = open_store(path, synchronous=synchronous, busy_timeout=busy_timeout)
        #: The SQLite file, or None for a server store (see ``store.location``).
        self.path = None if is_url(path) else Path(path)
        self.immediate = immediate
        self.serializer = chosen
        self.result_ttl = result_ttl
        self.tz = tz
        self.zone = zone
        self.synchronous = synchronous
        self.lease = lease
        self.store = store

    def __repr__(self) -> str:
        return f"<Minique {self.store.location}>"

    # -- declaring tasks ---------------------------------------------------------

    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self, *, name: str | None = None, queue: str = "default", priority: int = 0,
        retries: int = 0, retry_delay: float = 1.0, retry_backoff: float = 2.0,
        retry_max_delay: float = 3600.0, retry_jitter: float = 0.1,
        retry_on: Sequence[type[BaseException]] | type[BaseException] = (Exception,),
        timeout: float | None = None, expires: Expires | None = None,
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(self, fn: Any = None, /, **options: Any) -> Any:  # type: ignore[misc]
        """Turn a function into a task: bare ``@mq.task`` or ``@mq.task(retries=3, ...)``.

        Raises ``ValueError`` for an invalid option or a name already taken by
        another function.
        """
        def register(func: Callable[P, R]) -> Task[P, R]:
            return self._register(func, options)

        if fn is not None:
            return register(fn)
        return register

    def periodic_task(
        self, schedule: Crontab, **options: Any,
    ) -> Callable[[Callable[[], R]], Task[[], R]]:
        """Run a function of no arguments at each time ``schedule`` matches.

        Any task option may follow. The consumer's scheduler enqueues it once
        per matching time however many consumers share the database; times
        missed while no consumer ran are skipped.
        """
        if not isinstance(schedule, Crontab):
            raise ValueError("periodic_task needs a crontab(...) schedule as first argument")

        def register(func: Callable[[], R]) -> Task[[], R]:
            return self._register(func, options, periodic=schedule)

        return register

    def _register(self, fn: Callable[P, R], options: dict[str, Any],
                  periodic: Crontab | None = None) -> Task[P, R]:
        unknown = set(options) - _TASK_OPTIONS
        if unknown:
            raise ValueError(
                f"unknown task option(s) {', '.join(sorted(unknown))} for "
                f"{fn.__module__}.{fn.__qualname__}; the options are: "
                f"{', '.join(sorted(_TASK_OPTIONS))}")
        if not callable(fn):
            raise TypeError(f"@task needs a function, not {type(fn).__name__} {fn!r}")
        if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            raise TypeError(
                f"{_qualified(fn)} is an async def function, which minique cannot run yet: "
                "declare a plain def function (call asyncio.run(...) inside it if you need to)")
        if periodic is not None:
            required = required_parameters(fn)
            if required:
                raise ValueError(
                    f"{_qualified(fn)} takes argument(s) {', '.join(required)}, but a periodic "
                    "task is called with none; give them defaults, or declare it with @mq.task "
                    "and call it with its arguments")
        name = options.pop("name", None)
        if name is None:
            name = f"{fn.__module__}.{fn.__qualname__}"
        retry_on = options.pop("retry_on", (Exception,))
        if isinstance(retry_on, type):
            retry_on = (retry_on,)
        elif isinstance(retry_on, list | set | frozenset):
            retry_on = tuple(retry_on)
        task_options = TaskOptions(name=name, retry_on=retry_on, **options)
        existing = self.tasks.get(name)
        if existing is not None and _qualified(existing.fn) != _qualified(fn):
            raise ValueError(
                f"two functions want the task name {name!r}: {_qualified(existing.fn)} and "
                f"{_qualified(fn)}; give one of them name=..."
            )
        task: Task[P, R] = self.task_class(self, fn, task_options, periodic)
        self.tasks[name] = task
        return task

    # -- hooks -------------------------------------------------------------------

    def on(self, name: str) -> Callable[[Handler], Handler]:
        """``@mq.on("failed")``: call the function with an ``Event`` each time that happens.

        The events: ``"enqueued"`` (in the producer), ``"started"``,
        ``"done"``, ``"retrying"``, ``"failed"``, ``"expired"``, ``"lost"``,
        ``"cancelled"`` (in the consumer) and ``"revoked"`` (where
        ``Result.revoke`` is called). A handler runs after the change is
        committed; one that raises is logged and changes nothing. In
        immediate mode all of them run in the caller. Raises ``ValueError``
        for a name that is not an event.
        """
        return self.events.on(name)

    def around_task(self, hook: TaskHook) -> TaskHook:
        """Register ``hook(attempt)`` returning a context manager that wraps each task run.

        Hooks are entered in registration order and exited in reverse; an
        exception from the task passes through them. Used by the Flask and
        Django integrations; usable as a decorator.
        """
        self.task_hooks.append(hook)
        return hook

    def on_consumer_start(self, fn: Callable[[Consumer], None]) -> Callable[[Consumer], None]:
        """Call ``fn(consumer)`` when a consumer of this queue starts."""
        self.start_hooks.append(fn)
        return fn

    def on_consumer_stop(self, fn: Callable[[Consumer], None]) -> Callable[[Consumer], None]:
        """Call ``fn(consumer)`` when a consumer of this queue has stopped."""
        self.stop_hooks.append(fn)
        return fn

    @contextmanager
    def run_hooks(self, attempt: Attempt) -> Iterator[None]:
        """Enter every ``around_task`` hook for one run of a task."""
        with ExitStack() as stack:
            for hook in self.task_hooks:
                stack.enter_context(hook(attempt))
            yield

    # -- enqueueing --------------------------------------------------------------

    def _new_job(
        self, task: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any], now: float,
        eta: float, priority: int | None, job_id: int | None = None,
    ) -> NewJob:
        options = task.options
        # encode_call's body, inlined: a method call costs more than the check.
        try:
            task.check_call(*args, **kwargs)
            payload = self.serializer.dumps([list(args), kwargs])
        except TypeError as exc:  # SerializationError is one too
            raise _refused(task, args, kwargs, exc) from exc
        return NewJob(
            id=new_id() if job_id is None else job_id,
            name=options.name,
            queue=options.queue,
            priority=options.priority if priority is None else priority,
            payload=payload,
            eta=eta,
            expires=None if options.expires is None else options.expires_at(now),
            max_attempts=options.retries + 1,
            created_at=now,
        )

    def encode_call(
        self, task: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any],
    ) -> str | bytes:
        """A call of ``task`` as it would be stored, checked as ``enqueue`` checks it.

        Raises ``TypeError`` if the arguments do not fit the function, and
        ``SerializationError`` (a ``TypeError`` too) if they cannot be stored,
        saying which argument and why. For integrations that enqueue later
        (Django's ``on_commit``) but must refuse a bad call at once.
        """
        try:
            task.check_call(*args, **kwargs)
            return self.serializer.dumps([list(args), kwargs])
        except TypeError as exc:
            raise _refused(task, args, kwargs, exc) from exc

    def enqueue(
        self, task: Task[Any, R], args: tuple[Any, ...], kwargs: dict[str, Any], *,
        delay: float | dt.timedelta | None = None, eta: dt.datetime | None = None,
        priority: int | None = None,
    ) -> Result[R]:
        """Store one call of ``task`` (what calling a task does); durable when it returns.

        Raises ``TypeError`` if the arguments do not fit the function,
        ``SerializationError`` if they cannot be stored, and ``OptionError``
        (a ``ValueError``) for a bad ``delay``, ``eta`` or ``priority``;
        nothing is stored then.
        """
        now = time.time()
        when = now
        if delay is not None:
            if eta is not None:
                raise OptionError("give delay or eta, not both")
            when = now + check.delay_seconds(delay, now)
        elif eta is not None:
            when = check.epoch(eta, "eta")
        if priority is not None:
            priority = check.priority(priority)
        job = self._new_job(task, args, kwargs, now, when, priority)
        if self.immediate:
            self._run_immediately(task, job, args, kwargs)
        else:
            self._store_new([job], now)
        if real_monotonic() >= self._next_sweep:
            self._sweep()
        if self.events.wanted("enqueued") and not self.immediate:
            self.events.emit_now("enqueued", [job.id])
        return Result(self, str(job.id), job.name)

    def enqueue_many(
        self, task: Task[Any, R], calls: Iterable[tuple[tuple[Any, ...], dict[str, Any]]],
    ) -> list[Result[R]]:
        """Store many calls of ``task`` in one transaction (what ``task.map`` does)."""
        now = time.time()
        calls = list(calls)
        ids = new_ids(len(calls))
        try:
            jobs = [self._new_job(task, args, kwargs, now, now, None, job_id)
                    for job_id, (args, kwargs) in zip(ids, calls, strict=True)]
        except TypeError as exc:
            _name_the_item(exc, calls, lambda a, k: self._new_job(task, a, k, now, now, None, 0))
            raise
        if self.immediate:
            for job, (args, kwargs) in zip(jobs, calls, strict=True):
                self._run_immediately(task, job, args, kwargs)
        elif jobs:
            self._store_new(jobs, now)
        if real_monotonic() >= self._next_sweep:
            self._sweep()
        if self.events.wanted("enqueued") and not self.immediate:
            self.events.emit_now("enqueued", [job.id for job in jobs])
        return [Result(self, str(job.id), job.name) for job in jobs]

    def _sweep(self) -> None:
        """Delete a batch of calls that finished longer than ``result_ttl`` ago.

        Producers do it (consumers do it too): results past their TTL go
        even while no consumer runs. At most a batch a minute per process,
        a few milliseconds; a batch a second while a full batch is found.
        """
        self._next_sweep = real_monotonic() + SWEEP_EVERY
        if self.result_ttl is None:
            return
        try:
            deleted = self.store.purge_finished(time.time() - self.result_ttl,
                                                batch=SWEEP_BATCH, batches=1)
        except MiniqueError as exc:
            # The call was stored: a failed sweep must not make it look failed.
            log.warning("could not delete results older than result_ttl (%s); trying again "
                        "in %g s", exc, SWEEP_EVERY)
            return
        if deleted == SWEEP_BATCH:
            self._next_sweep = real_monotonic() + SWEEP_AGAIN

    def _store_new(self, jobs: list[NewJob], now: float) -> None:
        for _ in range(5):
            try:
                self.store.enqueue(jobs, now)
                break
            except DuplicateJobId:
                # Another process took one of these ids in the same millisecond.
                for job, job_id in zip(jobs, new_ids(len(jobs), collided=True), strict=True):
                    job.id = job_id
        else:
            self.store.enqueue(jobs, now)  # raises the error if it happens yet again
        self.wake_consumers()

    def wake_consumers(self) -> None:
        """Tell consumers, in this process and others, that work was committed."""
        for wake in self._local_wakers:
            wake()
        self.store.notifier.notify()

    def add_waker(self, wake: Callable[[], None]) -> None:
        """Call ``wake()`` whenever work is committed through this object (for consumers).

        A consumer running in this process adds its wake-up here when it
        starts, so that an enqueue through the same ``Minique`` wakes it
        directly; consumers in other processes are nudged through the
        database's folder instead. ``wake`` must return at once and not raise:
        it runs in the enqueueing thread. While a waker is added, ``configure``
        refuses to change the database.
        """
        # A new list rather than append: wake_consumers may be iterating the old one.
        self._local_wakers = [*self._local_wakers, wake]

    def remove_waker(self, wake: Callable[[], None]) -> None:
        """Stop calling ``wake`` (a consumer that stopped); nothing happens if it was not added."""
        self._local_wakers = [w for w in self._local_wakers if w != wake]

    def _run_immediately(
        self, task: Task[Any, Any], job: NewJob, args: tuple[Any, ...], kwargs: dict[str, Any],
    ) -> None:
        # Immediate mode runs the attempt as a consumer does (attempt.execute:
        # decoding the stored arguments, hooks, classifying the outcome) and
        # stores the same row, so Result behaves the same in tests. Retries
        # happen at once: waiting out a backoff in the caller helps no test.
        earlier: list[Outcome] = []
        for number in range(1, job.max_attempts + 1):
            claimed = ClaimedJob(job.id, job.name, job.queue, job.priority, job.payload, number,
                                 job.max_attempts, job.expires, job.eta)
            started_at = time.time()
            outcome = execute(self, claimed, "immediate").outcome
            if outcome.started_at is None:  # for its history
                outcome.started_at = started_at
            if outcome.state not in ("queued", "scheduled"):
                break
            earlier.append(outcome)
        self.store.record_finished(job, outcome, earlier)
        # As a producer and a consumer would: this caller is both.
        self.events.emit_now("enqueued", [job.id])
        self.events.outcomes_now([*earlier, outcome])

    def fire_periodic(
        self, task: Task[[], Any], slot: float, next_fire: float, now: float, *,
        enqueue: bool = True,
    ) -> tuple[float, Result[Any] | None]:
        """Move ``task``'s stored crontab slot from ``slot`` to ``next_fire``, enqueueing one call.

        For the schedulers of consumers: the move and the enqueue are one
        transaction, a compare-and-set on the stored slot, so of all the
        schedulers that fire one slot exactly one enqueues. Returns the slot
        now stored and the ``Result`` of the call if this scheduler enqueued
        it, else ``None`` (another one did, or ``enqueue`` is false: a slot
        missed while no consumer ran moves on without a call).
        """
        job = self._new_job(task, (), {}, now, now, None) if enqueue else None
        stored = self.store.fire_periodic(task.name, slot, next_fire, job, now)
        # The store answers with the slot now stored, which is the same
        # next_fire whether this call or another scheduler's moved it; only
        # the winner's call is in the database (ids are unique).
        if job is None or stored != next_fire or self.store.read(job.id) is None:
            return stored, None
        return stored, Result(self, str(job.id), job.name)

    # -- reading -----------------------------------------------------------------

    def local_time(self, timestamp: float) -> str:
        """An epoch time as ISO 8601 in the queue's zone (the one its crontabs are read in)."""
        return dt.datetime.fromtimestamp(timestamp, self.zone).isoformat(timespec="seconds")

    @property
    def periodic_tasks(self) -> dict[str, Task[Any, Any]]:
        """The registered tasks that run on a crontab, by name."""
        return {name: task for name, task in self.tasks.items() if task.periodic is not None}

    def result(self, id: str) -> Result[Any]:
        """A handle on the call with this id, from any process."""
        return Result(self, id)

    def decode_value(self, stored: str | bytes | None) -> Any:
        """Turn a stored result back into the value the task returned."""
        return None if stored is None else self.serializer.loads(stored)

    def decode_call(self, payload: str | bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Turn a stored payload back into ``(args, kwargs)``; ``ValueError`` if it cannot."""
        try:
            args, kwargs = self.serializer.loads(payload)
        except Exception as exc:  # json, base64, pickle: each fails its own way
            raise ValueError(f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
            raise ValueError("the payload is not an (args, kwargs) pair")
        return tuple(args), kwargs

    # -- consuming ---------------------------------------------------------------

    def consumer(
        self, workers: int = 4, queues: Sequence[str] | None = None, periodic: bool = True,
        **options: Any,
    ) -> Consumer:
        """A consumer of this queue: ``start()``/``stop()``, ``run()``, or ``with``."""
        from .consumer import Consumer

        return Consumer(self, workers=workers, queues=queues, periodic=periodic, **options)


def _refused(task: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any],
             exc: TypeError) -> TypeError:
    """The error for a call of ``task`` whose arguments ``exc`` refused, saying which and why."""
    if not isinstance(exc, SerializationError):
        return TypeError(f"cannot enqueue {task.name}: {exc}; nothing was stored")
    name, rest = argument_name(task.fn, exc.path)
    if not name:
        # The call as a whole failed (nested too deeply): find the argument
        # that fails on its own, if one does.
        for index, value in [*enumerate(args), *kwargs.items()]:
            try:
                task.mq.serializer.dumps(value)
            except SerializationError as part:
                name, _ = argument_name(task.fn, (0 if type(index) is int else 1, index))
                exc, rest = part, part.path
                break
        else:
            return SerializationError(f"{task.name}: the call's list of arguments "
                                      f"{explain('', exc).lstrip()}", problem=exc.problem,
                                      advice=exc.advice)
    located = SerializationError("", path=rest, problem=exc.problem, advice=exc.advice)
    located.args = (f"{task.name}: {explain(f'argument {name}', located)}",)
    return located


def _name_the_item(exc: TypeError, calls: list[tuple[tuple[Any, ...], dict[str, Any]]],
                   try_one: Callable[[tuple[Any, ...], dict[str, Any]], object]) -> None:
    # Off the fast path: find the first item of a map() that fails, and say which.
    for index, (args, kwargs) in enumerate(calls):
        try:
            try_one(args, kwargs)
        except TypeError:
            exc.args = (f"item {index} of the map: {exc}",)
            return


def _qualified(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"

