"""Plain records that cross the store's interface."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

State = Literal["queued", "scheduled", "running", "done", "failed", "revoked", "expired"]
STATES: tuple[State, ...] = (
    "queued", "scheduled", "running", "done", "failed", "revoked", "expired",
)
FINISHED: frozenset[str] = frozenset({"done", "failed", "revoked", "expired"})


@dataclass(slots=True)
class NewJob:
    """A call to store: what ``enqueue`` writes."""

    id: int
    name: str
    queue: str
    priority: int
    payload: str | bytes
    eta: float
    expires: float | None
    max_attempts: int
    created_at: float


@dataclass(slots=True)
class ClaimedJob:
    """A job a consumer now owns for one attempt."""

    id: int
    name: str
    queue: str
    priority: int
    payload: str | bytes
    attempt: int
    max_attempts: int
    expires: float | None
    eta: float
    # The claim counted this attempt (it was meant to start at once); a call
    # claimed ahead of free workers counts it when its start is recorded.
    counted: bool = True
    # A consumer died holding this call before its start was recorded: record
    # the start before running it, so a call that kills consumers runs out of
    # attempts.
    suspect: bool = False
    # Why the row cannot run as stored (a corrupt field), or None.
    problem: str | None = None


@dataclass(slots=True)
class Outcome:
    """How one attempt ended, written by ``finish``.

    ``state`` is the job's next state: ``done``, ``failed`` or ``expired`` end
    it; ``queued`` or ``scheduled`` (with ``eta``) put it back for a retry.
    """

    id: int
    owner: str
    attempt: int
    state: State
    finished_at: float
    result: str | bytes | None = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    eta: float | None = None
    started_at: float | None = None


@dataclass(slots=True)
class JobRecord:
    """What a reader sees of a job (``Result`` is built on it)."""

    id: int
    name: str
    queue: str
    state: State
    eta: float
    attempts: int
    max_attempts: int
    result: str | bytes | None
    error_type: str | None
    error_message: str | None
    traceback: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    expires: float | None


@dataclass(slots=True)
class Reaped:
    """A running job taken back from a consumer that is gone."""

    id: int
    name: str
    owner: str
    attempt: int
    state: State  # queued again, or failed when its attempts are spent
    started: bool  # its start was recorded (the lost attempt counts)


@dataclass(slots=True)
class ConsumerInfo:
    """The identity a consumer registers, so others can tell whether it still lives."""

    id: str
    hostname: str
    boot_id: str
    pid_ns: str
    pid: int
    pid_start: str
    queues: str
    workers: int
    started_at: float
    heartbeat_at: float


#: How one attempt ended, as ``history`` records it: ``retry`` when it failed
#: and the call was tried again, ``failed`` when the call failed for good,
#: ``lost`` when its consumer died under it.
AttemptOutcome = Literal["done", "failed", "retry", "timeout", "lost", "cancelled"]
ATTEMPT_OUTCOMES: tuple[AttemptOutcome, ...] = (
    "done", "failed", "retry", "timeout", "lost", "cancelled",
)


@dataclass(slots=True)
class AttemptRecord:
    """One attempt of a job, as its history keeps it."""

    number: int  # 1 for the first; numbers go on after a retry by hand
    started_at: float | None
    finished_at: float
    outcome: AttemptOutcome
    error_type: str | None
    error_message: str | None
    traceback: str | None
    consumer: str | None


@dataclass(slots=True)
class JobDetail:
    """Everything stored about a job, for people who operate the queue (``mq.job``).

    ``state`` is the status a reader sees (a call past its expiry reads
    ``expired``). ``attempts`` and ``max_attempts`` count every attempt since
    the call was first stored, including those before a retry by hand;
    ``history`` is oldest first.
    """

    id: int
    name: str
    queue: str
    priority: int
    state: State
    payload: str | bytes
    eta: float
    expires: float | None
    attempts: int
    max_attempts: int
    owner: str | None  # the consumer running it, while it runs
    created_at: float
    started_at: float | None
    finished_at: float | None
    result: str | bytes | None
    error_type: str | None
    error_message: str | None
    traceback: str | None
    history: list[AttemptRecord]


def attempt_outcome(outcome: Outcome) -> AttemptOutcome:
    """What the history says of the attempt that ended with ``outcome``."""
    if outcome.error_type == "TaskTimeout":
        return "timeout"
    if outcome.error_type == "Cancelled":
        return "cancelled"
    if outcome.state in ("done", "failed"):
        return outcome.state
    return "retry"  # queued or scheduled again
