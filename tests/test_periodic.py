"""Periodic tasks: the scheduler's bookkeeping of slots, then the real thing with subprocesses.

The first part drives ``PeriodicScheduler`` by hand: a scheduler is built for a
consumer that is never started, its slots are synced at a chosen instant
(freezegun), and ``fire_due(now)`` is called with explicit ``now`` values. That
shows, without waiting, one job per slot, several schedulers on one database,
restarts, missed slots, tasks added, removed or changed in the code, and daily
jobs across daylight-saving changes.

The second part runs ``python -m minique consume`` subprocesses on a module
with an every-second crontab and checks each second becomes exactly one run.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import signal
import sqlite3
import statistics
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import Proc, wait_for
from freezegun import freeze_time

from minique import Minique, crontab
from minique.cli import status
from minique.consumer.periodic import PeriodicScheduler

UTC = dt.UTC
# A Monday noon, UTC: "*/5 * * * *" slots fall at T0, T0 + 300, T0 + 600...
T0 = dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC).timestamp()
EVERY_5_MIN = "*/5 * * * *"


def scheduler_at(mq: Minique, when: float) -> PeriodicScheduler:
    """The scheduler of ``mq``'s periodic tasks as if its consumer had started at ``when``.

    The consumer is never started: the test calls ``fire_due(now)`` itself.
    """
    with freeze_time(dt.datetime.fromtimestamp(when, UTC)):
        scheduler = PeriodicScheduler(mq.consumer(workers=1))
        scheduler.started_at = when  # what start() records before its first sync
        scheduler.sync()
    return scheduler


def fired(db_path: Path, name: str | None = None) -> list[tuple[str, float]]:
    """``(task name, enqueued at)`` of every job in the database, oldest first."""
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT name, created_at FROM jobs ORDER BY created_at").fetchall()
    return [(n, c) for n, c in rows if name is None or n == name]


def queue_with(db_path: Path, tz: str = "UTC", **schedules: str) -> Minique:
    """A queue on ``db_path`` with one periodic task per keyword: ``name=crontab``."""
    mq = Minique(db_path, tz=tz)
    for name, expression in schedules.items():
        mq.periodic_task(crontab(expression), name=name)(lambda: None)
    return mq


# -- one job per slot ----------------------------------------------------------------------


def test_due_slot_becomes_one_job(db_path: Path) -> None:
    # Given a scheduler of a task every 5 minutes, started just before T0
    mq = queue_with(db_path, cleanup=EVERY_5_MIN)
    scheduler = scheduler_at(mq, T0 - 10)
    assert scheduler.slots == {"cleanup": T0}

    # When its slot comes due and the scheduler looks again and again
    scheduler.fire_due(T0 - 0.001)
    scheduler.fire_due(T0)
    scheduler.fire_due(T0 + 0.2)
    scheduler.fire_due(T0 + 299)

    # Then exactly one job was enqueued, at its slot, and the next slot is 5 minutes on
    assert fired(db_path) == [("cleanup", T0)]
    assert scheduler.slots == {"cleanup": T0 + 300}
    assert mq.counts()["queued"] == 1


def test_each_slot_in_turn_becomes_one_job(db_path: Path) -> None:
    mq = queue_with(db_path, cleanup=EVERY_5_MIN)
    scheduler = scheduler_at(mq, T0 - 10)

    for n in range(4):
        scheduler.fire_due(T0 + 300 * n + 0.01)
        scheduler.fire_due(T0 + 300 * n + 0.02)

    assert [at for _, at in fired(db_path)] == [T0 + 300 * n + 0.01 for n in range(4)]


def test_late_scheduler_fires_a_slot_once_and_not_its_backlog(db_path: Path) -> None:
    # Given a scheduler that stalled for 17 minutes past its slot (three more slots passed)
    mq = queue_with(db_path, cleanup=EVERY_5_MIN)
    scheduler = scheduler_at(mq, T0 - 10)

    # When it looks again
    scheduler.fire_due(T0 + 1020)

    # Then it enqueues one job, now, and goes on at the first slot after now
    assert fired(db_path) == [("cleanup", T0 + 1020)]
    assert scheduler.slots == {"cleanup": T0 + 1200}


def test_fired_job_carries_the_task_options(db_path: Path) -> None:
    # Given a periodic task with a queue and a priority
    mq = Minique(db_path, tz="UTC")

    @mq.periodic_task(crontab(EVERY_5_MIN), queue="reports", priority=7, name="report")
    def report() -> None: ...

    # When its slot fires
    scheduler_at(mq, T0 - 10).fire_due(T0)

    # Then the job waits in that queue with that priority
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT name, queue, priority, state FROM jobs").fetchall()
    assert rows == [("report", "reports", 7, "queued")]


def test_periodic_task_needs_a_crontab(mq: Minique) -> None:
    with pytest.raises(ValueError, match="crontab"):
        mq.periodic_task("*/5 * * * *")  # type: ignore[arg-type]


# -- several consumers, restarts, missed slots ---------------------------------------------


def test_two_schedulers_on_one_database_fire_each_slot_once(db_path: Path) -> None:
    # Given two processes' worth of queue objects on one file, each with a scheduler
    first = scheduler_at(queue_with(db_path, cleanup=EVERY_5_MIN), T0 - 10)
    second = scheduler_at(queue_with(db_path, cleanup=EVERY_5_MIN), T0 - 5)

    # When both see each slot come due, in either order
    for n in range(6):
        slot = T0 + 300 * n
        pair = (first, second) if n % 2 == 0 else (second, first)
        pair[0].fire_due(slot + 0.001)
        pair[1].fire_due(slot + 0.002)

    # Then each slot became exactly one job, and both agree on the next slot
    assert [round(at - 0.001, 3) for _, at in fired(db_path)] == [T0 + 300 * n for n in range(6)]
    assert first.slots == second.slots == {"cleanup": T0 + 1800}


def test_scheduler_that_lost_the_race_learns_the_next_slot(db_path: Path) -> None:
    first = scheduler_at(queue_with(db_path, cleanup=EVERY_5_MIN), T0 - 10)
    second = scheduler_at(queue_with(db_path, cleanup=EVERY_5_MIN), T0 - 5)

    first.fire_due(T0)
    second.fire_due(T0 + 0.5)

    assert len(fired(db_path)) == 1
    assert second.slots == {"cleanup": T0 + 300}


def test_only_the_scheduler_that_enqueued_a_slot_logs_it(
        db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Given two consumers' schedulers on one database
    caplog.set_level(logging.INFO, logger="minique")
    first = scheduler_at(queue_with(db_path, cleanup=EVERY_5_MIN), T0 - 10)
    second = scheduler_at(queue_with(db_path, cleanup=EVERY_5_MIN), T0 - 5)

    # When both see the slot come due, one after the other
    first.fire_due(T0 + 0.001)
    second.fire_due(T0 + 0.002)

    # Then one line says it was enqueued, with the id of the call that was stored
    with sqlite3.connect(db_path) as conn:
        (stored_id,) = [str(row[0]) for row in conn.execute("SELECT id FROM jobs")]
    lines = [r.getMessage() for r in caplog.records if "enqueued by its crontab" in r.getMessage()]
    assert lines == [f"cleanup[{stored_id}] enqueued by its crontab {EVERY_5_MIN} "
                     "(1.0 ms after its time)"]


def test_fire_periodic_gives_the_call_to_the_scheduler_that_stored_it(db_path: Path) -> None:
    # Given two processes' queue objects with the same periodic task, its slot stored at T0
    first, second = (queue_with(db_path, cleanup=EVERY_5_MIN) for _ in range(2))
    scheduler_at(first, T0 - 10)
    first_task, second_task = first.tasks["cleanup"], second.tasks["cleanup"]

    # When both fire the same slot
    won = first.fire_periodic(first_task, T0, T0 + 300, T0 + 0.001)
    lost = second.fire_periodic(second_task, T0, T0 + 300, T0 + 0.002)

    # Then both learn the next slot, and only the first one has a call, the one stored
    assert won[0] == lost[0] == T0 + 300
    assert won[1] is not None and lost[1] is None
    assert won[1].status == "queued"
    assert first.counts()["queued"] == 1


def test_restarted_scheduler_never_fires_a_slot_again(db_path: Path) -> None:
    # Given a consumer that fired the slot at T0, then stopped
    before = scheduler_at(queue_with(db_path, cleanup=EVERY_5_MIN), T0 - 10)
    before.fire_due(T0)

    # When a new one starts half a second later (same code, same database)
    after = scheduler_at(queue_with(db_path, cleanup=EVERY_5_MIN), T0 + 0.5)
    after.fire_due(T0 + 0.5)
    after.fire_due(T0 + 299.9)

    # Then T0 is not fired again, and the next slot fires as usual
    assert after.slots == {"cleanup": T0 + 300}
    after.fire_due(T0 + 300)
    assert [at for _, at in fired(db_path)] == [T0, T0 + 300]


def test_slots_missed_while_no_consumer_ran_are_skipped(db_path: Path) -> None:
    # Given a consumer that stored the slot T0 and then went away for an hour
    scheduler_at(queue_with(db_path, cleanup=EVERY_5_MIN), T0 - 10)

    # When a consumer starts an hour later
    later = scheduler_at(queue_with(db_path, cleanup=EVERY_5_MIN), T0 + 3610)
    later.fire_due(T0 + 3610)

    # Then none of the twelve missed slots is replayed...
    assert fired(db_path) == []
    assert later.slots == {"cleanup": T0 + 3900}

    # ...and the next slot fires on time
    later.fire_due(T0 + 3900)
    assert fired(db_path) == [("cleanup", T0 + 3900)]


def test_consumer_starting_just_after_a_slot_does_not_cancel_it(db_path: Path) -> None:
    # Given a consumer running since before T0, a few milliseconds late to fire T0
    running = scheduler_at(queue_with(db_path, cleanup=EVERY_5_MIN), T0 - 10)

    # When a second consumer starts 5 ms after T0 and looks first
    starting = scheduler_at(queue_with(db_path, cleanup=EVERY_5_MIN), T0 + 0.005)
    starting.fire_due(T0 + 0.006)
    running.fire_due(T0 + 0.007)

    # Then T0 still becomes one job: a consumer was running when it came due
    assert len(fired(db_path)) == 1


# -- the code changes ------------------------------------------------------------------------


def test_periodic_task_removed_from_the_code_stops_firing(db_path: Path) -> None:
    # Given two periodic tasks that both fired at T0
    old = scheduler_at(queue_with(db_path, cleanup=EVERY_5_MIN, digest=EVERY_5_MIN), T0 - 10)
    old.fire_due(T0)

    # When the code is deployed without "digest" and a consumer runs it for an hour
    new = scheduler_at(queue_with(db_path, cleanup=EVERY_5_MIN), T0 + 1)
    for n in range(1, 13):
        new.fire_due(T0 + 300 * n)

    # Then "digest" never fired again, while "cleanup" went on
    counts = Counter(name for name, _ in fired(db_path))
    assert counts == {"cleanup": 13, "digest": 1}


def test_new_periodic_task_starts_at_its_next_slot(db_path: Path) -> None:
    # Given an hourly task added to the code; the new consumer starts at 12:07
    old = scheduler_at(queue_with(db_path, cleanup=EVERY_5_MIN), T0 - 10)
    old.fire_due(T0)
    new = scheduler_at(queue_with(db_path, cleanup=EVERY_5_MIN, hourly="0 * * * *"), T0 + 420)

    # Then its first slot is 13:00, and nothing of it fires before
    assert new.slots["hourly"] == T0 + 3600
    for n in range(2, 12):
        new.fire_due(T0 + 300 * n)
    assert Counter(name for name, _ in fired(db_path))["hourly"] == 0
    new.fire_due(T0 + 3600)
    assert fired(db_path, "hourly") == [("hourly", T0 + 3600)]


def test_changing_a_crontab_resets_its_slot(db_path: Path) -> None:
    # Given "report" stored as a daily task at midnight
    scheduler_at(queue_with(db_path, report="0 0 * * *"), T0 - 10)

    # When the code changes it to every 5 minutes and a consumer starts at 12:01
    new = scheduler_at(queue_with(db_path, report=EVERY_5_MIN), T0 + 60)

    # Then its slot follows the new crontab from now on
    assert new.slots == {"report": T0 + 300}
    new.fire_due(T0 + 300)
    assert fired(db_path) == [("report", T0 + 300)]


def test_changing_a_crontab_back_and_forth_keeps_each_slot_once(db_path: Path) -> None:
    first = scheduler_at(queue_with(db_path, report=EVERY_5_MIN), T0 - 10)
    first.fire_due(T0)
    second = scheduler_at(queue_with(db_path, report="*/10 * * * *"), T0 + 1)
    second.fire_due(T0 + 600)

    assert [at for _, at in fired(db_path)] == [T0, T0 + 600]
    assert second.slots == {"report": T0 + 1200}


# -- daylight saving time -------------------------------------------------------------------

def run_through(mq: Minique, start: dt.datetime, end: dt.datetime, frozen: bool,
                max_slots: int = 200) -> None:
    """Run a scheduler of ``mq`` from ``start`` to ``end``, firing each slot at its time.

    ``frozen``: a freezegun clock jumps from slot to slot and ``fire_due`` reads it;
    otherwise ``fire_due`` is given each slot as ``now``. A second look half a second
    later must fire nothing more.
    """
    if not frozen:
        scheduler = scheduler_at(mq, start.timestamp())
        for _ in range(max_slots):
            slot = min(scheduler.slots.values())
            if slot >= end.timestamp():
                return
            scheduler.fire_due(slot)
            scheduler.fire_due(slot + 0.5)
    else:
        with freeze_time(start.astimezone(UTC)) as clock:
            scheduler = scheduler_at(mq, time.time())
            for _ in range(max_slots):
                slot = min(scheduler.slots.values())
                if slot >= end.timestamp():
                    return
                clock.move_to(dt.datetime.fromtimestamp(slot, UTC))
                scheduler.fire_due(time.time())
                scheduler.fire_due(time.time() + 0.5)
    raise AssertionError(f"more than {max_slots} slots fired: the scheduler is not advancing")


DST_CASES = [
    pytest.param("Europe/Berlin", dt.datetime(2026, 3, 27), id="berlin-spring"),
    pytest.param("Europe/Berlin", dt.datetime(2026, 10, 23), id="berlin-autumn"),
    pytest.param("America/New_York", dt.datetime(2026, 3, 6), id="new-york-spring"),
    pytest.param("America/New_York", dt.datetime(2026, 10, 30), id="new-york-autumn"),
]
# freezegun's datetime loses `fold`, the only mark of which 02:30 is meant when
# clocks fall back; these runs prove the scheduler does not depend on it.
FROZEN_DST_CASES = [
    pytest.param(*case.values, id=case.id, marks=[pytest.mark.timeout(10, method="signal")])
    for case in DST_CASES
]


def assert_once_a_day(db_path: Path, tz: str, first_day: dt.datetime) -> None:
    zone = ZoneInfo(tz)
    days = [(first_day + dt.timedelta(days=n)).date() for n in range(1, 5)]
    for name in ("at_0100", "at_0230", "at_0300"):
        per_day = Counter(dt.datetime.fromtimestamp(at, zone).date()
                          for _, at in fired(db_path, name))
        assert per_day == dict.fromkeys(days, 1), (name, fired(db_path, name))


def daily_queue(db_path: Path, tz: str) -> Minique:
    return queue_with(db_path, tz=tz, at_0100="0 1 * * *", at_0230="30 2 * * *",
                      at_0300="0 3 * * *")


@pytest.mark.parametrize(("tz", "first_day"), DST_CASES)
def test_daily_periodic_task_runs_once_a_day_across_dst(db_path: Path, tz: str,
                                                         first_day: dt.datetime) -> None:
    # Given daily tasks at 01:00, 02:30 and 03:00 in the queue's zone
    mq = daily_queue(db_path, tz)
    start = first_day.replace(hour=12, tzinfo=ZoneInfo(tz))

    # When a scheduler fires every slot from noon two days before a DST change
    # until noon two days after
    run_through(mq, start, start + dt.timedelta(days=4), frozen=False)

    # Then each task ran once per calendar day in that zone: none skipped, none doubled
    assert_once_a_day(db_path, tz, first_day)


@pytest.mark.parametrize(("tz", "first_day"), FROZEN_DST_CASES)
def test_daily_periodic_task_runs_once_a_day_across_dst_under_freezegun(
        db_path: Path, tz: str, first_day: dt.datetime) -> None:
    # Given the same daily tasks, and a frozen clock that jumps from slot to slot
    mq = daily_queue(db_path, tz)
    start = first_day.replace(hour=12, tzinfo=ZoneInfo(tz))

    # When the scheduler reads the frozen clock
    run_through(mq, start, start + dt.timedelta(days=4), frozen=True)

    # Then, again, once per calendar day
    assert_once_a_day(db_path, tz, first_day)


@pytest.mark.parametrize("frozen", [
    pytest.param(False, id="explicit-now"),
    pytest.param(True, id="freezegun", marks=[pytest.mark.timeout(10, method="signal")]),
])
def test_hourly_periodic_task_runs_in_both_real_hours_when_clocks_fall_back(
        db_path: Path, frozen: bool) -> None:
    # Given an hourly task in Berlin on the night of 2026-10-25 (02:00-03:00 happens twice)
    zone = ZoneInfo("Europe/Berlin")
    mq = queue_with(db_path, tz="Europe/Berlin", hourly="30 * * * *")
    start = dt.datetime(2026, 10, 25, 0, 0, tzinfo=zone)

    # When a scheduler runs through that day
    run_through(mq, start, start + dt.timedelta(days=1), frozen=frozen)

    # Then 02:30 ran twice (summer and winter time), 25 runs in all
    runs = [dt.datetime.fromtimestamp(at, zone) for _, at in fired(db_path)]
    assert len(runs) == 25
    assert [r.isoformat() for r in runs if r.hour == 2] == [
        "2026-10-25T02:30:00+02:00", "2026-10-25T02:30:00+01:00"]


# -- minique status --------------------------------------------------------------------------


def test_status_lists_periodic_tasks_with_crontab_and_next_fire(
        db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Given a Berlin queue whose scheduler stored the next slot of "cleanup"
    mq = queue_with(db_path, tz="Europe/Berlin", cleanup=EVERY_5_MIN, nightly="0 3 * * *")
    scheduler_at(mq, T0 - 10)

    # When the status is printed, as JSON and as text
    assert status(mq, as_json=True) == 0
    report = json.loads(capsys.readouterr().out)
    assert status(mq, as_json=False) == 0
    text = capsys.readouterr().out

    # Then each periodic task is listed with its crontab and next fire time in Berlin time
    assert report["periodic"] == [
        {"name": "cleanup", "crontab": EVERY_5_MIN, "next_fire": "2026-06-01T14:00:00+02:00"},
        {"name": "nightly", "crontab": "0 3 * * *", "next_fire": "2026-06-02T03:00:00+02:00"},
    ]
    assert "periodic tasks: 2" in text
    assert f"cleanup  {EVERY_5_MIN}  next: 2026-06-01T14:00:00+02:00" in text


def test_status_before_any_consumer_ran_says_when_a_consumer_starts(
        db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mq = queue_with(db_path, cleanup=EVERY_5_MIN)

    assert status(mq, as_json=False) == 0

    assert f"cleanup  {EVERY_5_MIN}  next: when a consumer starts" in capsys.readouterr().out


# -- the real thing: consumer processes and a wall clock -------------------------------------

APP = """
    import os
    import threading
    import time
    from contextlib import contextmanager

    from minique import Minique, crontab

    mq = Minique("queue.db")
    _current = threading.local()


    @mq.around_task
    @contextmanager
    def remember_attempt(attempt):
        _current.id = attempt.id
        yield


    @mq.periodic_task(crontab("* * * * * *"), name="tick")
    def tick():
        line = f"{_current.id} {time.time()!r} {os.getpid()}\\n"
        fd = os.open("ticks.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


    @mq.task(name="ping")
    def ping():
        return os.getpid()
"""


def ticks(root: Path) -> list[tuple[str, float, int]]:
    """``(job id, started at, pid)`` of every run of ``tick``."""
    path = root / "ticks.txt"
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        job_id, at, pid = line.split()
        found.append((job_id, float(at), int(pid)))
    return found


def start_consumer_process(spawn: Callable[..., Proc], *options: str) -> Proc:
    proc = spawn("-m", "minique", "consume", "ticks", "-w", "2", *options)
    wait_for(lambda: "started on" in proc.output(), timeout=15, what="the consumer's banner")
    return proc


def test_two_consumers_run_every_second_slot_exactly_once(
        app_dir: Callable[[str, str], Path], spawn: Callable[..., Proc], db_path: Path) -> None:
    # Given two consumer processes of a module with an every-second crontab
    root = app_dir("ticks", APP)
    consumers = [start_consumer_process(spawn), start_consumer_process(spawn)]
    both_up = time.time()
    first_slot = math.ceil(both_up)

    # (meanwhile, `minique status` shows the periodic task and its next slot)
    shown = spawn("-m", "minique", "status", "ticks", "--json")
    assert shown.wait(15) == 0, shown.output()
    periodic = json.loads(shown.output())["periodic"]
    assert [(p["name"], p["crontab"]) for p in periodic] == [("tick", "* * * * * *")]
    next_fire = dt.datetime.fromisoformat(periodic[0]["next_fire"])
    assert next_fire.tzinfo is not None
    assert abs(next_fire.timestamp() - time.time()) < 5

    # When they run side by side for five whole slots
    def slots_run() -> set[int]:
        return {math.floor(at) for _, at, _ in ticks(root)}

    wait_for(lambda: set(range(first_slot, first_slot + 5)) <= slots_run(), timeout=15,
             what="five slots to run")
    stopped_at = time.time()
    for proc in consumers:
        proc.signal(signal.SIGTERM)
    for proc in consumers:
        assert proc.wait(15) == 0, proc.output()

    # Then each slot became one job, and each job ran once
    with sqlite3.connect(db_path) as conn:
        jobs = {str(job_id): created for job_id, created in conn.execute(
            "SELECT id, created_at FROM jobs WHERE name = 'tick'")}
    runs = ticks(root)
    slot_of_job = {job_id: math.floor(at) for job_id, at in jobs.items()}
    assert Counter(slot_of_job.values()).most_common(1)[0][1] == 1, sorted(jobs.values())
    assert Counter(job_id for job_id, _, _ in runs).most_common(1)[0][1] == 1, runs
    assert {job_id for job_id, _, _ in runs} <= set(jobs)

    # ...every slot while both ran is there, with no gap
    run_slots = sorted(slot_of_job[job_id] for job_id, _, _ in runs)
    window = set(range(first_slot, math.floor(stopped_at)))
    assert window <= set(run_slots), (sorted(window), run_slots)
    since_both = [slot for slot in run_slots if slot >= first_slot]
    assert since_both == list(range(first_slot, since_both[-1] + 1)), run_slots

    # ...and started soon after its time (printed for the record, loosely bounded)
    fire_lateness = [jobs[job_id] - slot_of_job[job_id] for job_id, _, _ in runs]
    start_lateness = [at - slot_of_job[job_id] for job_id, at, _ in runs]
    print(f"\nslots run: {len(runs)} by pids {dict(Counter(pid for _, _, pid in runs))}")
    print(f"enqueue after slot: median {statistics.median(fire_lateness) * 1000:.1f} ms, "
          f"max {max(fire_lateness) * 1000:.1f} ms")
    print(f"task start after slot: median {statistics.median(start_lateness) * 1000:.1f} ms, "
          f"max {max(start_lateness) * 1000:.1f} ms")
    assert max(start_lateness) < 1.0


def test_consumer_with_no_periodic_fires_nothing(
        app_dir: Callable[[str, str], Path], spawn: Callable[..., Proc], db_path: Path) -> None:
    # Given a consumer started with --no-periodic on the every-second module
    root = app_dir("ticks", APP)
    proc = start_consumer_process(spawn, "--no-periodic")
    wait_for(lambda: "periodic: off" in proc.output(), timeout=15,
             what="a banner saying periodic tasks are off")

    # When it serves ordinary tasks while two slots pass
    mq = Minique(db_path)

    @mq.task(name="ping")
    def ping() -> int:
        raise AssertionError("runs in the consumer")

    began = time.time()
    assert ping().get(timeout=15) == proc.pid
    wait_for(lambda: time.time() >= math.ceil(began) + 1.2, timeout=5, what="two slots to pass")

    # Then no slot was stored, nothing was enqueued on the crontab, nothing ran
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM periodic").fetchone() == (0,)
        assert conn.execute("SELECT COUNT(*) FROM jobs WHERE name = 'tick'").fetchone() == (0,)
    assert ticks(root) == []
