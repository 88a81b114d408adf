"""Read-only records that ``Minique`` hands out about the state of its database."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

#: ``"live"``: its heartbeat is recent. ``"silent"``: no heartbeat for more
#: than two lease renewals (stuck, or dead on another host). ``"dead"``: its
#: process on this host is gone.
ConsumerState = Literal["live", "silent", "dead"]


@dataclass(frozen=True, slots=True)
class ConsumerStatus:
    """A consumer registered on the database, as ``mq.consumers()`` sees it.

    ``host`` and ``pid`` say where it runs; ``queues`` is the queues it
    serves, ``None`` for all of them; ``workers`` how many tasks it runs at
    once. ``started_at`` and ``last_seen`` (its latest heartbeat) are aware
    UTC datetimes. ``state`` is ``"live"`` for every consumer that
    ``mq.consumers()`` returns; ``mq.consumers(live_only=False)`` also returns
    the ``"silent"`` and ``"dead"`` ones (see ``ConsumerState``). ``running``
    holds the ids of the calls it runs now (claimed and not yet finished),
    oldest first.
    """

    id: str
    host: str
    pid: int
    queues: tuple[str, ...] | None
    workers: int
    started_at: dt.datetime
    last_seen: dt.datetime
    state: ConsumerState = "live"
    running: tuple[str, ...] = ()

    def seen_ago(self, now: dt.datetime | None = None) -> float:
        """Seconds since its last heartbeat (the age of ``last_seen``), at ``now`` or now."""
        now = now or dt.datetime.now(dt.UTC)
        return max((now - self.last_seen).total_seconds(), 0.0)
