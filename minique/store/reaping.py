"""Taking back running jobs whose consumer is gone: one policy, run by every engine.

An attempt that never started (as far as the store knows) goes back to the
queue with its count untouched; one that started has lost an attempt: queued
again while attempts remain (at least one more run after a crash), failed
with ``WorkerLost`` once they are spent. Each engine supplies its own
statements (``LOST``, ``REQUEUE_LOST``, ``HISTORY_LOST``, ``FAIL_LOST``),
run on its connection inside its write transaction.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Protocol

from .records import Reaped


class _Executes(Protocol):
    def execute(self, query: Any, params: Any = ...) -> Any: ...


def reap(conn: _Executes, sql: ModuleType, cond: str, params: tuple[object, ...],
         now: float, why: str) -> list[Reaped]:
    """Take back the running jobs that match ``cond``; ``why`` says why, in their error."""
    reaped = []
    for job_id, name, owner, attempt, started, again in conn.execute(
            sql.LOST.format(cond=cond), params).fetchall():
        ours = (job_id, owner, attempt)
        if not started:
            message = f"attempt {attempt} was claimed but its start not recorded: {why}"
            conn.execute(sql.REQUEUE_LOST, (message, *ours))
        elif again:
            message = f"attempt {attempt} was lost: {why}"
            conn.execute(sql.HISTORY_LOST, (now, message, *ours))
            conn.execute(sql.REQUEUE_LOST, (message, *ours))
        else:
            message = f"attempt {attempt} was lost ({why}) and no attempts remain"
            conn.execute(sql.HISTORY_LOST, (now, message, *ours))
            conn.execute(sql.FAIL_LOST, (now, message, *ours))
        reaped.append(Reaped(int(job_id), str(name), str(owner), int(attempt),
                             "queued" if again or not started else "failed", bool(started)))
    return reaped
