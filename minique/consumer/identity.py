"""Who a consumer process is, precisely enough to be sure when it is gone.

A PID alone proves nothing: containers sharing a volume see each other's PIDs
as someone else's, and PIDs are reused. A consumer is known dead only when its
record names this kernel boot and this PID namespace, and its PID is gone or
now belongs to a process that started at another time. Anything less and we
wait for its lease to run out: a task run late is better than a task run twice.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from pathlib import Path

from ..clock import boot_id
from ..records import ConsumerState, ConsumerStatus
from ..store import ConsumerInfo

# A consumer whose heartbeat missed this many renewals (plus a second for a
# slow write) is not counted as live: it is stuck, or gone where we cannot see.
SILENT_AFTER_RENEWALS = 2


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def pid_namespace() -> str:
    """This process's PID namespace ("" where the system does not say)."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def process_start(pid: int) -> tuple[str, str] | None:
    """``(start_time, state)`` of a process from /proc, or None if there is no such process."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    fields = stat.rpartition(")")[2].split()
    # fields[0] is field 3 (state); the start time is field 22.
    return fields[19], fields[0]


def describe_self(consumer_id: str, queues: str, workers: int, now: float) -> ConsumerInfo:
    """The record a consumer writes about itself when it starts."""
    pid = os.getpid()
    start = process_start(pid)
    return ConsumerInfo(
        id=consumer_id, hostname=socket.gethostname(), boot_id=boot_id(),
        pid_ns=pid_namespace(), pid=pid, pid_start=start[0] if start else "",
        queues=queues, workers=workers, started_at=now, heartbeat_at=now,
    )


def certainly_dead(info: ConsumerInfo, me: ConsumerInfo) -> bool:
    """True only when ``info`` names a process of this kernel and namespace that no longer runs."""
    if not info.boot_id or info.boot_id != me.boot_id:
        return False
    if not info.pid_ns or info.pid_ns != me.pid_ns or not info.pid_start:
        return False
    if info.pid == me.pid:
        return info.pid_start != me.pid_start
    current = process_start(info.pid)
    if current is None:
        return True
    start, state = current
    # A zombie has exited; only its parent has not collected it yet.
    return start != info.pid_start or state in ("Z", "X")


def renew_interval(lease: float) -> float:
    """Seconds between a consumer's renewals of its leases and its heartbeat, for ``lease``.

    Three chances per lease to get a write in, and at least one every 10 s,
    so that other processes soon learn that it is alive.
    """
    return max(min(lease / 3, 10.0), 0.05)


def state_of(info: ConsumerInfo, me: ConsumerInfo, now: float, lease: float) -> ConsumerState:
    """Whether the consumer ``info`` is live, as the process ``me`` sees it at ``now``.

    ``"dead"`` when it is certainly dead on this host, ``"silent"`` when its
    heartbeat is older than ``SILENT_AFTER_RENEWALS`` renewals for ``lease``
    (consumers run with the same options as the reader, normally), ``"live"``
    otherwise.
    """
    if certainly_dead(info, me):
        return "dead"
    if now - info.heartbeat_at > SILENT_AFTER_RENEWALS * renew_interval(lease) + 1.0:
        return "silent"
    return "live"


def status_of(info: ConsumerInfo, state: ConsumerState) -> ConsumerStatus:
    """What ``mq.consumers()`` shows of a registered consumer."""
    return ConsumerStatus(
        id=info.id, host=info.hostname, pid=info.pid,
        queues=None if info.queues == "*" else tuple(info.queues.split(",")),
        workers=info.workers,
        started_at=dt.datetime.fromtimestamp(info.started_at, dt.UTC),
        last_seen=dt.datetime.fromtimestamp(info.heartbeat_at, dt.UTC),
        state=state,
    )


def resident_bytes(pid: int | None = None) -> int | None:
    """The resident memory of a process (this one by default), or None where /proc cannot say."""
    try:
        with open(f"/proc/{pid or 'self'}/statm") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")
