"""The exceptions minique raises, and the one a task raises to ask for a retry."""

from __future__ import annotations


class MiniqueError(Exception):
    """Base class of minique's own errors."""


class ConfigurationError(MiniqueError):
    """The queue cannot be used as configured (bad path, read-only file, bad option)."""


class OptionError(ConfigurationError, ValueError):
    """An option or argument given to minique has a wrong type or value.

    Raised where the value is given (``Minique(...)``, ``@mq.task(...)``,
    ``schedule(...)``, ``mq.consumer(...)``), before anything is stored. The
    message names the option, the value and what to give. It is a
    ``ConfigurationError`` and a ``ValueError``, so either ``except`` catches it.
    """


class DatabaseError(MiniqueError):
    """The database could not be read or written; the message says why and what to do."""


class DuplicateJobId(DatabaseError):
    """An enqueue picked a job id that another process had just taken (rare; retried)."""


class SchemaVersionError(DatabaseError):
    """The database file was written by a newer minique than this one."""


class ConsumerFailed(MiniqueError):
    """A consumer's dispatcher hit errors it could not get past and stopped.

    ``Consumer.run()`` raises it after stopping, so that the process exits
    non-zero and its supervisor starts a fresh one.
    """


class SerializationError(MiniqueError, TypeError):
    """Arguments or a result that the queue's serializer cannot store.

    Raised at the call site; nothing was enqueued. The message says where the
    bad value sits (``send: argument x['a'][1] is a set; ...``); ``path`` holds
    the keys and indexes that lead to it from the value given to the
    serializer, ``problem`` what is wrong with it and ``advice`` what to do.
    """

    def __init__(self, message: str, *, path: tuple[object, ...] = (), problem: str = "",
                 advice: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.problem = problem
        self.advice = advice


class TaskError(MiniqueError):
    """A task failed for good, was revoked or expired; raised by ``Result.get``.

    ``error_type`` is the exception's class name (``"ValueError"``,
    ``"TaskTimeout"``, ``"Revoked"``, ``"Expired"``...), ``message`` its text and
    ``traceback`` the formatted traceback of the last attempt (``""`` if none).
    """

    def __init__(
        self, task_name: str, error_type: str, message: str, traceback: str = "",
        task_id: str = "",
    ) -> None:
        self.task_name = task_name
        self.error_type = error_type
        self.message = message
        self.traceback = traceback
        self.task_id = task_id
        super().__init__(f"{task_name} failed: {error_type}: {message}")

    def __reduce__(self) -> tuple[type[TaskError], tuple[str, str, str, str, str]]:
        return (type(self), (self.task_name, self.error_type, self.message,
                             self.traceback, self.task_id))


class ResultTimeout(MiniqueError, TimeoutError):
    """``Result.get(timeout=...)`` waited that long and the task had not finished."""


class Retry(Exception):  # noqa: N818 - the name is part of the public API
    """Raise inside a task to ask for another attempt.

    It uses one of the task's ``retries``; ``delay`` (seconds) overrides the
    backoff for this retry. When no retries remain the task fails with this
    error.
    """

    def __init__(self, delay: float | None = None, message: str = "retry requested") -> None:
        self.delay = delay
        super().__init__(message)


class TaskTimeout(MiniqueError):
    """An attempt ran longer than the task's ``timeout``."""
