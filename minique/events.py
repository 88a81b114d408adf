"""Events: ``@mq.on("failed")`` and the rest, for error trackers, metrics and audit logs.

A handler gets an ``Event`` once the change it tells of is committed.
``"enqueued"`` and ``"revoked"`` run in the process that made the change, in
its thread, before the call that made it returns. The others run in the
consumer, in a thread of their own (``minique-events``), one event at a time
and in order, so that a slow handler (an error tracker's network call) never
holds up the consumer's work; the consumer waits for them, a few seconds at
most, when it stops. A handler that raises is logged, and changes nothing.

While no handler is registered for an event, the consumer pays one
dictionary lookup per batch of outcomes for it: nothing is read or queued.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .errors import TaskError

if TYPE_CHECKING:
    from .app import Minique
    from .attempt import Ran
    from .consumer import Consumer
    from .job import Job
    from .store import ClaimedJob, Outcome, Reaped

log = logging.getLogger("minique")

EventName = Literal["enqueued", "started", "done", "retrying", "failed", "expired", "revoked",
                    "lost", "cancelled"]
EVENTS: tuple[EventName, ...] = ("enqueued", "started", "done", "retrying", "failed", "expired",
                                 "revoked", "lost", "cancelled")
# The events that happen where a call is stored or revoked; the others in the consumer.
_IN_CALLER = frozenset({"enqueued", "revoked"})
# How long a stopping consumer waits for the handlers of the events it queued.
DRAIN_AT_STOP = 5.0

Handler = Callable[["Event"], object]


@dataclass(frozen=True, slots=True)
class Event:
    """What happened (``name``), to which call (``job``, read just after the change), and why.

    ``error`` is the attempt's ``TaskError`` for ``failed``, ``retrying``,
    ``expired``, ``lost`` and ``cancelled``; ``None`` otherwise. ``job`` is
    read from the database once the change is committed: by the time a
    consumer's handler runs, the call may have moved on (a ``retrying`` call
    running again).
    """

    name: EventName
    job: Job
    error: TaskError | None = None


def outcome_event(outcome: Outcome) -> EventName:
    """The event of an attempt's stored outcome."""
    if outcome.error_type == "Cancelled":
        return "cancelled"
    state = outcome.state
    if state == "done" or state == "failed" or state == "expired":
        return state
    return "retrying"


class Events:
    """A queue's event handlers, and the thread that runs the consumer's events."""

    def __init__(self, mq: Minique) -> None:
        self._mq = mq
        self._handlers: dict[str, list[Handler]] = {}
        self._queue: queue.SimpleQueue[tuple[EventName, int, TaskError | None] | None] = \
            queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pending = 0
        self._idle = threading.Condition(self._lock)

    def on(self, name: str) -> Callable[[Handler], Handler]:
        """``@mq.on("failed")``: call the decorated function with each such ``Event``.

        Raises ``ValueError`` for a name that is not an event.
        """
        if name not in EVENTS:
            raise ValueError(f"{name!r} is not an event; the events are {', '.join(EVENTS)}")

        def register(handler: Handler) -> Handler:
            if not callable(handler):
                raise TypeError(f"@mq.on({name!r}) needs a function, not {handler!r}")
            # A new list: the events thread may be iterating the old one.
            self._handlers[name] = [*self._handlers.get(name, []), handler]
            if name not in _IN_CALLER and self._stop_hook not in self._mq.stop_hooks:
                self._mq.on_consumer_stop(self._stop_hook)
            return handler

        return register

    def wanted(self, name: str) -> bool:
        """True if a handler waits for this event."""
        return name in self._handlers

    # -- in the caller --------------------------------------------------------------------

    def emit_now(self, name: EventName, job_ids: Sequence[int | str]) -> None:
        """Run the handlers of ``name`` for these calls here, now (the change is committed)."""
        handlers = self._handlers.get(name)
        if not handlers:
            return
        for job_id in job_ids:
            self._run(handlers, name, int(job_id), None)

    def outcomes_now(self, outcomes: Sequence[Outcome]) -> None:
        """Run the handlers of these stored outcomes here, now (immediate mode)."""
        if not self._handlers:
            return
        for outcome in outcomes:
            name = outcome_event(outcome)
            handlers = self._handlers.get(name)
            if handlers:
                self._run(handlers, name, outcome.id, _outcome_error(outcome))

    # -- in the consumer ------------------------------------------------------------------

    def started(self, job: ClaimedJob) -> None:
        """A worker starts an attempt of ``job``."""
        if "started" in self._handlers:
            self._put("started", job.id, None)

    def finished(self, ran: Sequence[Ran], written: Sequence[bool]) -> None:
        """Outcomes were written (``written[i]``: the i-th still owned its call)."""
        if not self._handlers:
            return
        for r, ok in zip(ran, written, strict=True):
            name = outcome_event(r.outcome)
            if ok and name in self._handlers:
                self._put(name, r.outcome.id, _outcome_error(r.outcome))

    def lost(self, reaped: Sequence[Reaped], why: str) -> None:
        """Running calls were taken back (``why``: its lease expired, its consumer is gone).

        Each that had started lost an attempt (``lost``); one that had no
        attempt left also failed for good (``failed`` after it).
        """
        if "lost" not in self._handlers and "failed" not in self._handlers:
            return
        for job in reaped:
            if not job.started:  # one never started lost no attempt
                continue
            error = TaskError(job.name, "WorkerLost", f"attempt {job.attempt} was lost: {why}",
                              task_id=str(job.id))
            if "lost" in self._handlers:
                self._put("lost", job.id, error)
            if job.state == "failed" and "failed" in self._handlers:
                self._put("failed", job.id, error)

    def drain(self, timeout: float = DRAIN_AT_STOP) -> bool:
        """Wait until the events queued so far have run; False if ``timeout`` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def _stop_hook(self, consumer: Consumer) -> None:
        if not self.drain():
            log.warning("the event handlers did not finish within %g s of the stop; the "
                        "events still queued are dropped", DRAIN_AT_STOP)

    def _put(self, name: EventName, job_id: int, error: TaskError | None) -> None:
        with self._lock:
            self._pending += 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="minique-events",
                                                daemon=True)
                self._thread.start()
        self._queue.put((name, job_id, error))

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            name, job_id, error = item
            try:
                self._run(self._handlers.get(name, []), name, job_id, error)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def _run(self, handlers: Sequence[Handler], name: EventName, job_id: int,
             error: TaskError | None) -> None:
        try:
            job = self._mq.job(str(job_id))
        except LookupError:
            return  # purged meanwhile: nothing left to tell of
        except Exception:
            log.exception("could not read call %s for its %r event handlers", job_id, name)
            return
        if error is not None and not error.task_name:
            error = TaskError(job.task, error.error_type, error.message, error.traceback,
                              task_id=job.id)
        event = Event(name, job, error if error is not None else _error_of(name, job))
        for handler in handlers:
            try:
                handler(event)
            except Exception:
                log.exception("the %r event handler %s raised (for call %s); it changes "
                              "nothing", name, _name_of(handler), job.id)


def _outcome_error(outcome: Outcome) -> TaskError | None:
    # The task's name is filled in from the call once it is read.
    if outcome.error_type is None:
        return None
    return TaskError("", outcome.error_type, outcome.error_message or "",
                     outcome.traceback or "", task_id=str(outcome.id))


def _error_of(name: str, job: Job) -> TaskError | None:
    return job.error if name == "revoked" else None


def _name_of(handler: Any) -> str:
    return f"{getattr(handler, '__module__', '?')}.{getattr(handler, '__qualname__', handler)}"
