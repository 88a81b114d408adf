"""Wake-ups for a SQLite store: datagrams to Unix sockets beside the database file.

Each consumer binds one socket in ``<database>-wake/``. After its commit, a
producer sends one byte to every socket there; nobody listening costs a
``stat``. The consumer still polls the database cheaply, so a lost nudge (a
full buffer, a folder it cannot write) delays a task by one poll, never
loses it.

The folder is trusted only if it is a real folder (not a symbolic link) that
belongs to this user or to the database's owner: otherwise another local user
could point producers at a folder of theirs choosing, where stale sockets are
deleted. An untrusted folder is logged once and not used; consumers then find
new tasks by polling, a little later. A new folder gets the database file's
permissions (a private database, a private folder).

A flood of datagrams (a bug, or another process of the same user) must not
cost a consumer a core: it wakes at most every ``WAKE_EVERY`` seconds beyond a
short burst, while a nudge to an idle consumer still wakes it at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import stat
import threading
import time
from pathlib import Path

log = logging.getLogger("minique")

_MAX_UNIX_PATH = 100
RECHECK = 0.05
# Under a flood a consumer wakes at most every WAKE_EVERY seconds, after a
# burst of WAKE_BURST wake-ups that idle consumers always have in hand: one
# nudge still wakes at once (design.md: latency p50 <= 1 ms), a flood costs a
# few percent of a core instead of all of it.
WAKE_EVERY = 0.002
WAKE_BURST = 4
# At most this many datagrams read per wake-up: a sender as fast as the reader
# cannot keep it in the loop.
_DRAIN_AT_MOST = 256


def _untrusted(folder: Path, database: Path) -> str | None:
    """Why ``folder`` must not be used for nudges, or None if it may."""
    try:
        st = os.lstat(folder)
    except OSError as exc:
        return f"cannot look at it ({exc})"
    if stat.S_ISLNK(st.st_mode):
        return "it is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a folder"
    me = os.geteuid()
    if st.st_uid == me:
        return None
    try:
        owner = os.stat(database).st_uid
    except OSError:
        owner = me
    if st.st_uid == owner:
        return None  # shared on purpose by the owner of the database
    return (f"it belongs to user {st.st_uid}, neither this user ({me}) nor the owner of "
            f"the database ({owner})")


def _refuse(folder: Path, reason: str) -> None:
    log.warning(
        "not using %s for wake-ups: %s; consumers find new tasks by polling, a little "
        "later. Delete it if it is not yours (another local user may have made it)",
        folder, reason,
    )


def _modes(database: Path) -> tuple[int, int, int]:
    """(folder mode, socket mode, group) that follow the database file's permissions."""
    try:
        st = os.stat(database)
    except OSError:
        return 0o700, 0o600, -1
    file_mode = stat.S_IMODE(st.st_mode) & 0o666
    folder_mode = 0o700
    for shift in (3, 0):  # group, others: read -> r-x, write -> rwx
        bits = (file_mode >> shift) & 0o6
        if bits:
            folder_mode |= (bits | 0o1) << shift
    group = -1
    if file_mode & 0o060:
        # A database shared with its group: new sockets take the folder's group.
        folder_mode |= stat.S_ISGID
        group = st.st_gid
    return folder_mode, file_mode | 0o600, group


class _Folder:
    """The folder of sockets, addressed through a descriptor so long paths still fit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def address(self, name: str) -> str:
        full = str(self.path / name)
        if len(full) <= _MAX_UNIX_PATH:
            return full
        # sun_path holds ~108 bytes; pytest's tmp_path and deep app folders
        # exceed it. /proc/self/fd/N/name reaches the same file in fewer bytes.
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        return f"/proc/self/fd/{self._fd}/{name}"

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Nudger:
    """The producer's side: wake every consumer of this database after a commit."""

    def __init__(self, database: Path) -> None:
        self.database = Path(database)
        self.folder = Path(f"{database}-wake")
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int, int] | None = None
        self._refused = False
        self._recheck_at = 0.0
        self._targets: list[str] = []
        self._sock: socket.socket | None = None
        self._pid = os.getpid()
        self._paths = _Folder(self.folder)

    def after_fork(self) -> None:
        """In a forked child: look at the folder anew on the next nudge, with a socket of its own.

        Called from an ``os.register_at_fork`` hook, so that the hot path does
        not ask for the pid on every nudge.
        """
        self._lock = threading.Lock()  # a thread of the parent may have held it
        self._recheck_at = 0.0

    def _refresh(self) -> list[str]:
        # A stat per enqueue is a measurable share of its cost: look at the
        # folder at most every RECHECK seconds. A consumer that appears in
        # between is found by its own start-up claim and its poll meanwhile.
        now = time.monotonic()
        if now < self._recheck_at:  # after_fork() resets it in a child
            return self._targets
        self._recheck_at = now + RECHECK
        try:
            # lstat: a symbolic link in its place must be seen as one.
            st = os.lstat(self.folder)
        except OSError:
            self._targets = []
            return []
        seen = (st.st_mtime_ns, st.st_ino, st.st_mode, st.st_uid)
        if seen != self._seen or self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():  # forked: a fresh socket and descriptor
                    self._sock = None
                    self._paths = _Folder(self.folder)
                    self._pid = os.getpid()
                reason = _untrusted(self.folder, self.database)
                if reason is not None:
                    if not self._refused:
                        self._refused = True
                        _refuse(self.folder, reason)
                    self._targets = []
                else:
                    try:
                        names = [n for n in os.listdir(self.folder) if n.endswith(".sock")]
                        self._targets = [self._paths.address(n) for n in names]
                    except OSError:
                        self._targets = []
                self._seen = seen
        return self._targets

    def nudge(self) -> None:
        """Send one byte to each consumer socket; never raises, never blocks."""
        targets = self._refresh()
        if not targets:
            return
        sock = self._sock
        if sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.setblocking(False)
            self._sock = sock
        for target in targets:
            try:
                sock.sendto(b"!", target)
            except (BlockingIOError, FileNotFoundError):
                pass  # its buffer is full (it will wake anyway) or it just left
            except ConnectionRefusedError:
                # Nobody is bound to it any more: a consumer that died. The
                # file is stale; removing it saves every later nudge a syscall.
                with contextlib.suppress(OSError):
                    os.unlink(target)
            except OSError:
                pass


