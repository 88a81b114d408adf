"""``Job``: everything stored about one call, for the people who operate the queue."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import TaskError
from .store.records import AttemptOutcome, AttemptRecord, JobDetail, State

if TYPE_CHECKING:
    from .app import Minique


@dataclass(frozen=True, slots=True)
class JobAttempt:
    """One attempt of a call, as ``Job.history`` lists them.

    ``number`` is 1 for the first attempt and goes on counting after a retry
    by hand (``mq.retry``). ``outcome`` is ``"done"``; ``"failed"`` when the
    call failed for good; ``"retry"`` when it failed and was tried again;
    ``"timeout"`` when it ran past the task's timeout (retried or not);
    ``"lost"`` when its consumer died under it; ``"cancelled"``. ``error`` is
    the attempt's ``TaskError``, ``None`` for one that was done; ``consumer``
    the id of the consumer that ran it (``"immediate"`` in immediate mode).
    """

    number: int
    started_at: dt.datetime | None
    finished_at: dt.datetime
    outcome: AttemptOutcome
    error: TaskError | None
    consumer: str | None


@dataclass(frozen=True, slots=True)
class Job:
    """One call stored in the queue, read at one moment (``mq.job(id)``, ``mq.jobs()``).

    Times are aware UTC datetimes. ``status`` is what ``Result.status`` says.
    ``attempts`` counts the attempts started so far and ``max_attempts`` how
    many it may have, both counting the attempts before a retry by hand.
    ``error`` is why it failed, was revoked or expired, else ``None`` (each
    attempt's error is in ``history``, oldest first). ``consumer`` is the id
    of the consumer running it, while it runs. ``result`` is the return value
    once done. ``unreadable`` says why ``args``, ``kwargs`` or ``result``
    could not be decoded here (left empty then): a pickled call read by a
    queue configured for JSON, or a corrupt row. ``key`` and ``progress``
    are ``None`` until minique has keys and progress reports.
    """

    id: str
    task: str
    queue: str
    priority: int
    status: State
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    enqueued_at: dt.datetime
    eta: dt.datetime
    expires: dt.datetime | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    attempts: int
    max_attempts: int
    error: TaskError | None
    consumer: str | None
    result: Any
    history: list[JobAttempt] = field(default_factory=list)
    key: str | None = None
    progress: Any = None
    unreadable: str | None = None


def _utc(timestamp: float | None) -> dt.datetime | None:
    return None if timestamp is None else dt.datetime.fromtimestamp(timestamp, dt.UTC)


def _error(task: str, job_id: str, error_type: str | None, message: str | None,
           traceback: str | None) -> TaskError | None:
    if error_type is None and message is None:
        return None
    return TaskError(task, error_type or "Error", message or "", traceback or "",
                     task_id=job_id)


def _attempt(task: str, job_id: str, record: AttemptRecord) -> JobAttempt:
    finished = _utc(record.finished_at)
    assert finished is not None
    error = None if record.outcome == "done" else _error(
        task, job_id, record.error_type, record.error_message, record.traceback)
    return JobAttempt(record.number, _utc(record.started_at), finished, record.outcome, error,
                      record.consumer)


def job_from(mq: Minique, record: JobDetail) -> Job:
    """The ``Job`` of a stored row, its arguments and result decoded by ``mq``'s serializer."""
    job_id = str(record.id)
    problems = []
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}
    try:
        args, kwargs = mq.decode_call(record.payload)
    except ValueError as exc:
        problems.append(f"its arguments cannot be decoded ({exc})")
    result = None
    if record.state == "done" and record.result is not None:
        try:
            result = mq.decode_value(record.result)
        except Exception as exc:  # json, base64, pickle: each fails its own way
            problems.append(f"its result cannot be decoded ({type(exc).__name__}: {exc})")
    error = None
    if record.state in ("failed", "revoked", "expired"):
        error = _error(record.name, job_id, record.error_type or record.state.capitalize(),
                       record.error_message or f"the task was {record.state}",
                       record.traceback)
    enqueued = _utc(record.created_at)
    eta = _utc(record.eta)
    assert enqueued is not None and eta is not None
    return Job(
        id=job_id, task=record.name, queue=record.queue, priority=record.priority,
        status=record.state, args=args, kwargs=kwargs, enqueued_at=enqueued, eta=eta,
        expires=_utc(record.expires), started_at=_utc(record.started_at),
        finished_at=_utc(record.finished_at), attempts=record.attempts,
        max_attempts=record.max_attempts, error=error, consumer=record.owner, result=result,
        history=[_attempt(record.name, job_id, r) for r in record.history],
        unreadable="; ".join(problems) or None,
    )
