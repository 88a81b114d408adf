"""Wake-ups for a SQLite store: datagrams to Unix sockets beside the database file.

The mechanics live in ``minique/wakeup.py``; this puts them behind the
store's ``Notifier`` and ``Listener`` protocols (``base.py``).
"""

from __future__ import annotations

from pathlib import Path

from .wakeup import Listener as SocketListener
from .wakeup import Nudger


class _Listening:
    """A consumer's socket in ``<database>-wake/``, as a ``Listener``."""

    def __init__(self, listener: SocketListener) -> None:
        self._listener = listener
        sock = listener.sock
        assert sock is not None
        self._fd = sock.fileno()

    def fileno(self) -> int:
        return self._fd

    def drain(self) -> None:
        self._listener.drain()

    def ready_in(self) -> float:
        return self._listener.ready_in()

    def close(self) -> None:
        self._listener.close()


class SqliteNotifier:
    """Producers nudge every consumer socket beside the file; zero cost when none listens."""

    def __init__(self, database: Path) -> None:
        self._database = database
        self._nudger = Nudger(database)

    def notify(self) -> None:
        self._nudger.nudge()

    def listen(self, consumer_id: str) -> _Listening | None:
        listener = SocketListener(self._database, consumer_id)
        if not listener.open():
            return None
        return _Listening(listener)

    def after_fork(self) -> None:
        self._nudger.after_fork()
