"""Which ready task runs when: ``schedule`` (delay, eta, priority), priority then FIFO within a
queue, and named queues served only by the consumers that ask for them."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator

import pytest
from conftest import wait_for

from minique import Minique
from minique.consumer import Consumer

# Float noise of an eta stored as epoch seconds (~1e9) through SQLite REAL.
EPS = 1e-5


@pytest.fixture
def local_zone_not_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make local time differ from UTC (by 5:30, no DST), so that naive means something."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# -- schedule -----------------------------------------------------------------------------


def test_schedule_with_delay_is_scheduled_until_then(mq: Minique) -> None:
    @mq.task
    def work() -> None: ...

    before = time.time()
    result = work.schedule(delay=60)
    after = time.time()

    assert result.status == "scheduled"
    assert before + 60 - EPS <= result.record.eta <= after + 60 + EPS


def test_schedule_with_timedelta_delay_is_scheduled_until_then(mq: Minique) -> None:
    @mq.task
    def work() -> None: ...

    before = time.time()
    result = work.schedule(delay=dt.timedelta(minutes=5))
    after = time.time()

    assert result.status == "scheduled"
    assert before + 300 - EPS <= result.record.eta <= after + 300 + EPS


def test_schedule_passes_args_and_kwargs(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    @mq.task
    def greet(greeting: str, name: str = "world") -> str:
        return f"{greeting}, {name}"

    result = greet.schedule(("hello",), {"name": "ada"}, delay=0.01)
    start_consumer(mq, workers=1)

    assert result.get(timeout=10) == "hello, ada"


def test_delayed_call_runs_after_its_time_not_before(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    ran: list[str] = []

    @mq.task
    def work(label: str) -> None:
        ran.append(label)

    start_consumer(mq, workers=1)
    later = work.schedule(("later",), delay=0.2)
    now = work("now")
    later.get(timeout=10)
    now.get(timeout=10)

    assert ran == ["now", "later"]
    record = later.record
    assert record.eta == pytest.approx(record.created_at + 0.2, abs=EPS)
    assert record.started_at is not None
    assert record.started_at >= record.eta - EPS


def test_schedule_with_naive_eta_reads_it_as_local_time(
        mq: Minique, local_zone_not_utc: None) -> None:
    @mq.task
    def work() -> None: ...

    instant = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(hours=1)
    naive_local = instant.astimezone().replace(tzinfo=None)
    assert naive_local != instant.replace(tzinfo=None)  # local time is not UTC here

    result = work.schedule(eta=naive_local)

    assert result.status == "scheduled"
    assert result.record.eta == pytest.approx(instant.timestamp(), abs=EPS)


def test_schedule_with_aware_eta_is_that_instant(mq: Minique) -> None:
    @mq.task
    def work() -> None: ...

    eta = dt.datetime.now(dt.timezone(dt.timedelta(hours=-7))) + dt.timedelta(hours=1)

    result = work.schedule(eta=eta)

    assert result.status == "scheduled"
    assert result.record.eta == pytest.approx(eta.timestamp(), abs=EPS)


def test_call_with_eta_runs_after_its_time_not_before(
        mq: Minique, start_consumer: Callable[..., Consumer], local_zone_not_utc: None) -> None:
    ran: list[str] = []

    @mq.task
    def work(label: str) -> None:
        ran.append(label)

    start_consumer(mq, workers=1)
    eta = dt.datetime.now() + dt.timedelta(seconds=0.2)  # naive: local time
    later = work.schedule(("later",), eta=eta)
    now = work("now")
    later.get(timeout=10)
    now.get(timeout=10)

    assert ran == ["now", "later"]
    record = later.record
    assert record.eta == pytest.approx(eta.timestamp(), abs=EPS)
    assert record.started_at is not None
    assert record.started_at >= record.eta - EPS


def test_schedule_with_eta_in_the_past_is_queued_at_once(mq: Minique) -> None:
    @mq.task
    def work() -> None: ...

    result = work.schedule(eta=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))

    assert result.status == "queued"


def test_schedule_with_both_delay_and_eta_raises_value_error(mq: Minique) -> None:
    @mq.task
    def work() -> None: ...

    with pytest.raises(ValueError):
        work.schedule(delay=1, eta=dt.datetime.now(dt.UTC))

    assert set(mq.counts().values()) == {0}


def test_schedule_priority_overrides_the_task_priority(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    ran: list[str] = []

    @mq.task(priority=5)
    def work(label: str) -> None:
        ran.append(label)

    results = [work("first"), work("second"), work.schedule(("urgent",), priority=9),
               work.schedule(("deferred",), priority=0), work("third")]
    start_consumer(mq, workers=1)
    for result in results:
        result.get(timeout=10)

    assert ran == ["urgent", "first", "second", "third", "deferred"]


# -- priority and FIFO ------------------------------------------------------------------------


def test_ready_tasks_run_by_priority_then_in_order_of_enqueue(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    ran: list[str] = []

    @mq.task
    def low(label: str) -> None:
        ran.append(label)

    @mq.task(priority=1)
    def mid(label: str) -> None:
        ran.append(label)

    @mq.task(priority=10)
    def high(label: str) -> None:
        ran.append(label)

    @mq.task(priority=-3)
    def lowest(label: str) -> None:
        ran.append(label)

    results = [
        low("low 1"), lowest("lowest 1"), high("high 1"), mid("mid 1"), low("low 2"),
        high("high 2"), mid("mid 2"), lowest("lowest 2"), low("low 3"), high("high 3"),
    ]
    start_consumer(mq, workers=1)
    for result in results:
        result.get(timeout=10)

    assert ran == ["high 1", "high 2", "high 3", "mid 1", "mid 2", "low 1", "low 2", "low 3",
                   "lowest 1", "lowest 2"]


def test_many_tasks_of_one_priority_run_first_in_first_out(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    ran: list[int] = []

    @mq.task
    def work(n: int) -> None:
        ran.append(n)

    results = work.map(range(100))
    start_consumer(mq, workers=1)
    for result in results:
        result.get(timeout=10)

    assert ran == list(range(100))


def test_due_scheduled_task_runs_before_later_ready_ones(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    ran: list[str] = []

    @mq.task
    def work(label: str) -> None:
        ran.append(label)

    due = work.schedule(("due",), delay=0.05)
    wait_for(lambda: time.time() > due.record.eta, what="the scheduled time to pass")
    results = [work("ready 1"), work("ready 2"), due]
    start_consumer(mq, workers=1)
    for result in results:
        result.get(timeout=10)

    assert ran == ["due", "ready 1", "ready 2"]


# -- named queues -----------------------------------------------------------------------------


def test_task_queue_option_puts_its_calls_in_that_queue(mq: Minique) -> None:
    @mq.task(queue="emails")
    def send() -> None: ...

    @mq.task
    def work() -> None: ...

    send()
    send()
    work()

    assert mq.counts(queue="emails")["queued"] == 2
    assert mq.counts(queue="default")["queued"] == 1
    assert mq.counts()["queued"] == 3


def test_consumer_of_some_queues_leaves_the_others_queued(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    ran: list[str] = []

    @mq.task
    def work() -> None:
        ran.append("default")

    @mq.task(queue="emails")
    def send() -> None:
        ran.append("emails")

    @mq.task(queue="reports")
    def report() -> None:
        ran.append("reports")

    skipped = work()  # enqueued first: FIFO would have run it first if this queue were served
    sent, reported = send(), report()
    start_consumer(mq, workers=1, queues=["emails", "reports"])
    sent.get(timeout=10)
    reported.get(timeout=10)

    assert sorted(ran) == ["emails", "reports"]
    assert skipped.status == "queued"
    assert mq.counts(queue="default")["queued"] == 1


def test_consumer_of_all_queues_serves_every_queue(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    @mq.task
    def work() -> str:
        return "default"

    @mq.task(queue="emails")
    def send() -> str:
        return "emails"

    results = [work(), send()]
    start_consumer(mq, workers=1)

    assert [r.get(timeout=10) for r in results] == ["default", "emails"]


def test_high_priority_task_of_an_unserved_queue_does_not_run(
        mq: Minique, start_consumer: Callable[..., Consumer]) -> None:
    ran: list[str] = []

    @mq.task(queue="emails", priority=100)
    def send() -> None:
        ran.append("emails")

    @mq.task(queue="reports")
    def report(n: int) -> None:
        ran.append(f"report {n}")

    send()
    results = [report(1), report(2)]
    start_consumer(mq, workers=1, queues=["reports"])
    for result in results:
        result.get(timeout=10)

    assert ran == ["report 1", "report 2"]
    assert mq.counts(queue="emails")["queued"] == 1
