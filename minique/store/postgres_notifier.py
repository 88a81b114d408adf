"""Wake-ups for a PostgreSQL store: NOTIFY in the producers' transactions, LISTEN in consumers.

A producer's enqueue sends its NOTIFY inside its own transaction (one round
trip; PostgreSQL delivers it at commit), so ``notify()`` right after costs
nothing. Each consumer keeps one more connection that only listens; its
socket is the descriptor the consumer polls. The consumer still polls the
store, so a notification lost (a listener reconnecting after a restart) delays
a task by one poll, never loses it.

The descriptor handed to the consumer stays the same number for the life of
the listener: a new connection's socket is duplicated onto it. While no
connection can be had it points at a pipe instead, which a timer makes
readable when the next try is due (backing off up to RETRY_MAX): the consumer
wakes, looks at the store (it may have missed notifications) and its
``drain()`` tries to reconnect, however long its own poll interval.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from ..errors import MiniqueError
from .wakeup import WAKE_BURST, WAKE_EVERY

if TYPE_CHECKING:
    import psycopg

    from .postgres import PostgresStore

log = logging.getLogger("minique")

# Between tries to reopen a listener whose connection was lost.
RETRY_FIRST = 0.1
RETRY_MAX = 5.0


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class PostgresListener:
    """A consumer's LISTEN connection, as a ``Listener`` (see the module's docstring)."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._idle_r, self._idle_w = os.pipe()
        os.set_blocking(self._idle_r, False)
        os.set_blocking(self._idle_w, False)
        self._fd = os.dup(self._idle_r)
        self._timer: threading.Timer | None = None
        self._closed = False
        self._pause = RETRY_FIRST
        self._retry_at = 0.0
        self._tokens = float(WAKE_BURST)
        self._counted_at = time.monotonic()
        with self._lock:
            self._reopen()

    def fileno(self) -> int:
        return self._fd

    def ready_in(self) -> float:
        now = time.monotonic()
        tokens = min(WAKE_BURST, self._tokens + (now - self._counted_at) / WAKE_EVERY)
        return 0.0 if tokens >= 1 else (1 - tokens) * WAKE_EVERY

    def drain(self) -> None:
        """Consume the notifications received so far (one wake-up stands for them all)."""
        wait = self.ready_in()
        if wait > 0:  # a flood: at most one wake-up per WAKE_EVERY beyond the burst
            time.sleep(wait)
        now = time.monotonic()
        self._tokens = min(WAKE_BURST, self._tokens + (now - self._counted_at) / WAKE_EVERY) - 1
        self._counted_at = now
        import psycopg

        with self._lock:
            conn = self._conn
            if self._closed:
                return
            if conn is None:  # woken by the timer: time to try again
                with contextlib.suppress(OSError):
                    while os.read(self._idle_r, 64):
                        pass
                self._reopen()
                return
            try:
                pgconn = conn.pgconn
                pgconn.consume_input()
                while pgconn.notifies() is not None:
                    pass
                sound = pgconn.status == psycopg.pq.ConnStatus.OK
            except (psycopg.Error, OSError):
                sound = False
            if not sound:
                log.warning("the connection that listens for new tasks on %s was lost; "
                            "reconnecting (tasks are found by polling meanwhile)",
                            self._store.location)
                self._lost()
                self._reopen()

    def revive(self) -> None:
        """Reopen the connection if it was lost and the time for another try has come."""
        with self._lock:
            if self._conn is None and not self._closed and time.monotonic() >= self._retry_at:
                self._reopen()

    def _lost(self) -> None:
        conn, self._conn = self._conn, None
        # Nothing to read until a new connection: never readable meanwhile.
        os.dup2(self._idle_r, self._fd)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _reopen(self) -> None:
        conn = None
        try:
            conn = self._store.connect()
            conn.execute(f"LISTEN {_quote_ident(self._store.channel)}")
        except Exception as exc:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
            self._try_later(exc)
            return
        self._cancel_timer()
        with contextlib.suppress(OSError):  # a poke that came meanwhile
            while os.read(self._idle_r, 64):
                pass
        os.dup2(conn.pgconn.socket, self._fd)
        self._conn = conn
        self._pause = RETRY_FIRST

    def _try_later(self, why: Exception) -> None:
        log.debug("cannot listen on %s yet: %s", self._store.location, why)
        self._retry_at = time.monotonic() + self._pause
        self._cancel_timer()
        self._timer = threading.Timer(self._pause, self._poke)
        self._timer.daemon = True
        self._timer.name = "minique-listener-retry"
        self._timer.start()
        self._pause = min(self._pause * 2, RETRY_MAX)

    def _poke(self) -> None:
        with contextlib.suppress(OSError):  # full, or closed: a wake-up is due anyway
            os.write(self._idle_w, b"!")

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._cancel_timer()
            self._lost()
            for fd in (self._fd, self._idle_r, self._idle_w):
                with contextlib.suppress(OSError):
                    os.close(fd)

    def disown(self) -> None:
        """In a forked child: let go of the parent's connection without ending its session."""
        from .postgres_connect import disown

        conn, self._conn = self._conn, None
        if conn is not None:
            disown(conn)
        self._closed = True
        self._lock = threading.Lock()
        for fd in (self._fd, self._idle_r, self._idle_w):
            with contextlib.suppress(OSError):
                os.close(fd)


class PostgresNotifier:
    """NOTIFY from producers (in their transactions), LISTEN in consumers."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self._local = threading.local()
        self._listeners: weakref.WeakSet[PostgresListener] = weakref.WeakSet()

    def sent(self) -> None:
        """The store's last write in this thread carried its NOTIFY already."""
        self._local.sent = True

    def notify(self) -> None:
        """Wake the consumers, unless the enqueue just made in this thread did already."""
        if getattr(self._local, "sent", False):
            self._local.sent = False
            return
        try:
            self._store.notify_now()
        except MiniqueError as exc:  # a lost wake-up costs a poll, never a task
            log.debug("could not notify the consumers of %s: %s", self._store.location, exc)

    def listen(self, consumer_id: str) -> PostgresListener | None:
        listener = PostgresListener(self._store)
        self._listeners.add(listener)
        return listener

    def revive(self) -> None:
        """Reopen the listeners whose connection was lost, when their next try is due."""
        for listener in list(self._listeners):
            listener.revive()

    def after_fork(self) -> None:
        """In a forked child (the store's own fork hook has done the work already)."""
        self.forget_after_fork()

    def forget_after_fork(self) -> None:
        for listener in list(self._listeners):
            listener.disown()
        self._listeners = weakref.WeakSet()
        self._local = threading.local()
