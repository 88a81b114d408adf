"""The handle a task call returns: its status, its value, its revocation."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .clock import real_monotonic
from .errors import ResultTimeout, TaskError
from .store import FINISHED, JobRecord

if TYPE_CHECKING:
    from .app import Minique

R = TypeVar("R")

# Result.get polls the row; it starts fast so short tasks answer quickly and
# backs off so a long wait costs almost nothing.
_FIRST_POLL = 0.0005
_MAX_POLL = 0.05


class Result(Generic[R]):
    """A call stored in the queue. Cheap to build: ``mq.result(id)`` works in any process."""

    __slots__ = ("_mq", "id", "name")

    def __init__(self, mq: Minique, id: str, name: str = "") -> None:
        self._mq = mq
        self.id = id
        self.name = name

    def __repr__(self) -> str:
        return f"<Result {self.name or 'task'} {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Result) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def _key(self) -> int:
        try:
            key = int(self.id)
        except ValueError:
            key = -1
        if not 0 <= key < 2**63:
            raise LookupError(f"{self.id!r} is not a minique task id")
        return key

    def _record(self) -> JobRecord:
        record = self._mq.store.read(self._key())
        if record is None:
            raise LookupError(
                f"no task with id {self.id} in {self._mq.path}: it was never stored there, or "
                "it finished longer ago than the queue's result_ttl and was deleted"
            )
        if not self.name:
            self.name = record.name
        return record

    @property
    def status(self) -> str:
        """Where the call is now: ``queued``, ``scheduled``, ``running``, ``done``, ``failed``,
        ``revoked`` or ``expired``.

        Raises ``LookupError`` if the database holds no such task.
        """
        return self._record().state

    def get(self, blocking: bool = True, timeout: float | None = None) -> R | None:
        """The task's return value once it is done.

        Raises ``TaskError`` if it failed for good, was revoked or expired;
        ``ResultTimeout`` if ``timeout`` seconds pass first. With
        ``blocking=False``, returns ``None`` at once while the task has not
        finished.
        """
        deadline = None if timeout is None else real_monotonic() + timeout
        pause = _FIRST_POLL
        while True:
            record = self._record()
            if record.state in FINISHED:
                return self._outcome(record)
            if not blocking:
                return None
            if deadline is not None:
                left = deadline - real_monotonic()
                if left <= 0:
                    raise ResultTimeout(
                        f"{record.name} ({self.id}) was still {record.state} after "
                        f"{timeout:g} s; is a consumer running for queue {record.queue!r}?"
                    )
                time.sleep(min(pause, left))
            else:
                time.sleep(pause)
            pause = min(pause * 2, _MAX_POLL)

    def _outcome(self, record: JobRecord) -> R:
        if record.state == "done":
            value: R = self._mq.decode_value(record.result)
            return value
        raise TaskError(
            record.name,
            record.error_type or record.state.capitalize(),
            record.error_message or f"the task was {record.state}",
            record.traceback or "",
            task_id=self.id,
        )

    def revoke(self) -> bool:
        """Stop a call that has not started. True if it will not run; False if it ran or runs.

        Raises ``LookupError`` if the database holds no such task, as ``status`` does.
        """
        if self._mq.revoke_stored(self._key()):
            return True
        self._record()  # raises LookupError for an id the database does not hold
        return False

    @property
    def record(self) -> JobRecord:
        """The stored row behind this result (attempts, timestamps, error), read now."""
        return self._record()

    def __getstate__(self) -> Any:
        raise TypeError("a Result is tied to its Minique; pass result.id and use mq.result(id)")
