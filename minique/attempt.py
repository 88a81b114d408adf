"""Running one attempt of a call and deciding how it ended: the one way, for every mode.

The consumer's thread workers, its one-worker mode, its process workers and
immediate mode (``Minique(..., immediate=True)``) all run an attempt through
``execute``: decode the arguments, enter the hooks, call the function,
classify the outcome (done, retry, failed), encode the result. No second copy
can drift from it.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import Retry, SerializationError, TaskTimeout
from .hooks import Attempt
from .store import ClaimedJob, Outcome
from .task import TaskOptions

if TYPE_CHECKING:
    from .app import Minique

log = logging.getLogger("minique")


@dataclass(slots=True)
class Ran:
    """An attempt's outcome to store, and the line to log once it is stored."""

    outcome: Outcome
    level: int
    message: str
    duration: float


class WorkerClosed(Exception):  # noqa: N818 - not an error: a shutdown
    """The consumer closed the worker process during this attempt (after the grace period).

    The attempt is neither finished nor failed: the consumer puts the job back.
    """


def _fmt_seconds(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"


def _failed(job: ClaimedJob, owner: str, error_type: str, message: str, tb: str = "",
            duration: float = 0.0) -> Ran:
    outcome = Outcome(job.id, owner, job.attempt, "failed", time.time(), error_type=error_type,
                      error_message=message, traceback=tb)
    return Ran(outcome, logging.ERROR,
               f"{job.name}[{job.id}] failed in {_fmt_seconds(duration)}: {error_type}: {message}",
               duration)


def execute(mq: Minique, job: ClaimedJob, owner: str) -> Ran:
    """Run one attempt of ``job`` in this thread; never raises."""
    now = time.time()
    if job.expires is not None and job.expires <= now:
        outcome = Outcome(job.id, owner, job.attempt, "expired", now, error_type="Expired",
                          error_message="the call was not started before it expired")
        return Ran(outcome, logging.INFO, f"{job.name}[{job.id}] expired, not run", 0.0)
    if job.problem is not None:
        return _failed(job, owner, "CorruptJob", (
            f"the stored call cannot run: {job.problem}; it was written around minique's "
            "checks (by hand, or by a buggy tool): enqueue it again through the task"))
    task = mq.tasks.get(job.name)
    if task is None:
        known = ", ".join(sorted(mq.tasks)) or "none"
        return _failed(job, owner, "UnknownTask", (
            f"this consumer has no task named {job.name!r} (it knows: {known}); run the "
            "consumer on the module that defines it, or check the task's name="))
    try:
        args, kwargs = mq.decode_call(job.payload)
    except ValueError as exc:
        return _failed(job, owner, "PayloadError", (
            f"the stored arguments cannot be decoded ({exc}); the row is corrupt or was "
            "written with another serializer"))
    attempt = Attempt(str(job.id), task, job.attempt, job.max_attempts, job.queue)
    started_at = time.time()
    start = time.perf_counter()
    swallowed = None
    try:
        if mq.task_hooks:
            value, swallowed = _run_hooked(mq, attempt, task.fn, args, kwargs)
        else:
            value = task.fn(*args, **kwargs)
    except BaseException as exc:  # a task's SystemExit must not end the worker
        duration = time.perf_counter() - start
        return after_error(job, owner, task.options, exc, traceback.format_exc(), duration)
    duration = time.perf_counter() - start
    if swallowed is not None:  # a hook suppressed the error; the attempt still failed
        return after_error(job, owner, task.options, swallowed[0], swallowed[1], duration)
    try:
        stored = mq.serializer.dumps(value)
    except SerializationError as exc:
        return _failed(job, owner, "SerializationError",
                       f"the task's return value cannot be stored: {exc}", duration=duration)
    outcome = Outcome(job.id, owner, job.attempt, "done", time.time(), result=stored,
                      started_at=started_at)
    return Ran(outcome, logging.INFO,
               f"{job.name}[{job.id}] done in {_fmt_seconds(duration)}", duration)


def _run_hooked(mq: Minique, attempt: Attempt, fn: Callable[..., Any], args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> tuple[Any, tuple[BaseException, str] | None]:
    """Run ``fn`` inside the around_task hooks; also return an error that a hook suppressed."""
    raised: tuple[BaseException, str] | None = None
    value = None
    with mq.run_hooks(attempt):
        try:
            value = fn(*args, **kwargs)
        except BaseException as exc:
            raised = (exc, traceback.format_exc())
            raise
    return value, raised


def internal_error(job: ClaimedJob, owner: str, exc: BaseException) -> Ran:
    """A failed outcome for an attempt that minique itself could not carry out."""
    return _failed(job, owner, "InternalError",
                   f"minique failed while running the task: {type(exc).__name__}: {exc}",
                   traceback.format_exc())


def timed_out(job: ClaimedJob, owner: str, options: TaskOptions, timeout: float) -> Ran:
    """The outcome of an attempt that ran past its timeout: retried if retries remain."""
    error = TaskTimeout(f"the attempt ran longer than its timeout of {timeout:g} s")
    return after_error(job, owner, options, error, "", timeout)


def after_error(job: ClaimedJob, owner: str, options: TaskOptions, exc: BaseException,
                tb: str, duration: float) -> Ran:
    """The outcome of an attempt that raised ``exc``: a retry if allowed, else failed."""
    error_type = type(exc).__name__
    message = str(exc)
    retryable = options.retries_on(exc)
    if not retryable or job.attempt >= job.max_attempts:
        ran = _failed(job, owner, error_type, message, tb, duration)
        if retryable and job.max_attempts > 1:
            ran.message += f" (after {job.attempt} attempts)"
        return ran
    wait = exc.delay if isinstance(exc, Retry) and exc.delay is not None \
        else options.retry_wait(job.attempt)
    now = time.time()
    outcome = Outcome(job.id, owner, job.attempt, "scheduled" if wait > 0 else "queued", now,
                      error_type=error_type, error_message=message, traceback=tb,
                      eta=now + wait)
    return Ran(outcome, logging.WARNING, (
        f"{job.name}[{job.id}] failed in {_fmt_seconds(duration)}: {error_type}: {message}; "
        f"retry {job.attempt} of {job.max_attempts - 1} in {_fmt_seconds(wait)}"), duration)
