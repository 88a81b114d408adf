"""The per-task log line: an ordinary record, as ``Logger.log`` would make it, made cheaply."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from minique import Minique
from minique.consumer import Consumer
from minique.consumer.tasklog import log_task_line

# Attributes that differ between two records made at different moments
TIMING = {"created", "msecs", "relativeCreated"}


class Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def kept() -> Iterator[Keep]:
    log = logging.getLogger("minique")
    handler, level = Keep(), log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    yield handler
    log.removeHandler(handler)
    log.setLevel(level)


def both(level: int, message: str) -> None:
    """Log the same line both ways, from the same function, one line apart."""
    logging.getLogger("minique").log(level, message)
    log_task_line(level, message)


def test_a_task_line_is_the_record_logger_log_makes(kept: Keep) -> None:
    # When the same lines are logged by Logger.log and by log_task_line, twice
    # (the second copies the thread's first record), at two levels
    for level in (logging.INFO, logging.ERROR, logging.INFO):
        both(level, f"work[1] at level {level}")
        time.sleep(0.002)

    # Then each pair has the same attributes, caller and thread included,
    # but for the moment it was made, which moves on (and the caller's line)
    pairs = list(zip(kept.records[::2], kept.records[1::2], strict=True))
    assert len(pairs) == 3
    for standard, ours in pairs:
        assert type(ours) is logging.LogRecord
        mine = {k: v for k, v in vars(ours).items() if k not in TIMING | {"lineno"}}
        theirs = {k: v for k, v in vars(standard).items() if k not in TIMING | {"lineno"}}
        assert mine == theirs
        assert (ours.funcName, ours.lineno) == ("both", standard.lineno + 1)
        assert 0 <= ours.created - standard.created < 1
        assert ours.msecs == pytest.approx((ours.created - int(ours.created)) * 1000, abs=1)
        assert ours.relativeCreated - standard.relativeCreated == pytest.approx(
            (ours.created - standard.created) * 1000, abs=1)
    assert pairs[2][1].created > pairs[0][1].created
    assert pairs[1][1].getMessage() == f"work[1] at level {logging.ERROR}"
    assert pairs[1][1].levelname == "ERROR"


def test_lines_from_two_places_name_each_its_own(kept: Keep) -> None:
    def here() -> None:
        log_task_line(logging.INFO, "one")

    def there() -> None:
        log_task_line(logging.INFO, "two")

    for _ in range(2):
        here()
        there()
    assert [r.funcName for r in kept.records] == ["here", "there", "here", "there"]


def test_each_thread_gets_its_own_name_in_its_lines(kept: Keep) -> None:
    log_task_line(logging.INFO, "from the test's thread")
    thread = threading.Thread(target=log_task_line, args=(logging.INFO, "from another"),
                              name="another-thread")
    thread.start()
    thread.join()
    assert [r.threadName for r in kept.records] == [threading.current_thread().name,
                                                    "another-thread"]


def test_filters_and_levels_of_the_logger_still_apply(kept: Keep) -> None:
    log = logging.getLogger("minique")
    log.setLevel(logging.WARNING)
    log_task_line(logging.INFO, "below the level")
    log.setLevel(logging.INFO)

    def refuse_secrets(record: logging.LogRecord) -> bool:
        return "secret" not in record.getMessage()

    log.addFilter(refuse_secrets)
    try:
        log_task_line(logging.INFO, "a secret")
        log_task_line(logging.INFO, "public")
    finally:
        log.removeFilter(refuse_secrets)
    assert [r.getMessage() for r in kept.records] == ["public"]


def test_an_applications_record_factory_makes_every_line(kept: Keep) -> None:
    # Given an application that tags every record (a request id, say)
    standard = logging.getLogRecordFactory()
    counter = iter(range(1, 100))

    def tagged(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = standard(*args, **kwargs)
        record.tag = next(counter)  # type: ignore[attr-defined]
        return record

    logging.setLogRecordFactory(tagged)
    try:
        log_task_line(logging.INFO, "first")
        log_task_line(logging.INFO, "second")
    finally:
        logging.setLogRecordFactory(standard)

    # Then each line went through it, from where it was logged
    assert [r.tag for r in kept.records] == [1, 2]  # type: ignore[attr-defined]
    assert {r.pathname for r in kept.records} == {__file__}


def line(message: str) -> None:
    """One calling place for lines logged in several situations."""
    log_task_line(logging.INFO, message)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_logs_with_its_own_process_id(kept: Keep, tmp_path: Path) -> None:
    # Given a thread that logged from a place, then forked
    line("in the parent")
    out = tmp_path / "child.json"
    pid = os.fork()
    if pid == 0:
        try:
            # When the child logs from the same place
            line("in the child")
            out.write_text(json.dumps(kept.records[-1].process))
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    # Then its line has its own process id, not its parent's
    assert json.loads(out.read_text()) == pid
    assert kept.records[0].process == os.getpid()


def test_a_renamed_thread_logs_under_its_new_name(kept: Keep) -> None:
    def run() -> None:
        line("first")
        threading.current_thread().name = "renamed-by-a-task"
        line("second")

    thread = threading.Thread(target=run, name="original")
    thread.start()
    thread.join()
    assert [r.threadName for r in kept.records] == ["original", "renamed-by-a-task"]


def test_a_wrapped_make_record_sees_every_line(kept: Keep,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a library that wraps Logger.makeRecord to tag records (trace ids, say)
    stock = logging.Logger.makeRecord
    counter = iter(range(1, 100))

    def traced(self: logging.Logger, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = stock(self, *args, **kwargs)
        record.trace = next(counter)  # type: ignore[attr-defined]
        return record

    monkeypatch.setattr(logging.Logger, "makeRecord", traced)
    for n in range(3):
        line(f"line {n}")
    assert [r.trace for r in kept.records] == [1, 2, 3]  # type: ignore[attr-defined]


def test_lines_go_through_logger_log_where_a_copy_could_differ(
        kept: Keep, monkeypatch: pytest.MonkeyPatch) -> None:
    from minique.consumer import tasklog

    calls: list[str] = []
    real_log = tasklog.log.log

    def spy(level: int, message: str, *args: Any, **kwargs: Any) -> None:
        calls.append(message)
        real_log(level, message, *args, **kwargs)

    monkeypatch.setattr(tasklog.log, "log", spy)
    line("plain")  # the fast path

    async def in_a_loop() -> None:
        line("in a loop")  # the record names the asyncio task on Python 3.12+

    asyncio.run(in_a_loop())
    monkeypatch.setattr(logging, "_srcfile", None)
    line("no caller")  # the process turned off caller information
    assert calls == ["in a loop", "no caller"]
    assert [r.getMessage() for r in kept.records] == ["plain", "in a loop", "no caller"]
    assert kept.records[2].lineno == 0


def test_a_consumer_logs_one_line_per_task_naming_it(mq: Minique, kept: Keep,
                                                     start_consumer: Any) -> None:
    @mq.task
    def work(n: int) -> int:
        return n

    results = work.map(range(3))
    consumer: Consumer = start_consumer(mq, workers=1)
    for result in results:
        result.get(timeout=10)
    consumer.stop(timeout=5)
    lines = [r.getMessage() for r in kept.records if "] done in " in r.getMessage()]
    assert sorted(line.split(" done")[0] for line in lines) == sorted(
        f"{work.name}[{r.id}]" for r in results)
