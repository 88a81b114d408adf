"""Every statement the PostgreSQL store runs, named after what it does, in one place.

Written for PostgreSQL: claims take rows with ``FOR UPDATE SKIP LOCKED``, a
batch of outcomes is one ``UPDATE ... FROM unnest``, and leases are read on
the holder's monotonic clock when the reader shares its boot, on the
database's clock otherwise. ``postgres.py`` runs them.
"""

from __future__ import annotations

from .selection import DETAIL_COLUMNS, HISTORY_COLUMNS

COLUMNS = ("id, name, queue, priority, state, payload, eta, expires, attempts, max_attempts,"
            " created_at")
ENQUEUE = f"INSERT INTO jobs ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 0, %s, %s)"
# One statement, one round trip: the row and the wake-up commit together.
ENQUEUE_ONE = (
    f"WITH added AS ({ENQUEUE} RETURNING id) SELECT pg_notify(%s, '') FROM added"
)
COPY = (
    "COPY jobs (id, name, queue, priority, state, payload, eta, expires, attempts,"
    " max_attempts, created_at) FROM STDIN (FORMAT BINARY)"
)
COPY_TYPES = ["int8", "text", "text", "int8", "text", "bytea", "float8", "float8", "int8",
               "int8", "float8"]
NOTIFY = "SELECT pg_notify(%s, '')"
MARK_RAN_HERE = (
    "UPDATE jobs SET owner = %s, attempts = %s, started = 1, started_at = %s WHERE id = %s"
)
PROMOTE_DUE = "UPDATE jobs SET state = 'queued' WHERE state = 'scheduled' AND eta <= %s"
NEXT_SCHEDULED = "SELECT MIN(eta) FROM jobs WHERE state = 'scheduled'"
# The database's clock, in epoch seconds: what leases between hosts are read on.
DB_NOW = "extract(epoch FROM clock_timestamp())::float8"
# The best ready rows, locked, skipping those another consumer is taking; the
# first ``start_now`` of them count their attempt at once (sqlite.py's
# _CLAIM_NOW), the others are claimed ahead and count it once started.
CLAIM = (
    "WITH ready AS MATERIALIZED ("
    " SELECT id, priority, eta FROM jobs WHERE state = 'queued'{queues}"
    # Read in the claim's own statement: a claim that begins after a pause
    # commits takes nothing of that queue, on any host (an empty table but for
    # an outage: a hashed lookup that costs nothing measurable).
    " AND queue NOT IN (SELECT queue FROM paused_queues)"
    " ORDER BY priority DESC, eta, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED),"
    " ranked AS (SELECT id, row_number() OVER (ORDER BY priority DESC, eta, id)"
    " <= %(start_now)s AS now FROM ready)"
    " UPDATE jobs j SET state = 'running', owner = %(owner)s,"
    f" lease_until = {DB_NOW} + %(lease)s, lease_boot = %(boot)s, lease_mono = %(mono)s,"
    " started = CASE WHEN r.now THEN 1 ELSE 0 END,"
    " started_at = CASE WHEN r.now THEN %(at)s ELSE j.started_at END,"
    " attempts = j.attempts + CASE WHEN r.now THEN 1 ELSE 0 END"
    " FROM ranked r WHERE j.id = r.id"
    " RETURNING j.id, j.name, j.queue, j.priority, j.payload, j.attempts + 1 - j.started,"
    " j.max_attempts, j.expires, j.eta, j.started, j.suspect"
)
# The attempt number of a running row is attempts + 1 - started (sqlite.py).
OURS = "owner = %s AND state = 'running' AND attempts + 1 - started = %s"
# A batch of outcomes in one statement: the rows that still belong to the
# attempt are written, and their ids returned.
# The owner stays on the row: a done call's row is the record of its last
# attempt (models.History). Every attempt that did not end its call done (nor
# expired: it never started) gets its history row in the same statement.
FINISH = (
    "WITH v AS (SELECT * FROM unnest(%s::int8[], %s::text[], %s::int8[], %s::text[],"
    " %s::float8[], %s::bytea[], %s::text[], %s::text[], %s::text[], %s::float8[],"
    " %s::float8[], %s::text[], %s::float8[])"
    " AS v(id, owner, attempt, state, eta, result, error_type, error_message, traceback,"
    " finished_at, started_at, outcome, ended)),"
    " written AS (UPDATE jobs j SET state = v.state, eta = COALESCE(v.eta, j.eta),"
    " result = v.result, error_type = v.error_type, error_message = v.error_message,"
    " traceback = v.traceback, finished_at = v.finished_at,"
    " started_at = COALESCE(v.started_at, j.started_at), attempts = v.attempt, started = 0,"
    " suspect = 0, lease_until = NULL, lease_boot = NULL, lease_mono = NULL"
    " FROM v WHERE j.id = v.id AND j.owner = v.owner AND j.state = 'running'"
    " AND j.attempts + 1 - j.started = v.attempt"
    " RETURNING j.id, j.earlier_attempts, j.started_at),"
    " history_added AS (INSERT INTO history (job_id, number, started_at, finished_at, outcome,"
    " error_type, error_message, traceback, consumer)"
    " SELECT w.id, w.earlier_attempts + v.attempt, w.started_at, v.ended, v.outcome,"
    " v.error_type, v.error_message, v.traceback, v.owner"
    " FROM written w JOIN v ON v.id = w.id WHERE v.state NOT IN ('done', 'expired')"
    " ON CONFLICT (job_id, number) DO UPDATE SET started_at = EXCLUDED.started_at,"
    " finished_at = EXCLUDED.finished_at, outcome = EXCLUDED.outcome,"
    " error_type = EXCLUDED.error_type, error_message = EXCLUDED.error_message,"
    " traceback = EXCLUDED.traceback, consumer = EXCLUDED.consumer)"
    " SELECT id FROM written"
)
# One attempt's history row (sqlite.py's HISTORY_ADD): immediate mode's
# earlier attempts, and an attempt completed after it was taken back as lost.
HISTORY_ADD = (
    "INSERT INTO history (job_id, number, started_at, finished_at, outcome, error_type,"
    " error_message, traceback, consumer) SELECT id, earlier_attempts + %s,"
    " COALESCE(%s, started_at), %s, %s, %s, %s, %s, %s FROM jobs WHERE id = %s"
    " ON CONFLICT (job_id, number) DO UPDATE SET started_at = EXCLUDED.started_at,"
    " finished_at = EXCLUDED.finished_at, outcome = EXCLUDED.outcome,"
    " error_type = EXCLUDED.error_type, error_message = EXCLUDED.error_message,"
    " traceback = EXCLUDED.traceback, consumer = EXCLUDED.consumer"
)
# sqlite.py's FINISH_LATE: a completed attempt whose lease was taken back still counts.
FINISH_LATE = (
    "UPDATE jobs SET state = 'done', result = %s, error_type = NULL, error_message = NULL,"
    " traceback = NULL, finished_at = %s, started_at = COALESCE(%s, started_at), started = 0,"
    " attempts = GREATEST(attempts, %s), owner = NULL, lease_until = NULL, lease_boot = NULL,"
    " lease_mono = NULL WHERE id = %s AND error_type = 'WorkerLost'"
    " AND state IN ('queued', 'scheduled', 'running', 'failed')"
)
RECORD_START = (
    "UPDATE jobs SET attempts = attempts + 1 - started, started = 1,"
    " started_at = CASE WHEN started = 1 THEN started_at ELSE %s END WHERE id = %s AND " + OURS
)
RENEW = (
    f"UPDATE jobs SET lease_until = {DB_NOW} + %s, lease_mono = %s"
    " WHERE owner = %s AND state = 'running'"
)
RELEASE = (
    "UPDATE jobs SET state = 'queued', owner = NULL, lease_until = NULL, lease_boot = NULL,"
    " lease_mono = NULL, attempts = attempts - started, started = 0"
    " WHERE owner = %s AND state = 'running'"
)
RELEASE_ONE = RELEASE + " AND id = %s AND attempts + 1 - started = %s"
# Rows claimed by a transaction whose answer was lost with its connection:
# the consumer never saw them, so they go back as if never claimed.
RELEASE_UNSEEN = RELEASE + " AND NOT (id = ANY(%s))"
LOST = (
    "SELECT id, name, owner, attempts + 1 - started, started,"
    " attempts < GREATEST(max_attempts, 2) FROM jobs WHERE state = 'running' AND {cond}"
    " ORDER BY id FOR UPDATE SKIP LOCKED"
)
# On the holder's monotonic clock when it runs on this kernel boot (a step of
# the wall clock cannot expire it), on the database's clock otherwise.
EXPIRED = (
    "owner <> ALL(%s) AND CASE WHEN lease_boot = %s THEN lease_mono < %s"
    f" ELSE lease_until < {DB_NOW} END"
)
LOST_END = (
    "owner = NULL, lease_until = NULL, lease_boot = NULL, lease_mono = NULL, started = 0,"
    " error_type = 'WorkerLost', error_message = %s"
)
REQUEUE_LOST = (
    "UPDATE jobs SET state = 'queued', suspect = 1, " + LOST_END + " WHERE id = %s AND " + OURS
)
FAIL_LOST = (
    "UPDATE jobs SET state = 'failed', finished_at = %s, " + LOST_END
    + " WHERE id = %s AND " + OURS
)
# A lost attempt's history row, written before the row forgets its owner.
HISTORY_LOST = (
    "INSERT INTO history (job_id, number, started_at, finished_at, outcome, error_type,"
    " error_message, traceback, consumer) SELECT id, earlier_attempts + attempts, started_at,"
    " %s, 'lost', 'WorkerLost', %s, NULL, owner FROM jobs WHERE id = %s AND " + OURS
    + " ON CONFLICT (job_id, number) DO NOTHING"
)
ANY_EXPIRED = "SELECT 1 FROM jobs WHERE state = 'running' AND " + EXPIRED + " LIMIT 1"
REVOKE = (
    "UPDATE jobs SET state = 'revoked', finished_at = %s, error_type = 'Revoked',"
    " error_message = 'the call was revoked before it started'"
    " WHERE id = %s AND state IN ('queued', 'scheduled')"
)
READ = (
    "SELECT id, name, queue, state, eta, attempts, max_attempts, result, error_type,"
    " error_message, traceback, created_at, started_at, finished_at, expires"
    " FROM jobs WHERE id = %s"
)
STATE_OF = "SELECT state FROM jobs WHERE id = %s"
COUNTS = (
    "SELECT queue, CASE WHEN state IN ('queued', 'scheduled') AND expires <= %s"
    " THEN 'expired' ELSE state END AS status, COUNT(*) FROM jobs GROUP BY 1, 2"
)
PURGE = (
    "WITH gone AS (DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE finished_at IS NOT"
    " NULL AND finished_at < %s AND state IN ('done', 'failed', 'revoked', 'expired')"
    " LIMIT %s) RETURNING id),"
    " forgotten AS (DELETE FROM history WHERE job_id IN (SELECT id FROM gone))"
    " SELECT count(*) FROM gone"
)
REGISTER_CONSUMER = (
    "INSERT INTO consumers (id, hostname, boot_id, pid_ns, pid, pid_start, queues, workers,"
    " started_at, heartbeat_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (id) DO UPDATE SET hostname = EXCLUDED.hostname,"
    " boot_id = EXCLUDED.boot_id, pid_ns = EXCLUDED.pid_ns, pid = EXCLUDED.pid,"
    " pid_start = EXCLUDED.pid_start, queues = EXCLUDED.queues, workers = EXCLUDED.workers,"
    " started_at = EXCLUDED.started_at, heartbeat_at = EXCLUDED.heartbeat_at"
)
CONSUMER_HEARTBEAT = "UPDATE consumers SET heartbeat_at = %s WHERE id = %s"
UNREGISTER_CONSUMER = "DELETE FROM consumers WHERE id = %s"
CONSUMERS = (
    "SELECT id, hostname, boot_id, pid_ns, pid, pid_start, queues, workers, started_at,"
    " heartbeat_at FROM consumers"
)
PERIODIC_ADD = (
    "INSERT INTO periodic (name, crontab, next_fire) VALUES (%s, %s, %s)"
    " ON CONFLICT (name) DO NOTHING"
)
PERIODIC_RESET = (
    "UPDATE periodic SET crontab = %s, next_fire = %s WHERE name = %s AND crontab <> %s"
)
PERIODIC_SLOT = "SELECT crontab, next_fire FROM periodic WHERE name = %s"
PERIODIC_ALL = "SELECT name, crontab, next_fire FROM periodic ORDER BY name"
# The compare-and-set of sqlite.py: of the schedulers that saw the slot come
# due, on any host, one moves it on; the others wait for its row lock, then
# find the slot moved and change nothing.
PERIODIC_ADVANCE = "UPDATE periodic SET next_fire = %s WHERE name = %s AND next_fire = %s"
FIND_IDS = "SELECT id, name, created_at FROM jobs WHERE id = ANY(%s)"
# Outcomes whose first sending may have committed (see _finish_late); only
# those that end a call have a finishing time to tell them by.
ALREADY_WRITTEN = (
    "SELECT j.id FROM jobs j JOIN unnest(%s::int8[], %s::text[], %s::int8[], %s::text[],"
    " %s::float8[]) AS v(id, owner, attempt, state, finished_at) ON j.id = v.id"
    " WHERE j.owner = v.owner AND j.attempts = v.attempt AND j.state = v.state"
    " AND v.state IN ('done', 'failed', 'expired') AND j.finished_at = v.finished_at"
)

