"""The tables, as peewee models: one row per call in ``jobs``, plus consumers and periodic slots.

The models are bound to a never-connected database that only renders SQL; each
store executes queries on its own connection (several queues, several files,
one process).
"""

from __future__ import annotations

import peewee as pw

from . import schema
from .schema import SCHEMA_VERSION

__all__ = ["INDEXES", "MODELS", "SCHEMA_VERSION", "ConsumerRecord", "History", "Job",
           "PausedQueue", "PeriodicSlot", "create_statements"]

_sql_only = pw.SqliteDatabase(None)


class BaseModel(pw.Model):
    class Meta:
        database = _sql_only
        legacy_table_names = False


class Job(BaseModel):
    """One call of a task, moved through its states by short transactions."""

    # The rowid itself, chosen by the producer and time-ordered (minique/ids.py):
    # no separate id index to update on every insert, and FIFO order for free.
    id = pw.IntegerField(primary_key=True)
    name = pw.TextField()
    queue = pw.TextField()
    priority = pw.IntegerField()
    # queued | scheduled | running | done | failed | revoked | expired
    state = pw.TextField()
    payload = pw.BlobField()
    eta = pw.FloatField()  # epoch seconds from which it may run
    expires = pw.FloatField(null=True)
    attempts = pw.IntegerField(default=0)  # attempts started so far
    max_attempts = pw.IntegerField()  # retries + 1, kept for the reaper
    owner = pw.TextField(null=True)  # consumer id while running
    lease_until = pw.FloatField(null=True)  # epoch seconds, for consumers on other hosts
    # The same lease on the holder's monotonic clock, valid on the kernel boot
    # named: a step of the wall clock (NTP, a resumed VM) cannot expire it.
    lease_boot = pw.TextField(null=True)
    lease_mono = pw.FloatField(null=True)
    # A running row's attempt counts (attempts += 1) only once its start is
    # recorded: calls claimed ahead of free workers may never start.
    started = pw.IntegerField(default=0, constraints=[pw.SQL("DEFAULT 0")])
    # Its consumer died before the start was recorded: it may have started
    # (and killed the consumer); its next start is recorded before it runs.
    suspect = pw.IntegerField(default=0, constraints=[pw.SQL("DEFAULT 0")])
    # Attempts made before the latest retry by hand (mq.retry), which starts
    # ``attempts`` from 0 again with the task's retries; the history numbers
    # attempts from the first, so its numbers are earlier_attempts + attempt.
    earlier_attempts = pw.IntegerField(default=0, constraints=[pw.SQL("DEFAULT 0")])
    created_at = pw.FloatField()
    started_at = pw.FloatField(null=True)
    finished_at = pw.FloatField(null=True)
    result = pw.BlobField(null=True)
    error_type = pw.TextField(null=True)
    error_message = pw.TextField(null=True)
    traceback = pw.TextField(null=True)

    class Meta:
        table_name = "jobs"


class ConsumerRecord(BaseModel):
    """A live (or lately live) consumer process, so others can tell when it is gone."""

    id = pw.TextField(primary_key=True)
    hostname = pw.TextField()
    boot_id = pw.TextField()  # with pid_ns: the same kernel and PID namespace
    pid_ns = pw.TextField()
    pid = pw.IntegerField()
    pid_start = pw.TextField()  # process start time: PIDs are reused
    queues = pw.TextField()
    workers = pw.IntegerField()
    started_at = pw.FloatField()
    heartbeat_at = pw.FloatField()

    class Meta:
        table_name = "consumers"


class PeriodicSlot(BaseModel):
    """The next fire time of a periodic task: firing is a compare-and-set on it."""

    name = pw.TextField(primary_key=True)
    crontab = pw.TextField()
    next_fire = pw.FloatField()

    class Meta:
        table_name = "periodic"


class History(BaseModel):
    """One attempt of a job that did not end it done, in the transaction of its outcome.

    An attempt that ends a job ``done`` is always its last one (a done call
    is never retried), and the job's own row holds it: its ``started_at``,
    ``finished_at``, ``attempts`` and ``owner``. So a task that succeeds
    writes no history row, and the drain costs what it did. Readers add that
    last record from the job row (``JobDetail.history``).
    """

    job_id = pw.IntegerField()
    number = pw.IntegerField()  # earlier_attempts + the attempt's number
    started_at = pw.FloatField(null=True)
    finished_at = pw.FloatField()
    # done (only for an attempt that completed after it was taken back as
    # lost), failed, retry, timeout, lost, cancelled
    outcome = pw.TextField()
    error_type = pw.TextField(null=True)
    error_message = pw.TextField(null=True)
    traceback = pw.TextField(null=True)
    consumer = pw.TextField(null=True)

    class Meta:
        table_name = "history"
        primary_key = pw.CompositeKey("job_id", "number")


class PausedQueue(BaseModel):
    """A queue no consumer takes calls from until it is resumed (``mq.pause``)."""

    queue = pw.TextField(primary_key=True)
    paused_at = pw.FloatField()

    class Meta:
        table_name = "paused_queues"


MODELS: tuple[type[BaseModel], ...] = (Job, ConsumerRecord, PeriodicSlot, History, PausedQueue)

# Partial indexes that peewee's model indexes cannot spell (DESC inside a
# partial index); each serves exactly one hot query.
INDEXES = (
    # claim: the best ready row, priority first, then FIFO by readiness
    "CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (priority DESC, eta, id)"
    " WHERE state = 'queued'",
    # promote: the next delayed or retried task whose time has come
    "CREATE INDEX IF NOT EXISTS jobs_scheduled ON jobs (eta) WHERE state = 'scheduled'",
    # renew and reap: the few running rows
    "CREATE INDEX IF NOT EXISTS jobs_running ON jobs (lease_until) WHERE state = 'running'",
    # purge: finished rows past their TTL
    "CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at)"
    " WHERE finished_at IS NOT NULL",
    *schema.ADMIN_INDEXES,
)


def render_ddl(database: pw.Database) -> list[str]:
    """The statements ``database.create_tables`` would run for every model, without running them.

    Through peewee's public API: a subclass of each model is bound to
    ``database`` (an engine's database object, which renders that engine's
    types), and the statements are collected where peewee would execute
    them. The models themselves are left as they are, so another thread
    using them meanwhile is not disturbed.
    """
    statements: list[str] = []

    def collect(sql: str, params: object = None, *args: object, **kwargs: object) -> None:
        if params:
            raise AssertionError(f"DDL with parameters: {sql} {params}")
        statements.append(sql)

    database.execute_sql = collect  # type: ignore[method-assign]
    bound = [type(model.__name__, (model,), {
        "Meta": type("Meta", (), {"database": database,
                                  "table_name": model._meta.table_name}),
        "__module__": __name__,
    }) for model in MODELS]
    database.create_tables(bound, safe=True)
    return statements


def create_statements() -> list[str]:
    """The DDL of the current schema for SQLite, rendered by peewee from the models above.

    A change to the models also needs a step in ``schema._STEPS`` and a
    new ``SCHEMA_VERSION``.
    """
    return [*render_ddl(pw.SqliteDatabase(None)), *INDEXES]
