"""Which jobs an operator means: statuses, queues, tasks and an age, as SQL for every engine.

The admin queries (``jobs``, ``purge``, ``retry_failed``) filter on what a
reader sees, not on the stored state alone: a queued or scheduled call past
its expiry reads ``expired`` before a consumer writes it down. Each status
becomes the condition that says so, written in SQL that SQLite and
PostgreSQL both run; a store passes its own placeholder (``?`` or ``%s``).

The conditions keep the indexes usable: each status is its own part, with
the state as a literal (SQLite uses the ``jobs_failed`` partial index only
for a query that repeats its term word for word); a store runs the parts one
by one, newest first, and merges them (``parts``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .records import STATES, AttemptRecord, JobDetail, State

# Stored in these states, a call past its expiry reads "expired".
_WAITING = ("queued", "scheduled")
# States that few rows are in, each with a partial index (jobs_running,
# jobs_scheduled): their parts look the rows up through it. Left to itself,
# SQLite scans the whole table backwards by id rather than sort a few rows.
_FEW = frozenset({"running", "scheduled"})


def _few(where: str) -> str:
    return f"id IN (SELECT id FROM jobs WHERE {where})"


@dataclass(frozen=True, slots=True)
class Selection:
    """Jobs in any of ``states`` (None: any), of these queues and task names (None: any).

    ``before``: only jobs that finished before this epoch time, or, if not
    finished, that were enqueued before it.
    """

    states: tuple[State, ...] | None = None
    queues: tuple[str, ...] | None = None
    names: tuple[str, ...] | None = None
    before: float | None = None

    def __post_init__(self) -> None:
        for state in self.states or ():
            if state not in STATES:
                raise ValueError(f"{state!r} is not a status")


@dataclass(frozen=True, slots=True)
class Part:
    """One SQL condition on the jobs table, with its parameters in order."""

    where: str
    params: tuple[object, ...]


def parts(selection: Selection, now: float, mark: str = "?") -> list[Part]:
    """Conditions whose union is ``selection``, each cheap to run on its own.

    Rows past their expiry count as ``expired`` at ``now``. ``mark`` is the
    engine's placeholder. A store runs each part (newest first, up to its
    limit) and merges the rows; no row matches two parts.
    """
    common: list[str] = []
    common_params: list[object] = []
    for column, values in (("queue", selection.queues), ("name", selection.names)):
        if values is not None:
            common.append(f"{column} IN ({', '.join(mark for _ in values)})")
            common_params.extend(values)
    if selection.before is not None:
        # Finished calls by when they finished, the others by when they were enqueued.
        common.append(f"(finished_at < {mark} OR (finished_at IS NULL AND created_at < {mark}))")
        common_params.extend((selection.before, selection.before))
    states = selection.states
    found: list[tuple[str, list[object]]] = []
    if states is None:
        found.append(("1 = 1", []))
    else:
        wanted = list(dict.fromkeys(states))
        for state in wanted:
            # The state as a literal: SQLite uses a partial index only for a
            # query that repeats its term word for word.
            where = f"state = '{state}'"
            params: list[object] = []
            if state in _WAITING:
                # Not yet past its expiry: a call past it reads "expired".
                where += f" AND (expires IS NULL OR expires > {mark})"
                params.append(now)
            found.append((_few(where) if state in _FEW else where, params))
        if "expired" in wanted:
            for waiting in _WAITING:
                found.append((_few(f"state = '{waiting}' AND expires <= {mark}"), [now]))
    return [Part(" AND ".join([f"({cond})", *common]), (*values, *common_params))
            for cond, values in found]


def status_sql(mark: str = "?") -> tuple[str, int]:
    """A SQL expression of the status a reader sees, and how many ``now`` parameters it takes."""
    return (f"CASE WHEN state IN ('queued', 'scheduled') AND expires <= {mark}"
            " THEN 'expired' ELSE state END", 1)


def as_tuple(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """A filter as the API takes it (a string, a list of strings, or None) as a tuple."""
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    return tuple(value)


# -- rows to records, the same for every engine ------------------------------------------

#: The columns ``detail`` reads, in its order.
DETAIL_COLUMNS = (
    "id, name, queue, priority, state, payload, eta, expires, attempts, max_attempts, owner,"
    " created_at, started_at, finished_at, result, error_type, error_message, traceback,"
    " earlier_attempts"
)
#: The columns of a history row that ``detail`` reads, after ``job_id``.
HISTORY_COLUMNS = (
    "job_id, number, started_at, finished_at, outcome, error_type, error_message, traceback,"
    " consumer"
)
#: What ``revoke_all`` writes as the error message of the calls it revokes;
#: ``restore_all`` puts back exactly those (one call revoked on its own
#: stays revoked).
REVOKED_ALL = "every pending call of the task was revoked (revoke_all)"


def detail(row: Sequence[Any], history: Sequence[Sequence[Any]], now: float) -> JobDetail:
    """A ``JobDetail`` from a row of ``DETAIL_COLUMNS`` and its history rows, oldest first.

    The record of a done call's last attempt is its row (no history row is
    written for it, see models.History); it is added here.
    """
    (id_, name, queue, priority, state, payload, eta, expires, attempts, max_attempts, owner,
     created_at, started_at, finished_at, result, error_type, error_message, traceback,
     earlier) = row
    earlier = int(earlier or 0)
    records = [AttemptRecord(int(h[1]), _float(h[2]), float(h[3]), h[4], *h[5:9])
               for h in history]
    if state == "done" and not any(r.outcome == "done" for r in records):
        records.append(AttemptRecord(earlier + int(attempts), _float(started_at),
                                     float(finished_at or 0.0), "done", None, None, None,
                                     owner))
    if state in _WAITING and expires is not None and expires <= now:
        state = "expired"
        error_type = "Expired"
        error_message = "the call was not started before it expired"
    return JobDetail(
        id=int(id_), name=name, queue=queue, priority=priority, state=state, payload=payload,
        eta=float(eta), expires=_float(expires), attempts=earlier + int(attempts),
        max_attempts=earlier + int(max_attempts),
        owner=owner if state == "running" else None, created_at=float(created_at),
        started_at=_float(started_at), finished_at=_float(finished_at), result=result,
        error_type=error_type, error_message=error_message, traceback=traceback,
        history=records,
    )


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
