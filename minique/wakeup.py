"""Nudges from producers to sleeping consumers: datagrams to Unix sockets beside the database.

Each consumer binds one socket in ``<database>-wake/``. After its commit, a
producer sends one byte to every socket there; nobody listening costs a
``stat``. The consumer still polls the database cheaply, so a lost nudge (a
full buffer, a folder it cannot write) delays a task by one poll, never
loses it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import threading
import time
from pathlib import Path

log = logging.getLogger("minique")

_MAX_UNIX_PATH = 100
RECHECK = 0.05


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
        self.folder = Path(f"{database}-wake")
        self._lock = threading.Lock()
        self._seen_mtime: int | None = None
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
            mtime = os.stat(self.folder).st_mtime_ns
        except OSError:
            self._targets = []
            return []
        if mtime != self._seen_mtime or self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():  # forked: a fresh socket and descriptor
                    self._sock = None
                    self._paths = _Folder(self.folder)
                    self._pid = os.getpid()
                try:
                    names = [n for n in os.listdir(self.folder) if n.endswith(".sock")]
                    self._targets = [self._paths.address(n) for n in names]
                except OSError:
                    self._targets = []
                self._seen_mtime = mtime
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
        self.folder = Path(f"{database}-wake")
        self.name = f"{consumer_id[:16]}.sock"
        self.sock: socket.socket | None = None
        self._paths = _Folder(self.folder)

    def open(self) -> bool:
        """Bind the socket; False (and a log line) if the folder cannot hold it."""
        sock = None
        try:
            self.folder.mkdir(exist_ok=True)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            address = self._paths.address(self.name)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(address)
            sock.bind(address)
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

    def drain(self) -> None:
        """Consume every nudge received so far (one wake-up stands for them all)."""
        sock = self.sock
        if sock is None:
            return
        while True:
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