# -- operating the queue: not hot; batches of their own transactions (sqlite.py) ----------

DETAIL = f"SELECT {DETAIL_COLUMNS} FROM jobs WHERE id = %s"
HISTORY_OF = f"SELECT {HISTORY_COLUMNS} FROM history WHERE job_id = %s ORDER BY number"
HISTORY_OF_MANY = (
    f"SELECT {HISTORY_COLUMNS} FROM history WHERE job_id = ANY(%s) ORDER BY job_id, number"
)
LIST = f"SELECT {DETAIL_COLUMNS} FROM jobs WHERE {{where}} ORDER BY id DESC LIMIT %s"
STATE_AND_EXPIRY = "SELECT state, expires FROM jobs WHERE id = %s FOR UPDATE"
REQUEUE = (
    "UPDATE jobs SET state = 'queued', eta = %s, expires = NULL,"
    " earlier_attempts = earlier_attempts + attempts, attempts = 0, started = 0, suspect = 0,"
    " owner = NULL, lease_until = NULL, lease_boot = NULL, lease_mono = NULL,"
    " started_at = NULL, finished_at = NULL, result = NULL, error_type = NULL,"
    " error_message = NULL, traceback = NULL"
)
RETRY_ONE = REQUEUE + " WHERE id = %s"
BATCH = (
    "id IN (SELECT id FROM jobs WHERE ({where}) AND id > %s ORDER BY id LIMIT %s"
    " FOR UPDATE SKIP LOCKED) RETURNING id"
)
RETRY_BATCH = REQUEUE + " WHERE " + BATCH
DELETE_BATCH = "DELETE FROM jobs WHERE " + BATCH
HISTORY_DELETE = "DELETE FROM history WHERE job_id = ANY(%s)"
REVOKE_ALL = (
    "UPDATE jobs SET state = 'revoked', finished_at = %s, error_type = 'Revoked',"
    " error_message = %s WHERE " + BATCH
)
RESTORE_ALL = (
    "UPDATE jobs SET state = CASE WHEN eta > %s THEN 'scheduled' ELSE 'queued' END,"
    " finished_at = NULL, error_type = NULL, error_message = NULL WHERE " + BATCH
)
PAUSE = (
    "INSERT INTO paused_queues (queue, paused_at) VALUES (%s, %s)"
    " ON CONFLICT (queue) DO NOTHING"
)
RESUME = "DELETE FROM paused_queues WHERE queue = %s"
PAUSED_SINCE = "SELECT queue, paused_at FROM paused_queues ORDER BY queue"
RUNNING = "SELECT owner, id FROM jobs WHERE state = 'running' ORDER BY id"
