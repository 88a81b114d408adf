"""Every statement the SQLite store runs, named after what it does, in one place.

The hot path (enqueue, claim, finish, renew) is hand-written for SQLite; the
operators' queries share their conditions with the PostgreSQL store through
``selection.py``. ``sqlite.py`` runs them, each in a short transaction.
"""

from __future__ import annotations

from .selection import DETAIL_COLUMNS, HISTORY_COLUMNS

ENQUEUE = (
    "INSERT INTO jobs (id, name, queue, priority, state, payload, eta, expires, attempts,"
    " max_attempts, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)"
)
# Immediate mode: the call ran in the caller, as attempt N of an owner of its own.
MARK_RAN_HERE = (
    "UPDATE jobs SET owner = ?, attempts = ?, started = 1, started_at = ? WHERE id = ?"
)
PROMOTE_DUE = "UPDATE jobs SET state = 'queued' WHERE state = 'scheduled' AND eta <= ?"
NEXT_SCHEDULED = "SELECT MIN(eta) FROM jobs WHERE state = 'scheduled'"
# A claim counts an attempt only for the calls that start now, on free
# workers (``started = 1``). Calls claimed ahead of free workers count theirs
# when their start is recorded: by their outcome, by a lease renewal while
# they run, or (for a suspect call) by ``record_start`` before they run. A
# consumer that dies holding calls it never started costs them nothing.
CLAIM = (
    "UPDATE jobs SET state = 'running', owner = ?, lease_until = ?, lease_boot = ?,"
    " lease_mono = ?, started = {started}, started_at = {started_at},"
    " attempts = attempts + {started}"
    " WHERE id IN (SELECT id FROM jobs WHERE state = 'queued'{queues}"
    " ORDER BY priority DESC, eta, id LIMIT ?)"
    " RETURNING id, name, queue, priority, payload, attempts + 1 - started, max_attempts,"
    " expires, eta, started, suspect"
)
CLAIM_NOW = CLAIM.replace("{started}", "1").replace("{started_at}", "?")
CLAIM_AHEAD = CLAIM.replace("{started}", "0").replace("{started_at}", "started_at")
# The attempt number of a running row is attempts + 1 - started: the same
# before and after its start is recorded.
OURS = "owner = ? AND state = 'running' AND attempts + 1 - started = ?"
# An attempt that ended (done, failed, retried) clears suspect: it did not kill
# its consumer. The owner and attempt guard every finish: an attempt whose lease was taken
# back (and perhaps given to another consumer) must not overwrite the row.
# The owner stays: the row of a done call is the record of its last attempt
# (see models.History), and every statement that reads owner asks for a
# running row.
FINISH = (
    "UPDATE jobs SET state = ?, eta = COALESCE(?, eta), result = ?, error_type = ?,"
    " error_message = ?, traceback = ?, finished_at = ?, started_at = COALESCE(?, started_at),"
    " attempts = ?, started = 0, suspect = 0, lease_until = NULL, lease_boot = NULL,"
    " lease_mono = NULL WHERE id = ? AND " + OURS
)
# The history row of an attempt that did not end its call done, written in
# its outcome's transaction, after FINISH (the row's started_at is then the
# attempt's). A later write for the same attempt (one that completed after it
# was taken back as lost) replaces the earlier.
HISTORY_ADD = (
    "INSERT INTO history (job_id, number, started_at, finished_at, outcome, error_type,"
    " error_message, traceback, consumer) SELECT id, earlier_attempts + ?,"
    " COALESCE(?, started_at), ?, ?, ?, ?, ?, ? FROM jobs WHERE id = ?"
    " ON CONFLICT (job_id, number) DO UPDATE SET started_at = excluded.started_at,"
    " finished_at = excluded.finished_at, outcome = excluded.outcome,"
    " error_type = excluded.error_type, error_message = excluded.error_message,"
    " traceback = excluded.traceback, consumer = excluded.consumer"
)
# An attempt that completed after its lease was taken back (its consumer was
# frozen, or held the GIL past the lease) still counts: a finished task must
# not run again, nor end as lost. The first attempt to complete wins; one
# running elsewhere meanwhile will find its outcome ignored.
FINISH_LATE = (
    "UPDATE jobs SET state = 'done', result = ?, error_type = NULL, error_message = NULL,"
    " traceback = NULL, finished_at = ?, started_at = COALESCE(?, started_at), started = 0,"
    " attempts = MAX(attempts, ?), owner = NULL, lease_until = NULL, lease_boot = NULL,"
    " lease_mono = NULL WHERE id = ? AND error_type = 'WorkerLost'"
    " AND state IN ('queued', 'scheduled', 'running', 'failed')"
)
# (a start already recorded stays as it is)
RECORD_START = (
    "UPDATE jobs SET attempts = attempts + 1 - started, started = 1,"
    " started_at = CASE WHEN started THEN started_at ELSE ? END WHERE id = ? AND " + OURS
)
RENEW = (
    "UPDATE jobs SET lease_until = ?, lease_mono = ? WHERE owner = ? AND state = 'running'"
)
# Put back without using an attempt: one whose start was recorded gives it back.
RELEASE = (
    "UPDATE jobs SET state = 'queued', owner = NULL, lease_until = NULL, lease_boot = NULL,"
    " lease_mono = NULL, attempts = attempts - started, started = 0"
    " WHERE owner = ? AND state = 'running'"
)
RELEASE_ONE = RELEASE + " AND id = ? AND attempts + 1 - started = ?"
# A lost attempt counts against the task's retries, but every task gets at
# least one more run after its consumer died: a crash is rarely the task's
# fault, and at-least-once must hold with retries=0. A task that keeps killing
# its consumer still ends failed.
LOST = (
    "SELECT id, name, owner, attempts + 1 - started, started,"
    " attempts < MAX(max_attempts, 2) FROM jobs WHERE state = 'running' AND {cond}"
)
# A lease compared on the holder's monotonic clock when it is ours too (same
# kernel boot); on the wall clock otherwise.
EXPIRED = (
    "owner NOT IN ({mine}) AND CASE WHEN lease_boot = ? THEN lease_mono < ?"
    " ELSE lease_until < ? END"
)
LOST_END = (
    "owner = NULL, lease_until = NULL, lease_boot = NULL, lease_mono = NULL, started = 0,"
    " error_type = 'WorkerLost', error_message = ?"
)
# Back to the queue (an attempt that never started, as far as the store
# knows, keeps its count untouched). Every call taken from a dead consumer is
# marked suspect: it may be what killed it, so the consumer that runs it next
# first records its start, and writes the outcomes it holds, in one transaction.
REQUEUE_LOST = (
    "UPDATE jobs SET state = 'queued', suspect = 1, " + LOST_END + " WHERE id = ? AND " + OURS
)
FAIL_LOST = (
    "UPDATE jobs SET state = 'failed', finished_at = ?, " + LOST_END
    + " WHERE id = ? AND " + OURS
)
# A lost attempt's history row, written before the row forgets its owner.
HISTORY_LOST = (
    "INSERT INTO history (job_id, number, started_at, finished_at, outcome, error_type,"
    " error_message, traceback, consumer) SELECT id, earlier_attempts + attempts, started_at,"
    " ?, 'lost', 'WorkerLost', ?, NULL, owner FROM jobs WHERE id = ? AND " + OURS
    + " ON CONFLICT (job_id, number) DO NOTHING"
)
ANY_EXPIRED = "SELECT 1 FROM jobs WHERE state = 'running' AND " + EXPIRED + " LIMIT 1"
REVOKE = (
    "UPDATE jobs SET state = 'revoked', finished_at = ?, error_type = 'Revoked',"
    " error_message = 'the call was revoked before it started'"
    " WHERE id = ? AND state IN ('queued', 'scheduled')"
)
READ = (
    "SELECT id, name, queue, state, eta, attempts, max_attempts, result, error_type,"
    " error_message, traceback, created_at, started_at, finished_at, expires"
    " FROM jobs WHERE id = ?"
)
STATE_OF = "SELECT state FROM jobs WHERE id = ?"
PAUSED = "SELECT queue FROM paused_queues"
# A call past its deadline reads as expired before a consumer writes it down.
COUNTS = (
    "SELECT queue, CASE WHEN state IN ('queued', 'scheduled') AND expires <= ?"
    " THEN 'expired' ELSE state END AS status, COUNT(*) FROM jobs GROUP BY queue, status"
)
PURGE = (
    "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE finished_at IS NOT NULL"
    " AND finished_at < ? AND state IN ('done', 'failed', 'revoked', 'expired') LIMIT ?)"
    " RETURNING id"
)
HISTORY_DELETE = "DELETE FROM history WHERE job_id = ?"
REGISTER_CONSUMER = (
    "INSERT OR REPLACE INTO consumers (id, hostname, boot_id, pid_ns, pid, pid_start, queues,"
    " workers, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
CONSUMER_HEARTBEAT = "UPDATE consumers SET heartbeat_at = ? WHERE id = ?"
UNREGISTER_CONSUMER = "DELETE FROM consumers WHERE id = ?"
CONSUMERS = (
    "SELECT id, hostname, boot_id, pid_ns, pid, pid_start, queues, workers, started_at,"
    " heartbeat_at FROM consumers"
)
PERIODIC_ADD = "INSERT OR IGNORE INTO periodic (name, crontab, next_fire) VALUES (?, ?, ?)"
PERIODIC_RESET = "UPDATE periodic SET crontab = ?, next_fire = ? WHERE name = ? AND crontab != ?"
PERIODIC_SLOT = "SELECT crontab, next_fire FROM periodic WHERE name = ?"
PERIODIC_ALL = "SELECT name, crontab, next_fire FROM periodic ORDER BY name"
# Firing is a compare-and-set on the stored slot: of all the consumers that
# saw the slot come due, exactly one moves it on and enqueues the job.
PERIODIC_ADVANCE = "UPDATE periodic SET next_fire = ? WHERE name = ? AND next_fire = ?"

# -- operating the queue: not hot; batches of their own transactions ---------------------

DETAIL = f"SELECT {DETAIL_COLUMNS} FROM jobs WHERE id = ?"
HISTORY_OF = f"SELECT {HISTORY_COLUMNS} FROM history WHERE job_id = ? ORDER BY number"
HISTORY_OF_MANY = (
    f"SELECT {HISTORY_COLUMNS} FROM history WHERE job_id IN ({{ids}}) ORDER BY job_id, number"
)
LIST = f"SELECT {DETAIL_COLUMNS} FROM jobs WHERE {{where}} ORDER BY id DESC LIMIT ?"
STATE_AND_EXPIRY = "SELECT state, expires FROM jobs WHERE id = ?"
# Queued again as if new, with the task's retries afresh; the attempts so far
# move to earlier_attempts, so that the history goes on numbering them. A
# deadline is dropped: it has passed, or would cut the new run short.
REQUEUE = (
    "UPDATE jobs SET state = 'queued', eta = ?, expires = NULL,"
    " earlier_attempts = earlier_attempts + attempts, attempts = 0, started = 0, suspect = 0,"
    " owner = NULL, lease_until = NULL, lease_boot = NULL, lease_mono = NULL,"
    " started_at = NULL, finished_at = NULL, result = NULL, error_type = NULL,"
    " error_message = NULL, traceback = NULL"
)
RETRY_ONE = REQUEUE + " WHERE id = ?"
# Batches walk the ids upwards from the last one seen: each row is looked at
# once, however many batches it takes.
BATCH = "id IN (SELECT id FROM jobs WHERE ({where}) AND id > ? ORDER BY id LIMIT ?) RETURNING id"
RETRY_BATCH = REQUEUE + " WHERE " + BATCH
DELETE_BATCH = "DELETE FROM jobs WHERE " + BATCH
REVOKE_ALL = (
    "UPDATE jobs SET state = 'revoked', finished_at = ?, error_type = 'Revoked',"
    " error_message = ? WHERE " + BATCH
)
RESTORE_ALL = (
    "UPDATE jobs SET state = CASE WHEN eta > ? THEN 'scheduled' ELSE 'queued' END,"
    " finished_at = NULL, error_type = NULL, error_message = NULL WHERE " + BATCH
)
PAUSE = (
    "INSERT INTO paused_queues (queue, paused_at) VALUES (?, ?) ON CONFLICT (queue) DO NOTHING"
)
RESUME = "DELETE FROM paused_queues WHERE queue = ?"
PAUSED_SINCE = "SELECT queue, paused_at FROM paused_queues ORDER BY queue"
RUNNING = "SELECT owner, id FROM jobs WHERE state = 'running' ORDER BY id"