class Listener:
    """The consumer's side: a bound socket that becomes readable when a producer commits."""

    def __init__(self, database: Path, consumer_id: str) -> None:
        self.database = Path(database)
        self.folder = Path(f"{database}-wake")
        self.name = f"{consumer_id[:16]}.sock"
        self.sock: socket.socket | None = None
        self._paths = _Folder(self.folder)
        # A token bucket of wake-ups: full while idle, refilled every WAKE_EVERY.
        self._tokens = float(WAKE_BURST)
        self._counted_at = time.monotonic()

    def open(self) -> bool:
        """Bind the socket; False (and a log line) if the folder cannot hold it or is untrusted."""
        folder_mode, socket_mode, group = _modes(self.database)
        sock = None
        try:
            try:
                os.mkdir(self.folder, 0o700)
            except FileExistsError:
                pass  # an existing folder keeps its permissions, once trusted
            else:
                if group >= 0:
                    with contextlib.suppress(OSError):  # not a member of that group
                        os.chown(self.folder, -1, group)
                os.chmod(self.folder, folder_mode)
            reason = _untrusted(self.folder, self.database)
            if reason is not None:
                _refuse(self.folder, reason)
                return False
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            address = self._paths.address(self.name)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(address)
            sock.bind(address)
            # Producers need write permission on the socket to send to it.
            os.chmod(address, socket_mode)
            # Non-blocking: waiting is done with poll(), and a
            # socket timeout would make every recv wait, MSG_DONTWAIT or not.
            sock.setblocking(False)
        except OSError as exc:
            if sock is not None:
                sock.close()
            self._paths.close()
            log.warning(
                "cannot listen for nudges in %s (%s); new tasks will be noticed by polling, "
                "a little later", self.folder, exc,
            )
            return False
        self.sock = sock
        return True

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a nudge; True if one came (all are consumed).

        Raises ``OSError`` or ``ValueError`` once the socket has been closed.
        """
        sock = self.sock  # close() may run in another thread meanwhile
        if sock is None:
            return False
        poller = select.poll()  # not select(): it refuses descriptors past 1,024
        poller.register(sock, select.POLLIN)
        if not poller.poll(timeout * 1000):
            return False
        self.drain()
        return True

    def ready_in(self) -> float:
        """Seconds before a nudge may wake this consumer again: 0 unless nudges flood in.

        A waiter that gets more than 0 should leave ``sock`` out of its poll
        for that long (it then wakes for its other reasons at once); one that
        calls ``drain()`` sooner is held there until then.
        """
        now = time.monotonic()
        tokens = min(WAKE_BURST, self._tokens + (now - self._counted_at) / WAKE_EVERY)
        return 0.0 if tokens >= 1 else (1 - tokens) * WAKE_EVERY

    def drain(self) -> None:
        """Consume every nudge received so far (one wake-up stands for them all).

        Counts a wake-up; past the burst, waits until the rate allows one (see
        ``ready_in``), so that a flood of nudges cannot keep a consumer busy.
        """
        sock = self.sock
        if sock is None:
            return
        wait = self.ready_in()
        if wait > 0:
            time.sleep(wait)
        now = time.monotonic()
        self._tokens = min(WAKE_BURST, self._tokens + (now - self._counted_at) / WAKE_EVERY) - 1
        self._counted_at = now
        for _ in range(_DRAIN_AT_MOST):
            try:
                sock.recv(64)
            except OSError:  # BlockingIOError once empty; any other error ends it too
                return

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._paths.address(self.name))
            self.sock.close()
            self.sock = None
        self._paths.close()
