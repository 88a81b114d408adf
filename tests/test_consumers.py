"""``mq.consumers()``: the live consumers on a database, and why the others are not live.

A consumer registers when it starts and unregisters when it stops; in
between its housekeeping thread writes a heartbeat. Records of consumers
that did not stop cleanly are written here through the store, as their
process left them: one on another host that fell silent, and one whose
process on this host is gone.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import socket
import time
from collections.abc import Callable

from minique import Minique
from minique.consumer import Consumer
from minique.consumer.identity import describe_self
from minique.records import ConsumerStatus

UTC = dt.UTC


def test_a_running_consumer_is_listed_with_who_and_where_it_is(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    # Given a consumer of two queues, started in this process
    before = dt.datetime.now(UTC)
    consumer = start_consumer(mq, workers=3, queues=["emails", "default"], periodic=False)

    # When the consumers are listed
    (found,) = mq.consumers()

    # Then it is there, live, with its identity and aware UTC times
    assert isinstance(found, ConsumerStatus)
    assert (found.id, found.host, found.pid, found.queues, found.workers, found.state) == (
        consumer.id, socket.gethostname(), os.getpid(), ("emails", "default"), 3, "live")
    assert found.started_at.tzinfo is UTC and found.last_seen.tzinfo is UTC
    assert before - dt.timedelta(seconds=1) <= found.started_at <= found.last_seen
    assert 0 <= found.seen_ago() < 60


def test_a_consumer_of_every_queue_has_no_queue_list(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    start_consumer(mq, workers=1, periodic=False)
    assert [c.queues for c in mq.consumers()] == [None]


def test_a_stopped_consumer_is_not_listed(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    consumer = start_consumer(mq, workers=1, periodic=False)
    consumer.stop(timeout=5)
    assert mq.consumers() == []
    assert mq.consumers(live_only=False) == []


def test_a_consumer_whose_heartbeat_stopped_is_silent_not_live(mq: Minique) -> None:
    # Given a consumer of another host, last heard of 5 minutes ago (its leases
    # are renewed every 20 s with the default lease of 60 s)
    now = time.time()
    record = dataclasses.replace(
        describe_self("f" * 32, "*", 4, now - 3600), hostname="elsewhere", boot_id="other-boot",
        heartbeat_at=now - 300)
    mq.store.register_consumer(record)

    # When the consumers are listed, then it is not live, and says since when it is silent
    assert mq.consumers() == []
    (silent,) = mq.consumers(live_only=False)
    assert (silent.id, silent.host, silent.state) == ("f" * 32, "elsewhere", "silent")
    assert 299 <= silent.seen_ago() < 360


def test_a_consumer_whose_process_is_gone_from_this_host_is_dead_at_once(mq: Minique) -> None:
    # Given the record of a consumer of this host whose process is gone (its pid is now
    # this process's, which started at another time), heard of a moment ago
    record = dataclasses.replace(describe_self("d" * 32, "*", 4, time.time()), pid_start="1")
    mq.store.register_consumer(record)

    # When the consumers are listed, then it is dead, not live
    assert mq.consumers() == []
    assert [(c.id, c.state) for c in mq.consumers(live_only=False)] == [("d" * 32, "dead")]

